# calls(list, count): perform `count` call records (guest/calls.py) at `list`:
# op, a0..a4, CALL_RECORD_SIZE bytes each. A hypercall op is issued with a0..a4
# in ebx..edi; touch_read / touch_write load from / store to a1 addresses a2
# apart from a0. Results are not checked; exit(0) after the last record.
# Hypercalls preserve every register but eax; the count lives on the stack.
    mov ebp, ebx            # cursor
    test ecx, ecx
    jz done
    push ecx                # records left
next:
    mov eax, dword ptr [ebp]
    mov ebx, dword ptr [ebp + 4]
    mov ecx, dword ptr [ebp + 8]
    mov edx, dword ptr [ebp + 12]
    cmp eax, CALL_TOUCH_READ
    je touch_read
    cmp eax, CALL_TOUCH_WRITE
    je touch_write
    mov esi, dword ptr [ebp + 16]
    mov edi, dword ptr [ebp + 20]
    int 0x80
    jmp advance
touch_read:
    test ecx, ecx
    jz advance
read_loop:
    mov eax, dword ptr [ebx]
    add ebx, edx
    dec ecx
    jnz read_loop
    jmp advance
touch_write:
    test ecx, ecx
    jz advance
write_loop:
    mov dword ptr [ebx], ebx
    add ebx, edx
    dec ecx
    jnz write_loop
advance:
    add ebp, CALL_RECORD_SIZE
    dec dword ptr [esp]
    jnz next
    pop ecx
done:
    mov eax, SYS_exit
    xor ebx, ebx
    int 0x80
