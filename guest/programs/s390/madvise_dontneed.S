# madvise_dontneed(addr, len): MADV_DONTNEED the range (zap, then free empty PTE
# tables); exit(0) on success, else exit(1).
    lghi %r4, 4
    lghi %r1, SYS_madvise
    svc 0
    cghi %r2, 0
    jne failed
    lghi %r1, SYS_exit
    lghi %r2, 0
    svc 0
failed:
    lghi %r1, SYS_exit
    lghi %r2, 1
    svc 0
