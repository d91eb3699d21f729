@ mincore_check(addr, len, vec, n): mincore() the range into vec, then check that
@ its first n bytes all say resident; exit(0) if so, 1 if one does not, 2 if the
@ call failed.
    mov r7, #SYS_mincore
    svc #0
    cmp r0, #0
    bne failed
check:
    ldrb r4, [r2]
    cmp r4, #1
    bne absent
    add r2, r2, #1
    subs r3, r3, #1
    bne check
    mov r7, #SYS_exit
    mov r0, #0
    svc #0
absent:
    mov r7, #SYS_exit
    mov r0, #1
    svc #0
failed:
    mov r7, #SYS_exit
    mov r0, #2
    svc #0
