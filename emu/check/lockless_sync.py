"""The pmdp_get_lockless_sync() contract on arches whose pmd reads tear (x86-PAE).

A lockless pmd read there is two loads inside an IRQs-off window
(`pmdp_get_lockless_start/end`, seed 002). A writer that clears a pmd with
`pmdp_collapse_flush()` must not leave its pmd-locked section while a reader
whose window overlapped the clear is still inside it: that reader may pair
a half of the old entry with a half of whatever is installed next, and only
the interrupt sent by `pmdp_get_lockless_sync()` (tlb_remove_table_sync_one)
waits it out; a TLB flush need not reach it (seed 004: "to issue missing
interrupt if PAE").

A writer holding mmap_lock for write (anon collapse_huge_page(), v6.12) may
drop the pmd lock first: nobody else can install into a pmd of its mm until
it does, and Linux's tlb_remove_table_sync_one() comes right after the
unlock. Its debt is then due before its own next store to that pmd entry, or
its mmap_write_unlock().

This checker encodes a rule and its report says so ("rule: ..."): the torn
value it prevents differs from a value the entry held only in the high half
of a physical address, so it is only a wrong pointer on a machine with page
tables above 4 GiB. There (`[machine] highmem`, scenario torn_pmd_highpte)
the consequence is caught on its own: the `wild-pointer` checker sees the
reader follow that pointer.
"""

from __future__ import annotations

from typing import Any

from emu.check.base import Checker
from emu.kernel import steps as s


class LocklessSync(Checker):
    name = "lockless-sync"

    def attach(self, m) -> None:  # noqa: ANN001
        super().attach(m)
        self.window: dict[int, tuple[int, int]] = {}  # reader cpu -> (pmd pa, opened at step)
        self.owed: dict[int, dict[int, int]] = {}  # writer cpu -> {reader cpu: window step}
        self.owed_entry: dict[int, int] = {}  # writer cpu -> the pmd entry it cleared
        width = m.arch.level("pmd").entry_size
        self.active = m.arch.pmd_read_tears if m.arch.pmd_read_tears is not None \
            else width > m.arch.word_size
        self.width = width

    def on_kernel_step(self, cpu: int, op: Any) -> None:
        if not self.active:
            return
        t = type(op)
        k = self.m.kernel
        if t is s.Load and op.what.startswith("pmdp_get_lockless") and k.cpus[cpu].irq_off:
            entry = op.pa - op.pa % self.width
            self.window.setdefault(cpu, (entry, self.m.step))
        elif t is s.IrqEnable and k.cpus[cpu].irq_off == 0:
            self.window.pop(cpu, None)
        elif t in (s.Store, s.Xchg) and op.what.startswith("pmdp_collapse_flush"):
            entry = op.pa - op.pa % self.width
            for reader, (pa, since) in sorted(self.window.items()):
                if reader != cpu and pa == entry:
                    self.owed.setdefault(cpu, {})[reader] = since
                    self.owed_entry[cpu] = entry
        elif t is s.TlbRemoveTableSyncOne:
            self.owed.pop(cpu, None)  # the IPI waited for every IRQs-off window
            self.owed_entry.pop(cpu, None)
        elif t is s.SpinUnlock and self.owed.get(cpu) and not self._holds_mmap_write(cpu):
            self._settle(cpu, f"dropped {op.lock.name}")
        elif self.owed.get(cpu) and (
                (t is s.UpWrite and op.sem.name.startswith("mmap_lock"))
                or (t in (s.Store, s.Xchg) and op.pa - op.pa % self.width == self.owed_entry.get(cpu))):
            self._settle(cpu, "installed into that pmd" if t is not s.UpWrite
                         else "dropped mmap_lock")

    def _holds_mmap_write(self, cpu: int) -> bool:
        return any(isinstance(h, tuple) and h[1] == "write" and h[0].name.startswith("mmap_lock")
                   for h in self.m.kernel.cpus[cpu].held)

    def _settle(self, cpu: int, what: str) -> None:
        """The writer is past the point where the readers of the cleared pmd had to be
        waited out: fail if one is still in the window it opened before the clear."""
        for reader, since in sorted(self.owed[cpu].items()):
            if self.window.get(reader, (None, None))[1] == since:
                raise self.fail(
                    f"rule: cpu{cpu} cleared a pmd with pmdp_collapse_flush() and {what} "
                    f"while cpu{reader} was still inside the IRQs-off "
                    f"pmdp_get_lockless() window it opened at step {since}: "
                    "pmdp_get_lockless_sync() is missing. (This encodes the rule, not a "
                    "consequence seen: that reader may pair one half of the old pmd with "
                    "the other half of whatever is installed next, a table pointer that "
                    "only differs in its high half when tables live above 4 GiB: see "
                    "scenario torn_pmd_highpte.)", cpu=cpu)
        self.owed.pop(cpu, None)
        self.owed_entry.pop(cpu, None)
