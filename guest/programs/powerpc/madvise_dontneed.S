# madvise_dontneed(addr, len): MADV_DONTNEED the range (zap, then free empty PTE
# tables); exit(0) on success, else exit(1).
    li %r5, 4
    li %r0, SYS_madvise
    sc
    cmpdi %r3, 0
    bne failed
    li %r0, SYS_exit
    li %r3, 0
    sc
failed:
    li %r0, SYS_exit
    li %r3, 1
    sc
