@ read_pages(start, count, stride, rounds): load from `count` pages `stride` apart,
@ `rounds` times over (each round's loads may re-walk after a TLB flush); exit(0).
round:
    mov r4, r0              @ cursor
    mov r5, r1              @ pages left
loop:
    ldr r6, [r4]
    add r4, r4, r2
    subs r5, r5, #1
    bne loop
    subs r3, r3, #1
    bne round
    mov r7, #SYS_exit
    mov r0, #0
    svc #0
