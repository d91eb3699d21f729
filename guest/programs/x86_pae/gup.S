# gup(addr, nr, out, rounds): GUP-fast nr pages from addr into the buffer at out,
# `rounds` times; exit(0). Hypercalls preserve every register but eax.
    mov ebp, esi            # rounds (4th argument)
    xor esi, esi            # read access
again:
    mov eax, SYS_gup_fast
    int 0x80
    dec ebp
    jnz again
    mov eax, SYS_exit
    xor ebx, ebx
    int 0x80
