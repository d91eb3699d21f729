"""Secondary-MMU use after an invalidation that never came.

A secondary MMU (emu/kernel/secondary_mmu.py) reads through translations
and cached PTE tables its own walk filled. The mmu notifier contract
(include/linux/mmu_notifier.h) is what keeps that safe: a page or table is
freed only after an invalidate_range_start() covering it made the device
drop what it cached, and no fill completes before the matching end. So a
secondary read whose page, or whose cached table, was freed after the walk
that filled the translation means a path changed or freed ptes without
telling the secondary MMU, or told it too early: the device is reading
memory that is no longer the process's (a consequence, not a rule: the
read itself touches a freed or reused frame).
"""

from __future__ import annotations

from typing import Any

from emu.check.base import Checker
from emu.check.uaf import frame_story
from emu.kernel import steps as s
from emu.physmem import FrameState, PhysMemError


class SecondaryStale(Checker):
    name = "secondary-mmu"

    def on_kernel_step(self, cpu: int, op: Any) -> None:
        if type(op) is not s.SecondaryLoad:
            return
        frames = self.m.frames
        try:
            fi = frames.info(op.pa)
        except PhysMemError:
            return
        freed = fi.state is FrameState.FREE or (fi.free_step is not None and fi.free_step > op.filled)
        if not freed and fi.subtables:
            off = op.pa % frames.frame_size
            starts = [o for o in fi.subtables if o <= off]
            freed = bool(starts) and fi.subtables[max(starts)] in ("freed", "free")
        if not freed:
            return
        what = "cached PTE table" if op.table is not None and \
            frames.frame_base(op.table) == frames.frame_base(op.pa) else "page"
        raise self.fail(
            f"{op.what} on cpu{cpu}: the secondary MMU read {op.pa:#x} through a translation "
            f"of {op.va:#x} its walk filled at step {op.filled}, but that {what} was freed "
            f"(at step {fi.free_step} by cpu{fi.free_cpu}) after the fill: no "
            "mmu_notifier_invalidate_range_start() dropped the translation before the free. "
            f"Frame history: {frame_story(fi)}",
            cpu=cpu, frame=frames.frame_base(op.pa))
