# hypercall(nr, a, b, c, d): make one hypercall with up to four arguments and
# exit with its result as the exit code (a negative errno shows as 2^64 - errno).
# exit-status: result (a call failing under a race is not a failed run)
    mr %r0, %r3
    mr %r3, %r4
    mr %r4, %r5
    mr %r5, %r6
    mr %r6, %r7
    sc
    li %r0, SYS_exit
    sc
