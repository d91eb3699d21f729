# khugepaged(addr, passes): run `passes` khugepaged passes over the PMD range at addr.
    mr %r8, %r3             # addr
    mr %r9, %r4             # passes
again:
    mr %r3, %r8
    li %r0, SYS_khugepaged_scan
    sc
    addi %r9, %r9, -1
    cmpdi %r9, 0
    bne again
    li %r0, SYS_exit
    li %r3, 0
    sc
