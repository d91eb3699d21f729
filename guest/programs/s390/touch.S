# touch(start, count, stride): store to `count` pages `stride` apart, then
# read every one back; exit(0) if all held their own address, else exit(1).
# Arguments in r2-r4; the hypercall number goes in r1, its argument in r2.
    lgr %r7, %r2          # remember start
    lgr %r8, %r3          # remember count
store_loop:
    stg %r2, 0(%r2)
    agr %r2, %r4
    brctg %r3, store_loop
    lgr %r2, %r7
    lgr %r3, %r8
check_loop:
    cg %r2, 0(%r2)
    jne bad
    agr %r2, %r4
    brctg %r3, check_loop
    lghi %r1, SYS_exit
    lghi %r2, 0
    svc 0
bad:
    lghi %r1, SYS_exit
    lghi %r2, 1
    svc 0
