@ touch(start, count, stride): store to `count` pages `stride` apart, then
@ read every one back; exit(0) if all held their own address, else exit(1).
    mov r4, r0              @ remember start
    mov r5, r1              @ remember count
store_loop:
    str r0, [r0]
    add r0, r0, r2
    subs r1, r1, #1
    bne store_loop
    mov r0, r4
    mov r1, r5
check_loop:
    ldr r3, [r0]
    cmp r3, r0
    bne bad
    add r0, r0, r2
    subs r1, r1, #1
    bne check_loop
    mov r7, #SYS_exit
    mov r0, #0
    svc #0
bad:
    mov r7, #SYS_exit
    mov r0, #1
    svc #0
