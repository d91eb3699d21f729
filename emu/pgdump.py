"""Reading a live page-table tree as the arch lays it out, for `ptemu pgtable dump`.

Walks Linux's view of the tables (the arch's `levels`, `table_pa`,
`describe_entry`) over physical memory without side effects, and reports
each table's frame and, where tables share a frame (fragments, halves,
hardware+Linux pairs), where in the frame it sits. Where the MMU reads a
separate copy of an entry (arm's hardware ptes), the arch's
`describe_hardware` adds it to the entry's decoding.
"""

from __future__ import annotations

from dataclasses import dataclass

from arch.base import Arch
from emu.physmem import FrameAllocator, PhysMem, PhysMemError


@dataclass(frozen=True)
class DumpRow:
    level: str
    table_pa: int
    index: int
    entry_pa: int
    va: int
    raw: int
    decoded: str
    frame_note: str


def frame_note(frames: FrameAllocator, table_pa: int) -> str:
    try:
        fi = frames.info(table_pa)
    except PhysMemError:
        return "outside RAM"
    off = table_pa - frames.frame_base(table_pa)
    note = f"frame {frames.frame_base(table_pa):#x} {fi.state.value}"
    if fi.subtables:
        parts = ", ".join(f"+{o:#x}:{st}" for o, st in sorted(fi.subtables.items()))
        note += f" [{parts}]"
    if off:
        note += f" @+{off:#x}"
    return note


def dump_rows(arch: Arch, mem: PhysMem, frames: FrameAllocator, root: int, start: int,
              end: int) -> list[DumpRow]:
    rows: list[DumpRow] = []
    levels = arch.levels

    def read(pa: int, size: int) -> int:
        return mem.read_int(pa, size, arch.byteorder)

    def visit(depth: int, table: int, base_va: int) -> None:
        lv = levels[depth]
        span = 1 << lv.shift
        first = max(start, base_va)
        last = min(end, base_va + span * lv.entries)
        if first >= last:
            return
        i0 = (first - base_va) // span
        i1 = (last - 1 - base_va) // span
        note = frame_note(frames, table)
        for i in range(i0, i1 + 1):
            epa = table + i * lv.entry_size
            try:
                val = mem.read_int(epa, lv.entry_size, arch.byteorder)
            except PhysMemError:
                continue
            if val == arch.empty_entry(lv.name):
                continue
            va = base_va + i * span
            decoded = arch.describe_entry(lv.name, val)
            try:
                hw = arch.describe_hardware(lv.name, epa, read)
            except PhysMemError:
                hw = "h/w copy outside RAM"
            if hw:
                decoded += f"; {hw}"
            rows.append(DumpRow(lv.name, table, i, epa, va, val, decoded, note))
            is_leaf = lv.name == "pte" or (lv.name == "pmd" and arch.pmd_trans_huge(val))
            if not is_leaf and arch.entry_present(lv.name, val) and depth + 1 < len(levels):
                visit(depth + 1, arch.table_pa(lv.name, val), va)

    visit(0, root, 0)
    return rows
