# mincore_check(addr, len, vec, n): mincore() the range into vec, then check that
# its first n bytes all say resident; exit(0) if so, 1 if one does not, 2 if the
# call failed.
    lghi %r1, SYS_mincore
    svc 0
    cghi %r2, 0
    jne failed
check:
    llgc %r7, 0(%r4)
    cghi %r7, 1
    jne absent
    aghi %r4, 1
    brctg %r5, check
    lghi %r1, SYS_exit
    lghi %r2, 0
    svc 0
absent:
    lghi %r1, SYS_exit
    lghi %r2, 1
    svc 0
failed:
    lghi %r1, SYS_exit
    lghi %r2, 2
    svc 0
