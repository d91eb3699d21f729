"""Locked access to a detached page table: the rw_nolock contract.

`pte_offset_map_rw_nolock()` hands out a table without checking that the pmd
still points to it once the ptl is taken; its callers must recheck
`pmd_same()` (or `pte_same()`) under the ptl before relying on the table
(seed 001). A CPU holding a table's ptl that reads or writes an entry of that
table after it was detached (its free already deferred: the frame, or its
fragment, is RCU-pending) skipped that recheck: correct code gives up as
soon as the recheck fails and never touches the table again.
"""

from __future__ import annotations

from emu.check.base import Checker
from emu.check.uaf import frame_story
from emu.kernel.sync import Spinlock
from emu.physmem import FrameState, PhysMemError

# Loads that are themselves the pte_same() recheck under the ptl (v6.12
# handle_pte_fault: "the pte entry is checked under ptl with pte_same"):
# reading the entry once more to compare it is the contract, not a breach;
# on a detached table the value differs and the caller gives up.
PTE_SAME_RECHECKS = frozenset({"pte_unmap_same", "pte_same"})


class DetachedTable(Checker):
    name = "detached-table"

    def _check(self, cpu: int, pa: int, what: str, verb: str) -> None:
        if verb == "read" and what in PTE_SAME_RECHECKS:
            return
        m = self.m
        try:
            fi = m.frames.info(pa)
        except PhysMemError:
            return
        frame = m.frames.frame_base(pa)
        pending = fi.state is FrameState.RCU_PENDING
        if not pending and fi.subtables:
            off = pa - frame
            starts = [o for o in fi.subtables if o <= off]
            pending = bool(starts) and fi.subtables[max(starts)] == "pending"
        if not pending:
            return
        held = [h for h in m.kernel.cpus[cpu].held
                if isinstance(h, Spinlock) and h.page is not None
                and m.frames.frame_base(h.page) == frame]
        if held:
            raise self.fail(f"cpu{cpu} {verb} {pa:#x} ({what}) holding {held[0].name}, but that "
                            "table was already detached (its free deferred): a "
                            "pte_offset_map_rw_nolock() caller skipped the pmd_same() recheck. "
                            f"Frame history: {frame_story(fi)}", cpu=cpu, frame=frame)

    def on_kernel_load(self, cpu: int, pa: int, size: int, value: int, what: str) -> None:
        self._check(cpu, pa, what or "load", "read")

    def on_kernel_store(self, cpu: int, pa: int, size: int, value: int, what: str) -> None:
        self._check(cpu, pa, what or "store", "wrote")
