"""The run's trace: one record per step, formatted only when shown.

Records are plain tuples of ints and strings (never object reprs, never
wall-clock), so the same run gives the same trace, and the same hash, in
any process. Guest steps record the PC; disassembly is done when the trace
is printed, from the program images the machine loaded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from typing import Any

from emu.kernel import steps as s

# record: (step, task, kind, text)
#   kind: "guest" (text = pc as int), "walk", "kernel", "rcu", "note"
Record = tuple[int, str, str, Any]


def describe_op(op: Any) -> str:
    """A deterministic one-line description of a kernel step message."""
    t = type(op)
    if t is s.Load:
        return f"load{op.size * 8} [{op.pa:#x}]" + (f"  ; {op.what}" if op.what else "")
    if t is s.Store:
        return f"store{op.size * 8} [{op.pa:#x}] = {op.value:#x}" + (f"  ; {op.what}" if op.what else "")
    if t is s.Cmpxchg:
        return f"cmpxchg{op.size * 8} [{op.pa:#x}] {op.old:#x} -> {op.new:#x}  ; {op.what}"
    if t is s.Xchg:
        return f"xchg{op.size * 8} [{op.pa:#x}] = {op.new:#x}  ; {op.what}"
    if t is s.SpinLock:
        return f"spin_lock{'_nested' if op.nested else ''}({op.lock.name})"
    if t is s.SpinUnlock:
        return f"spin_unlock({op.lock.name})"
    if t in (s.DownRead, s.UpRead, s.DownWrite, s.UpWrite, s.DowngradeWrite):
        name = {s.DownRead: "down_read", s.UpRead: "up_read", s.DownWrite: "down_write",
                s.UpWrite: "up_write", s.DowngradeWrite: "downgrade_write"}[t]
        return f"{name}({op.sem.name})"
    if t is s.CallRcu:
        return f"call_rcu  ; {op.what}"
    if t is s.KernelAtomic:
        return f"atomic  ; {op.what}"
    if t is s.SecondaryLoad:
        return f"secondary load{op.size * 8} [{op.pa:#x}] (filled at step {op.filled})  ; {op.what}"
    if t is s.TlbFlushRange:
        return f"flush_tlb_range({op.start:#x}, {op.end:#x})"
    simple = {s.RcuReadLock: "rcu_read_lock()", s.RcuReadUnlock: "rcu_read_unlock()",
              s.IrqDisable: "local_irq_save()", s.IrqEnable: "local_irq_restore()",
              s.SynchronizeRcu: "synchronize_rcu()", s.RcuBarrier: "rcu_barrier()",
              s.TlbRemoveTableSyncOne: "tlb_remove_table_sync_one()"}
    if t in simple:
        return simple[t]
    return t.__name__


class Trace:
    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.records: list[Record] = []

    def add(self, step: int, task: str, kind: str, text: Any) -> None:
        if self.enabled:
            self.records.append((step, task, kind, text))

    def lines(self, disasm: Callable[[str, int], str] | None = None,
              records: Iterable[Record] | None = None) -> list[str]:
        out = []
        for step, task, kind, text in (self.records if records is None else records):
            if kind == "guest":
                body = disasm(task, text) if disasm else f"{text:#x}"
            else:
                body = str(text)
            out.append(f"{step:>7} {task:<5} {kind:<6} {body}")
        return out

    def digest(self) -> str:
        h = hashlib.sha256()
        for rec in self.records:
            h.update(repr(rec).encode())
            h.update(b"\n")
        return h.hexdigest()[:16]
