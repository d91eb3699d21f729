# sweep(start, count, stride, rounds): `rounds` times, load, increment and
# store one doubleword in each of `count` pages `stride` apart; exit(0). The
# benchmark guest of tools/bench_mmu.py.
round:
    lgr %r7, %r2          # address
    lgr %r8, %r3          # pages left this round
sweep_loop:
    lg %r9, 0(%r7)
    aghi %r9, 1
    stg %r9, 0(%r7)
    agr %r7, %r4
    brctg %r8, sweep_loop
    brctg %r5, round
    lghi %r1, SYS_exit
    lghi %r2, 0
    svc 0
