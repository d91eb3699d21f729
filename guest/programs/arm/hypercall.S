@ hypercall(nr, a, b, c, d): make one hypercall with up to four arguments and
@ exit with its result as the exit code (a negative errno shows as 2^32 - errno).
@ exit-status: result (a call failing under a race is not a failed run)
    mov r7, r0
    mov r0, r1
    mov r1, r2
    mov r2, r3
    mov r3, r4
    svc #0
    mov r7, #SYS_exit
    svc #0
