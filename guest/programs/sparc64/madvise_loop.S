! madvise_loop(addr, len, advice, rounds): madvise(addr, len, advice) `rounds` times
! (e.g. MADV_DONTNEED = 4 on one page: a zapper racing whatever else runs); exit(0).
    mov %o0, %l0                ! addr: the result comes back in %o0
    mov %o3, %l1                ! rounds
again:
    mov %l0, %o0
    mov SYS_madvise, %g1
    ta 0x6d
    subcc %l1, 1, %l1
    bne %xcc, again
     nop
    mov SYS_exit, %g1
    mov 0, %o0
    ta 0x6d
