# mincore_check(addr, len, vec, n): mincore() the range into vec, then check that
# its first n bytes all say resident; exit(0) if so, 1 if one does not, 2 if the
# call failed.
    li %r0, SYS_mincore
    sc
    cmpdi %r3, 0
    bne failed
check:
    lbz %r7, 0(%r5)
    cmpdi %r7, 1
    bne absent
    addi %r5, %r5, 1
    addi %r6, %r6, -1
    cmpdi %r6, 0
    bne check
    li %r0, SYS_exit
    li %r3, 0
    sc
absent:
    li %r0, SYS_exit
    li %r3, 1
    sc
failed:
    li %r0, SYS_exit
    li %r3, 2
    sc
