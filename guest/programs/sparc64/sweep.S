! sweep(start, count, stride, rounds): `rounds` times, load, increment and
! store one doubleword in each of `count` pages `stride` apart; exit(0). The
! benchmark guest of tools/bench_mmu.py. Delay slots hold only register
! arithmetic (see Sparc64.check_guest_asm).
round:
    mov %o0, %o4                ! address
    mov %o1, %o5                ! pages left this round
sweep_loop:
    ldx [%o4], %g2
    add %g2, 1, %g2
    stx %g2, [%o4]
    subcc %o5, 1, %o5
    bne %xcc, sweep_loop
     add %o4, %o2, %o4          ! delay slot: next page
    subcc %o3, 1, %o3
    bne %xcc, round
     nop
    mov SYS_exit, %g1
    mov 0, %o0
    ta 0x6d
