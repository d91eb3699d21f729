! calls(list, count): perform `count` call records (guest/calls.py) at `list`:
! op, a0..a4, CALL_RECORD_SIZE bytes each. A hypercall op is issued with a0..a4
! in %o0..%o4; touch_read / touch_write load from / store to a1 addresses a2
! apart from a0. Results are not checked; exit(0) after the last record.
! Hypercalls preserve every register but %o0. Delay slots hold register
! arithmetic only (see Sparc64.check_guest_asm).
    mov %o0, %l0                ! cursor
    mov %o1, %l1                ! records left
    cmp %l1, 0
    be %xcc, done
     nop
next:
    ldx [%l0], %g1
    ldx [%l0 + 8], %o0
    ldx [%l0 + 16], %o1
    ldx [%l0 + 24], %o2
    ldx [%l0 + 32], %o3
    ldx [%l0 + 40], %o4
    cmp %g1, CALL_TOUCH_READ
    be %xcc, touch_read
     nop
    cmp %g1, CALL_TOUCH_WRITE
    be %xcc, touch_write
     nop
    ta 0x6d
    ba advance
     nop
touch_read:
    cmp %o1, 0
    be %xcc, advance
     nop
read_loop:
    ldx [%o0], %l2
    subcc %o1, 1, %o1
    bne %xcc, read_loop
     add %o0, %o2, %o0          ! delay slot: next address
    ba advance
     nop
touch_write:
    cmp %o1, 0
    be %xcc, advance
     nop
write_loop:
    stx %o0, [%o0]
    subcc %o1, 1, %o1
    bne %xcc, write_loop
     add %o0, %o2, %o0          ! delay slot: next address
advance:
    subcc %l1, 1, %l1
    bne %xcc, next
     add %l0, CALL_RECORD_SIZE, %l0 ! delay slot: next record
done:
    mov SYS_exit, %g1
    mov 0, %o0
    ta 0x6d
