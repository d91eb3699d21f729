# madvise_loop(addr, len, advice, rounds): madvise(addr, len, advice) `rounds` times
# (e.g. MADV_DONTNEED = 4 on one page: a zapper racing whatever else runs); exit(0).
    mov ebp, esi            # rounds
again:
    mov eax, SYS_madvise
    int 0x80
    dec ebp
    jnz again
    mov eax, SYS_exit
    xor ebx, ebx
    int 0x80
