# madvise_dontneed(addr, len): MADV_DONTNEED the range (zap, then free empty PTE
# tables); exit(0) on success, else exit(1).
    mov eax, SYS_madvise
    mov edx, 4
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
