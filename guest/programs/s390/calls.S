# calls(list, count): perform `count` call records (guest/calls.py) at `list`:
# op, a0..a4, CALL_RECORD_SIZE bytes each. A hypercall op is issued with a0..a4
# in %r2..%r6; touch_read / touch_write load from / store to a1 addresses a2
# apart from a0. Results are not checked; exit(0) after the last record.
# Hypercalls preserve every register but %r2.
    lgr %r7, %r2            # cursor
    ltgr %r8, %r3           # records left
    je done
next:
    lg %r1, 0(%r7)
    lg %r2, 8(%r7)
    lg %r3, 16(%r7)
    lg %r4, 24(%r7)
    lg %r5, 32(%r7)
    lg %r6, 40(%r7)
    cghi %r1, CALL_TOUCH_READ
    je touch_read
    cghi %r1, CALL_TOUCH_WRITE
    je touch_write
    svc 0
    j advance
touch_read:
    ltgr %r3, %r3
    je advance
read_loop:
    lg %r9, 0(%r2)
    agr %r2, %r4
    brctg %r3, read_loop
    j advance
touch_write:
    ltgr %r3, %r3
    je advance
write_loop:
    stg %r2, 0(%r2)
    agr %r2, %r4
    brctg %r3, write_loop
advance:
    aghi %r7, CALL_RECORD_SIZE
    brctg %r8, next
done:
    lghi %r1, SYS_exit
    lghi %r2, 0
    svc 0
