"""Double free of a page-table frame, caught before the allocator sees it.

The allocator refuses a second free of a frame (a `PhysMemError` the
machine turns into a "double-free" violation, for any frame). For table
frames this checker speaks first, when the kernel model releases the table,
with the frame's whole life in the message: who allocated it, who freed it
first and how (at once, or after a grace period), and who frees it again.
"""

from __future__ import annotations

from emu.check.base import Checker
from emu.check.uaf import frame_story
from emu.physmem import FrameState, PhysMemError


class DoubleFree(Checker):
    name = "double-free"

    def on_table_free(self, cpu: int | None, pa: int, size: int, deferred: bool) -> None:
        try:
            fi = self.m.frames.info(pa)
        except PhysMemError:
            return
        if fi.state is FrameState.FREE:
            how = "after a grace period" if deferred else "at once"
            raise self.fail(
                f"cpu{cpu if cpu is not None else '-'} frees the table frame {pa:#x} ({how}), "
                f"which was already freed at step {fi.free_step} by "
                f"cpu{fi.free_cpu if fi.free_cpu is not None else '-'}. "
                f"Frame history: {frame_story(fi, 6)}",
                cpu=cpu, frame=pa - pa % self.m.frames.frame_size)
