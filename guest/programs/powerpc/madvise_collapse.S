# madvise_collapse(addr, len): MADV_COLLAPSE the range. exit(0) when it succeeded
# or lost a race (-EAGAIN, which MADV_COLLAPSE may return); otherwise exit with
# Linux's error (e.g. -EINVAL where the arch has no THP).
# exit-status: result
    li %r5, 25
    li %r0, SYS_madvise
    sc
    cmpdi %r3, 0
    beq done
    cmpdi %r3, -11
    bne failed
done:
    li %r0, SYS_exit
    li %r3, 0
    sc
failed:
    li %r0, SYS_exit
    sc
