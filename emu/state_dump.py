"""A machine's state at one moment, as text: for `ptemu replay --dump-at STEP|fail`.

Two views: the page tables, row for row as `ptemu pgtable dump` shows them
(every non-empty entry of every level, with the frame each table lives
in), and every CPU's TLB (like QEMU's `info tlb`): each cached mapping,
the step that filled it, and whether it is stale (a table or the page it
was built from has since been freed or reused: its frame generation moved
on). Plain lines; the CLI prints them.
"""

from __future__ import annotations

from typing import Any

from arch.base import PERM_R, PERM_W, PERM_X
from emu.pgdump import dump_rows

PGTABLE_LIMIT = 2000  # rows; a populated scenario has thousands of ptes


def pgtable_lines(m: Any, limit: int = PGTABLE_LIMIT) -> list[str]:
    """Every process's tables (one section each when the machine has several)."""
    mms = m.kernel.mms
    out: list[str] = []
    for mm in mms:
        out += _mm_lines(m, mm, f" of process {mm.name}" if len(mms) > 1 else "", limit)
    return out


def _mm_lines(m: Any, mm: Any, who: str, limit: int) -> list[str]:
    rows = dump_rows(m.arch, m.mem, m.frames, mm.root, 0, 1 << m.arch.va_bits)
    out = [f"{m.arch.name} page tables{who}, root {mm.root:#x}",
           f"{'level':<6} {'table':>10} {'idx':>5} {'entry pa':>10} {'va':>12} "
           f"{'raw':>16}  decoded  frame"]
    for row in rows[:limit]:
        width = 2 * m.arch.level(row.level).entry_size
        out.append(f"{row.level:<6} {row.table_pa:>#10x} {row.index:>5} {row.entry_pa:>#10x} "
                   f"{row.va:>#12x} {row.raw:>0{width}x}  {row.decoded}  {row.frame_note}")
    if len(rows) > limit:
        out.append(f"({len(rows) - limit} more entries not shown)")
    return out


def _perms(p: int) -> str:
    return ("r" if p & PERM_R else "-") + ("w" if p & PERM_W else "-") + ("x" if p & PERM_X else "-")


def tlb_lines(m: Any) -> list[str]:
    out = []
    for c in m.cpus:
        entries = sorted(c.tlb.items())
        who = f" (process {m.mm_of(c).name})" if len(m.kernel.mms) > 1 else ""
        out.append(f"cpu{c.index}{who} TLB: {len(entries)} entries")
        for va, e in entries:
            tr = e.tr
            stale = m.frame_gens(tr) != e.gens
            out.append(f"  {va:#012x}-{va + tr.size - 1:#012x} -> {tr.pa_base:#010x} "
                       f"{_perms(tr.perms)} size {tr.size:#x} filled at step {e.fill_step}"
                       f" via tables {', '.join(f'{t:#x}' for t in tr.tables)}"
                       + ("  STALE: a table or the page it came from was freed since" if stale
                          else ""))
    return out


def state_lines(m: Any, when: str) -> list[str]:
    return [f"state {when}", *pgtable_lines(m), *tlb_lines(m)]
