! sum_calls(n, expected): add i twice for i = n..1, once in the delay slot
! of a call and once in the delay slot of the branch back, then
! exit(sum - expected), computed without a branch: exit(0) iff the sum is
! n * (n + 1). Every iteration runs a call, a branch-always and a taken
! conditional branch, each with its delay slot, so a lost branch target or
! a slot run on its own changes the sum. (No retl: register-indirect jumps
! trap in Unicorn 2.1's sparc64; see Sparc64.check_guest_asm.)
    mov %o0, %l2                ! i = n
    mov 0, %l1                  ! sum = 0
loop:
    call add_i
     add %l1, %l2, %l1          ! delay slot: sum += i
back:
    subcc %l2, 1, %l2
    bne %xcc, loop
     nop
    mov SYS_exit, %g1
    sub %l1, %o1, %o0
    ta 0x6d
add_i:
    ba back
     add %l1, %l2, %l1          ! delay slot: sum += i again
