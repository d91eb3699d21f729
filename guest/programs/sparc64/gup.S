! gup(addr, nr, out, rounds): GUP-fast nr pages from addr into the buffer at out,
! `rounds` times; exit(0). The result comes back in %o0, so addr lives in %l0;
! the other argument registers survive the hypercall.
    mov %o0, %l0                ! addr
    mov %o3, %l1                ! rounds
    mov 0, %o3                  ! read access
again:
    mov %l0, %o0
    mov SYS_gup_fast, %g1
    ta 0x6d
    subcc %l1, 1, %l1
    bne %xcc, again
     nop
    mov SYS_exit, %g1
    mov 0, %o0
    ta 0x6d
