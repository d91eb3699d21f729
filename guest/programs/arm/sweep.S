@ sweep(start, count, stride, rounds): `rounds` times, load, increment and
@ store one word in each of `count` pages `stride` apart; exit(0). The
@ benchmark guest of tools/bench_mmu.py.
round:
    mov r4, r0              @ address
    mov r5, r1              @ pages left this round
sweep_loop:
    ldr r6, [r4]
    add r6, r6, #1
    str r6, [r4]
    add r4, r4, r2
    subs r5, r5, #1
    bne sweep_loop
    subs r3, r3, #1
    bne round
    mov r7, #SYS_exit
    mov r0, #0
    svc #0
