# mincore_check(addr, len, vec, n): mincore() the range into vec, then check that
# its first n bytes all say resident; exit(0) if so, 1 if one does not, 2 if the
# call failed.
    mov eax, SYS_mincore
    int 0x80
    test eax, eax
    jnz failed
check:
    cmp byte ptr [edx], 1
    jne absent
    inc edx
    dec esi
    jnz check
    mov eax, SYS_exit
    xor ebx, ebx
    int 0x80
absent:
    mov eax, SYS_exit
    mov ebx, 1
    int 0x80
failed:
    mov eax, SYS_exit
    mov ebx, 2
    int 0x80
