@ truncate(addr, size): truncate the shmem/file object mapped at addr to size bytes; exit(0)
@ if the call succeeded.
    mov r7, #SYS_truncate
    svc #0
    cmp r0, #0
    bne failed
    mov r7, #SYS_exit
    mov r0, #0
    svc #0
failed:
    mov r7, #SYS_exit
    mov r0, #1
    svc #0
