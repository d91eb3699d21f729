@ madvise_loop(addr, len, advice, rounds): madvise(addr, len, advice) `rounds` times
@ (e.g. MADV_DONTNEED = 4: a zapper racing whatever else runs); exit(0).
    mov r5, r3              @ rounds (4th argument)
    mov r6, r0              @ addr: r0 carries each call's result
again:
    mov r0, r6
    mov r7, #SYS_madvise
    svc #0
    subs r5, r5, #1
    bne again
    mov r7, #SYS_exit
    mov r0, #0
    svc #0
