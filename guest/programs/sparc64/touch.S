! touch(start, count, stride): store to `count` pages `stride` apart, then
! read every one back; exit(0) if all held their own address, else exit(1).
! Delay slots hold only register arithmetic (see Sparc64.check_guest_asm).
    mov %o0, %o3                ! remember start
    mov %o1, %o4                ! remember count
store_loop:
    stx %o0, [%o0]
    subcc %o1, 1, %o1
    bne %xcc, store_loop
     add %o0, %o2, %o0          ! delay slot: next page
    mov %o3, %o0
    mov %o4, %o1
check_loop:
    ldx [%o0], %o5
    cmp %o5, %o0
    bne %xcc, bad
     nop
    subcc %o1, 1, %o1
    bne %xcc, check_loop
     add %o0, %o2, %o0          ! delay slot: next page
    mov SYS_exit, %g1
    mov 0, %o0
    ta 0x6d
bad:
    mov SYS_exit, %g1
    mov 1, %o0
    ta 0x6d
