# gup(addr, nr, out, rounds): GUP-fast nr pages from addr into the buffer at out,
# `rounds` times; exit(0). Hypercalls preserve every register but %r2.
    lgr %r8, %r2            # addr: %r2 carries each call's result back
    lgr %r9, %r5            # rounds (4th argument)
    lghi %r5, 0             # read access
again:
    lgr %r2, %r8
    lghi %r1, SYS_gup_fast
    svc 0
    brctg %r9, again
    lghi %r1, SYS_exit
    lghi %r2, 0
    svc 0
