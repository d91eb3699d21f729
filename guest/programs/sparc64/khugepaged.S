! khugepaged(addr, passes): run `passes` khugepaged passes over the PMD range at addr.
    mov %o0, %l0                ! addr
    mov %o1, %l1                ! passes
again:
    mov SYS_khugepaged_scan, %g1
    mov %l0, %o0
    ta 0x6d
    subcc %l1, 1, %l1
    bne %xcc, again
     nop
    mov SYS_exit, %g1
    mov 0, %o0
    ta 0x6d
