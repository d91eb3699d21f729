! hypercall(nr, a, b, c, d): make one hypercall with up to four arguments and
! exit with its result as the exit code (a negative errno shows as 2^64 - errno).
! exit-status: result (a call failing under a race is not a failed run)
    mov %o0, %g1
    mov %o1, %o0
    mov %o2, %o1
    mov %o3, %o2
    mov %o4, %o3
    ta 0x6d
    mov SYS_exit, %g1           ! exit(result): the result is already in %o0
    ta 0x6d
