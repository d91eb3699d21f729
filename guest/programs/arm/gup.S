@ gup(addr, nr, out, rounds): GUP-fast nr pages from addr into the buffer at out,
@ `rounds` times; exit(0). Hypercalls preserve every register but r0.
    mov r5, r3              @ rounds (4th argument)
    mov r6, r0              @ addr: r0 carries each call's result
    mov r3, #0              @ read access
again:
    mov r0, r6
    mov r7, #SYS_gup_fast
    svc #0
    subs r5, r5, #1
    bne again
    mov r7, #SYS_exit
    mov r0, #0
    svc #0
