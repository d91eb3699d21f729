# read_pages(start, count, stride, rounds): load from `count` pages `stride` apart,
# `rounds` times over (each round's loads may re-walk after a TLB flush); exit(0).
round:
    lgr %r7, %r2
    lgr %r8, %r3
loop:
    lg %r10, 0(%r7)
    agr %r7, %r4
    brctg %r8, loop
    brctg %r5, round
    lghi %r1, SYS_exit
    lghi %r2, 0
    svc 0
