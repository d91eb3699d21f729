# madvise_loop(addr, len, advice, rounds): madvise(addr, len, advice) `rounds` times
# (e.g. MADV_DONTNEED = 4 on one page: a zapper racing whatever else runs); exit(0).
    lgr %r8, %r2            # addr: %r2 carries each call's result back
    lgr %r9, %r5            # rounds
again:
    lgr %r2, %r8
    lghi %r1, SYS_madvise
    svc 0
    brctg %r9, again
    lghi %r1, SYS_exit
    lghi %r2, 0
    svc 0
