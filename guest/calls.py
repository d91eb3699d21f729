"""The call-list record format: what `[[cpu]] calls = [...]` becomes in guest memory.

A vCPU given a call list runs the per-arch `calls` program
(`guest/programs/<arch>/calls.S`) with two arguments, the address of the
records and their count. A record is `RECORD_WORDS` guest words in the
arch's byte order: `op, a0, a1, a2, a3, a4`. An op below `TOUCH_READ` is a
hypercall number and is issued with a0..a4 in the argument registers (so
an unknown number is the guest's own `-ENOSYS`); the pseudo-ops make the
guest itself load or store, so faults come from real guest instructions:

- `touch_read(addr, count, stride)`: one word loaded from each of `count`
  addresses `stride` apart;
- `touch_write(addr, count, stride)`: each of them stores its own address.

Results are not checked (a racing call may legally fail); the program exits
0 after the last record. The machine lays the records out after the
program's code in the vCPU's text VMA (read-only, like any program data
the loader maps with the text). This module owns the op numbers, the
record size and the encoding; the programs see the numbers as `CALL_*`
constants (guest/asm.py).
"""

from __future__ import annotations

from collections.abc import Sequence

RECORD_WORDS = 6  # op, a0..a4
MAX_ARGS = RECORD_WORDS - 1
# Pseudo-op numbers: no hypercall has them, and every arch's compare
# immediate can hold them (arm's rotated 8-bit, sparc64's simm13).
TOUCH_READ = 0x100
TOUCH_WRITE = 0x200
PSEUDO_OPS = {"touch_read": TOUCH_READ, "touch_write": TOUCH_WRITE}
MAX_RECORDS = 1024


def constants(word_size: int) -> dict[str, int]:
    """What calls.S may name: the pseudo-op numbers and the record size in bytes."""
    return {"CALL_TOUCH_READ": TOUCH_READ, "CALL_TOUCH_WRITE": TOUCH_WRITE,
            "CALL_RECORD_SIZE": RECORD_WORDS * word_size}


def op_number(op: str | int, hypercalls: dict[str, int]) -> int | None:
    """The record op for a name (hypercall or pseudo-op) or a number; None if unknown."""
    if isinstance(op, int):
        return op
    if op in PSEUDO_OPS:
        return PSEUDO_OPS[op]
    return hypercalls.get(op)


def encode(records: Sequence[Sequence[int]], word_size: int, byteorder: str) -> bytes:
    """The records as the calls program reads them; arguments wrap to the word size
    (a negative argument is its two's complement, as a guest would store it)."""
    mask = (1 << (8 * word_size)) - 1
    out = bytearray()
    for rec in records:
        words = list(rec) + [0] * (RECORD_WORDS - len(rec))
        if len(words) != RECORD_WORDS:
            raise ValueError(f"a call record has at most {MAX_ARGS} arguments")
        for w in words:
            out += (w & mask).to_bytes(word_size, byteorder)
    return bytes(out)
