! madvise_dontneed(addr, len): MADV_DONTNEED the range (zap, then free empty PTE
! tables); exit(0) on success, else exit(1).
    mov SYS_madvise, %g1
    mov 4, %o2                  ! MADV_DONTNEED
    ta 0x6d
    brnz %o0, failed
     nop
    mov SYS_exit, %g1
    mov 0, %o0
    ta 0x6d
failed:
    mov SYS_exit, %g1
    mov 1, %o0
    ta 0x6d
