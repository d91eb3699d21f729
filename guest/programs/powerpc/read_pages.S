# read_pages(start, count, stride, rounds): load from `count` pages `stride` apart,
# `rounds` times over (each round's loads may re-walk after a TLB flush); exit(0).
    mr %r9, %r6             # rounds
round:
    mr %r7, %r3
    mr %r8, %r4
loop:
    ld %r10, 0(%r7)
    add %r7, %r7, %r5
    addi %r8, %r8, -1
    cmpdi %r8, 0
    bne loop
    addi %r9, %r9, -1
    cmpdi %r9, 0
    bne round
    li %r0, SYS_exit
    li %r3, 0
    sc
