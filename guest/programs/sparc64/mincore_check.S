! mincore_check(addr, len, vec, n): mincore() the range into vec, then check that
! its first n bytes all say resident; exit(0) if so, 1 if one does not, 2 if the
! call failed.
    mov SYS_mincore, %g1
    ta 0x6d
    brnz %o0, failed
     nop
check:
    ldub [%o2], %l0
    cmp %l0, 1
    bne %xcc, absent
     nop
    subcc %o3, 1, %o3
    bne %xcc, check
     add %o2, 1, %o2            ! delay slot: next byte
    mov SYS_exit, %g1
    mov 0, %o0
    ta 0x6d
absent:
    mov SYS_exit, %g1
    mov 1, %o0
    ta 0x6d
failed:
    mov SYS_exit, %g1
    mov 2, %o0
    ta 0x6d
