# sweep(start, count, stride, rounds): `rounds` times, load, increment and
# store one word in each of `count` pages `stride` apart; exit(0). The
# benchmark guest of tools/bench_mmu.py: a TLB-resident working set when
# count is small, a miss on every page when each page is touched once.
round:
    mov eax, ebx            # address
    mov edi, ecx            # pages left this round
sweep_loop:
    mov ebp, dword ptr [eax]
    inc ebp
    mov dword ptr [eax], ebp
    add eax, edx
    dec edi
    jnz sweep_loop
    dec esi
    jnz round
    mov eax, SYS_exit
    xor ebx, ebx
    int 0x80
