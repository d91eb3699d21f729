"""Stores into a detached page table by a ptl holder: the rw_nolock contract.

`pte_offset_map_rw_nolock()` hands out a table without checking that the pmd
still points to it once the ptl is taken; its callers must recheck
`pmd_same()` (or `pte_same()`) under the ptl before relying on the table
(seed 001). A CPU holding a table's ptl that *writes* an entry of that table
after it was detached (its free already deferred: the frame, or its
fragment or half, is RCU-pending) skipped that recheck: the update is lost,
and whatever it stood for (a young bit, an uncached alias, a cleared entry
whose page is then released) is acted on as if it were live.

Reads are not flagged: Linux reads a detached table legally (the recheck
itself is a read: `handle_pte_fault()`'s `pte_same()`, do_swap_page()'s
`pte_unmap_same()` re-read a table that retract or empty-table reclaim may
have detached, see the mismatch and give up). What a wrongly trusted read
leads to is caught by its consequence: a store here, a page released twice
(kernel-bug), books that disagree with the tables (accounting).
"""

from __future__ import annotations

from emu.check.base import Checker
from emu.check.uaf import frame_story
from emu.kernel.sync import Spinlock
from emu.physmem import FrameState, PhysMemError


class DetachedTable(Checker):
    name = "detached-table"

    def on_kernel_store(self, cpu: int, pa: int, size: int, value: int, what: str) -> None:
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
            raise self.fail(f"cpu{cpu} wrote {pa:#x} ({what or 'store'}) holding {held[0].name}, "
                            "but that table was already detached (its free deferred): the "
                            "update is lost; a pte_offset_map_rw_nolock() caller skipped the "
                            f"pmd_same() recheck. Frame history: {frame_story(fi)}",
                            cpu=cpu, frame=frame)
