# khugepaged(addr, passes): run `passes` khugepaged passes over the PMD range at addr.
    mov esi, ebx            # addr
    mov edi, ecx            # passes
again:
    mov eax, SYS_khugepaged_scan
    mov ebx, esi
    int 0x80
    dec edi
    jnz again
    mov eax, SYS_exit
    xor ebx, ebx
    int 0x80
