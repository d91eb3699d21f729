# touch(start, count, stride): store to `count` pages `stride` apart, then
# read every one back; exit(0) if all held their own address, else exit(1).
    mov esi, ebx   # remember start
    mov edi, ecx   # remember count
store_loop:
    mov dword ptr [ebx], ebx
    add ebx, edx
    dec ecx
    jnz store_loop
    mov ebx, esi
    mov ecx, edi
check_loop:
    cmp dword ptr [ebx], ebx
    jne bad
    add ebx, edx
    dec ecx
    jnz check_loop
    mov eax, SYS_exit
    xor ebx, ebx
    int 0x80
bad:
    mov eax, SYS_exit
    mov ebx, 1
    int 0x80
