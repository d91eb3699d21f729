# khugepaged(addr, passes): run `passes` khugepaged passes over the PMD range at addr.
    lgr %r8, %r2            # addr
    lgr %r9, %r3            # passes
again:
    lgr %r2, %r8
    lghi %r1, SYS_khugepaged_scan
    svc 0
    brctg %r9, again
    lghi %r1, SYS_exit
    lghi %r2, 0
    svc 0
