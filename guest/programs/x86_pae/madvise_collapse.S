# madvise_collapse(addr, len): MADV_COLLAPSE the range; exit(0) on success, else exit(1).
    mov eax, SYS_madvise
    mov edx, 25
    int 0x80
    test eax, eax
    jnz failed
    mov eax, SYS_exit
    xor ebx, ebx
    int 0x80
failed:
    mov eax, SYS_exit
    mov ebx, 1
    int 0x80
