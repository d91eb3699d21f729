# hypercall(nr, a, b, c, d): make one hypercall with up to four arguments and
# exit with its result as the exit code (a negative errno shows as 2^32 - errno).
# exit-status: result (a call failing under a race is not a failed run)
    mov eax, ebx
    mov ebx, ecx
    mov ecx, edx
    mov edx, esi
    mov esi, edi
    int 0x80
    mov ebx, eax
    mov eax, SYS_exit
    int 0x80
