# truncate(addr, size): truncate the shmem/file object mapped at addr to size bytes; exit(0)
# if the call succeeded.
    mov eax, SYS_truncate
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
