# madvise_collapse(addr, len): MADV_COLLAPSE the range. exit(0) when it succeeded
# or lost a race (-EAGAIN, which MADV_COLLAPSE may return); otherwise exit with
# Linux's error (e.g. -EINVAL where the arch has no THP).
# exit-status: result
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
    mov ebx, eax
    mov eax, SYS_exit
    int 0x80
