# truncate(addr, size): truncate the shmem/file object mapped at addr to size bytes; exit(0)
# if the call succeeded.
    li %r0, SYS_truncate
    sc
    cmpdi %r3, 0
    bne failed
    li %r0, SYS_exit
    li %r3, 0
    sc
failed:
    li %r0, SYS_exit
    li %r3, 1
    sc
