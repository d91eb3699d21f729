@ madvise_collapse(addr, len): MADV_COLLAPSE the range. exit(0) when it succeeded
@ or lost a race (-EAGAIN, which MADV_COLLAPSE may return); otherwise exit with
@ Linux's error (e.g. -EINVAL where the arch has no THP).
@ exit-status: result
    mov r7, #SYS_madvise
    mov r2, #25
    svc #0
    cmp r0, #0
    beq done
    cmn r0, #11             @ -EAGAIN
    bne failed
done:
    mov r7, #SYS_exit
    mov r0, #0
    svc #0
failed:
    mov r7, #SYS_exit
    svc #0
