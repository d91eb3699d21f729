# madvise_collapse(addr, len): MADV_COLLAPSE the range. exit(0) when it succeeded
# or lost a race (-EAGAIN, which MADV_COLLAPSE may return); otherwise exit with
# Linux's error (e.g. -EINVAL where the arch has no THP).
# exit-status: result
    lghi %r4, 25
    lghi %r1, SYS_madvise
    svc 0
    cghi %r2, 0
    je done
    cghi %r2, -11
    jne failed
done:
    lghi %r1, SYS_exit
    lghi %r2, 0
    svc 0
failed:
    lghi %r1, SYS_exit
    svc 0
