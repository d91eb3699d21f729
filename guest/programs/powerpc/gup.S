# gup(addr, nr, out, rounds): GUP-fast nr pages from addr into the buffer at out,
# `rounds` times; exit(0). Hypercalls preserve every register but %r3.
    mr %r8, %r3             # addr: %r3 carries each call's result back
    mr %r9, %r6             # rounds (4th argument)
    li %r6, 0               # read access
again:
    mr %r3, %r8
    li %r0, SYS_gup_fast
    sc
    addi %r9, %r9, -1
    cmpdi %r9, 0
    bne again
    li %r0, SYS_exit
    li %r3, 0
    sc
