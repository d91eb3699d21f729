# gup(addr, nr, out, rounds): GUP-fast nr pages from addr into the buffer at out,
# `rounds` times; exit(0).
    mov ebp, esi            # rounds (esi = 4th argument)
again:
    push ebx
    push ecx
    push edx
    mov eax, SYS_gup_fast
    xor esi, esi            # read access
    int 0x80
    pop edx
    pop ecx
    pop ebx
    dec ebp
    jnz again
    mov eax, SYS_exit
    xor ebx, ebx
    int 0x80
