# madvise_collapse(addr, len): MADV_COLLAPSE the range. exit(0) when it succeeded
# or lost a race (-EAGAIN, which MADV_COLLAPSE may return); exit(1) otherwise.
    mov eax, SYS_madvise
    mov edx, 25
    int 0x80
    test eax, eax
    jz done
    cmp eax, -11
    jne failed
done:
    mov eax, SYS_exit
    xor ebx, ebx
    int 0x80
failed:
    mov eax, SYS_exit
    mov ebx, 1
    int 0x80
