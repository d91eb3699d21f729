# sweep(start, count, stride, rounds): `rounds` times, load, increment and
# store one doubleword in each of `count` pages `stride` apart; exit(0). The
# benchmark guest of tools/bench_mmu.py.
round:
    mr %r8, %r3            # address
    mr %r9, %r4            # pages left this round
sweep_loop:
    ld %r10, 0(%r8)
    addi %r10, %r10, 1
    std %r10, 0(%r8)
    add %r8, %r8, %r5
    addi %r9, %r9, -1
    cmpdi %r9, 0
    bne sweep_loop
    addi %r6, %r6, -1
    cmpdi %r6, 0
    bne round
    li %r0, SYS_exit
    li %r3, 0
    sc
