# read_pages(start, count, stride, rounds): load from `count` pages `stride` apart,
# `rounds` times over (each round's loads may re-walk after a TLB flush); exit(0).
    mov ebp, esi            # rounds
round:
    push ebx
    push ecx
loop:
    mov eax, dword ptr [ebx]
    add ebx, edx
    dec ecx
    jnz loop
    pop ecx
    pop ebx
    dec ebp
    jnz round
    mov eax, SYS_exit
    xor ebx, ebx
    int 0x80
