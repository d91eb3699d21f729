@ calls(list, count): perform `count` call records (guest/calls.py) at `list`:
@ op, a0..a4, CALL_RECORD_SIZE bytes each. A hypercall op is issued with a0..a4
@ in r0..r4; touch_read / touch_write load from / store to a1 addresses a2
@ apart from a0. Results are not checked; exit(0) after the last record.
@ Hypercalls preserve every register but r0.
    mov r8, r0              @ cursor
    movs r9, r1             @ records left
    beq done
next:
    ldr r7, [r8]
    ldr r0, [r8, #4]
    ldr r1, [r8, #8]
    ldr r2, [r8, #12]
    ldr r3, [r8, #16]
    ldr r4, [r8, #20]
    cmp r7, #CALL_TOUCH_READ
    beq touch_read
    cmp r7, #CALL_TOUCH_WRITE
    beq touch_write
    svc #0
    b advance
touch_read:
    cmp r1, #0
    beq advance
read_loop:
    ldr r5, [r0]
    add r0, r0, r2
    subs r1, r1, #1
    bne read_loop
    b advance
touch_write:
    cmp r1, #0
    beq advance
write_loop:
    str r0, [r0]
    add r0, r0, r2
    subs r1, r1, #1
    bne write_loop
advance:
    add r8, r8, #CALL_RECORD_SIZE
    subs r9, r9, #1
    bne next
done:
    mov r7, #SYS_exit
    mov r0, #0
    svc #0
