! read_pages(start, count, stride, rounds): load from `count` pages `stride` apart,
! `rounds` times over (each round's loads may re-walk after a TLB flush); exit(0).
    mov %o3, %l3                ! rounds
round:
    mov %o0, %l0                ! p = start
    mov %o1, %l1                ! n = count
loop:
    ldx [%l0], %l2
    subcc %l1, 1, %l1
    bne %xcc, loop
     add %l0, %o2, %l0          ! delay slot: next page
    subcc %l3, 1, %l3
    bne %xcc, round
     nop
    mov SYS_exit, %g1
    mov 0, %o0
    ta 0x6d
