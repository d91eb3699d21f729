! madvise_collapse(addr, len): MADV_COLLAPSE the range. exit(0) when it succeeded
! or lost a race (-EAGAIN, which MADV_COLLAPSE may return); otherwise exit with
! Linux's error (e.g. -EINVAL where the arch has no THP).
! exit-status: result
    mov SYS_madvise, %g1
    mov 25, %o2                 ! MADV_COLLAPSE
    ta 0x6d
    brz %o0, done
     nop
    cmp %o0, -11                ! -EAGAIN
    bne %xcc, failed
     nop
done:
    mov SYS_exit, %g1
    mov 0, %o0
    ta 0x6d
failed:
    mov SYS_exit, %g1
    ta 0x6d
