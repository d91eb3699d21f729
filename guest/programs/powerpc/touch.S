# touch(start, count, stride): store each page's own address into it (one
# doubleword), then read every one back; exit(0) if all held their address,
# else exit(1). Arguments arrive in %r3, %r4, %r5; the call number goes in
# %r0 and `sc` traps to the kernel model.
    mr %r6, %r3            # remember start
    mr %r7, %r4            # remember count
store_loop:
    std %r3, 0(%r3)
    add %r3, %r3, %r5
    addi %r4, %r4, -1
    cmpdi %r4, 0
    bne store_loop
    mr %r3, %r6
    mr %r4, %r7
check_loop:
    ld %r8, 0(%r3)
    cmpd %r8, %r3
    bne bad
    add %r3, %r3, %r5
    addi %r4, %r4, -1
    cmpdi %r4, 0
    bne check_loop
    li %r0, SYS_exit
    li %r3, 0
    sc
bad:
    li %r0, SYS_exit
    li %r3, 1
    sc
