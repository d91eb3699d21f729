# hypercall(nr, a, b, c, d): make one hypercall with up to four arguments and
# exit with its result as the exit code (a negative errno shows as 2^64 - errno).
# exit-status: result (a call failing under a race is not a failed run)
    lgr %r1, %r2
    lgr %r2, %r3
    lgr %r3, %r4
    lgr %r4, %r5
    lgr %r5, %r6
    svc 0
    lghi %r1, SYS_exit
    svc 0
