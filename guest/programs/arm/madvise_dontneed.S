@ madvise_dontneed(addr, len): MADV_DONTNEED the range (zap, then free empty PTE
@ tables); exit(0) on success, else exit(1).
    mov r7, #SYS_madvise
    mov r2, #4
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
