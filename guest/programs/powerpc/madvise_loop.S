# madvise_loop(addr, len, advice, rounds): madvise(addr, len, advice) `rounds` times
# (e.g. MADV_DONTNEED = 4 on one page: a zapper racing whatever else runs); exit(0).
    mr %r8, %r3             # addr: %r3 carries each call's result back
    mr %r9, %r6             # rounds
again:
    mr %r3, %r8
    li %r0, SYS_madvise
    sc
    addi %r9, %r9, -1
    cmpdi %r9, 0
    bne again
    li %r0, SYS_exit
    li %r3, 0
    sc
