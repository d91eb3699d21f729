@ khugepaged(addr, passes): run `passes` khugepaged passes over the PMD range at addr.
    mov r5, r0              @ addr
    mov r6, r1              @ passes
again:
    mov r7, #SYS_khugepaged_scan
    mov r0, r5
    svc #0
    subs r6, r6, #1
    bne again
    mov r7, #SYS_exit
    mov r0, #0
    svc #0
