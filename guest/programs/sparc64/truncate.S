! truncate(addr, size): truncate the shmem/file object mapped at addr to size bytes;
! exit(0) if the call succeeded, else exit(1).
    mov SYS_truncate, %g1
    ta 0x6d
    brnz %o0, failed
     nop
    mov SYS_exit, %g1
    mov 0, %o0
    ta 0x6d
failed:
    mov SYS_exit, %g1
    mov 1, %o0
    ta 0x6d
