# calls(list, count): perform `count` call records (guest/calls.py) at `list`:
# op, a0..a4, CALL_RECORD_SIZE bytes each. A hypercall op is issued with a0..a4
# in %r3..%r7; touch_read / touch_write load from / store to a1 addresses a2
# apart from a0. Results are not checked; exit(0) after the last record.
# Hypercalls preserve every register but %r3.
    mr %r14, %r3            # cursor
    mr %r15, %r4            # records left
    cmpdi %r15, 0
    beq done
next:
    ld %r0, 0(%r14)
    ld %r3, 8(%r14)
    ld %r4, 16(%r14)
    ld %r5, 24(%r14)
    ld %r6, 32(%r14)
    ld %r7, 40(%r14)
    cmpdi %r0, CALL_TOUCH_READ
    beq touch_read
    cmpdi %r0, CALL_TOUCH_WRITE
    beq touch_write
    sc
    b advance
touch_read:
    cmpdi %r4, 0
    beq advance
read_loop:
    ld %r10, 0(%r3)
    add %r3, %r3, %r5
    addi %r4, %r4, -1
    cmpdi %r4, 0
    bne read_loop
    b advance
touch_write:
    cmpdi %r4, 0
    beq advance
write_loop:
    std %r3, 0(%r3)
    add %r3, %r3, %r5
    addi %r4, %r4, -1
    cmpdi %r4, 0
    bne write_loop
advance:
    addi %r14, %r14, CALL_RECORD_SIZE
    addi %r15, %r15, -1
    cmpdi %r15, 0
    bne next
done:
    li %r0, SYS_exit
    li %r3, 0
    sc
