# truncate(addr, size): truncate the shmem/file object mapped at addr to size bytes; exit(0)
# if the call succeeded.
    lghi %r1, SYS_truncate
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
