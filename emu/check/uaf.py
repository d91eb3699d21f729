"""Page-table (and page) use after free.

A hardware or software walker, a lockless kernel reader (GUP-fast, the
pte_offset_map family) or any kernel routine touching a frame that the
allocator considers free is a use after free. A frame whose free is only
deferred (RCU-pending) may still be *read* by CPUs that were protected
before the free (that is what pte_free_defer buys), and a walker may still
set A/D bits in it; but a kernel *store* into a detached, RCU-pending table
is a write nobody will ever see again: a lost update, reported too.
Taking a split ptlock is a store into its table page's ptdesc: taking the
lock of a table whose page is free is a use after free as well (that is why
pte_offset_map_lock() may only take it under rcu_read_lock()).
"""

from __future__ import annotations

from typing import Any

from emu.check.base import Checker
from emu.kernel import steps as s
from emu.physmem import FrameInfo, FrameState, PhysMemError


def frame_story(fi: FrameInfo, last: int = 4) -> str:
    """The last events of a frame's life, for messages."""
    events = fi.history[-last:]
    return "; ".join(f"step {e.step} cpu{e.cpu if e.cpu is not None else '-'}: {e.what}"
                     for e in events)


class UseAfterFree(Checker):
    name = "use-after-free"

    def _info(self, pa: int) -> FrameInfo | None:
        try:
            return self.m.frames.info(pa)
        except PhysMemError:
            return None

    def _fragment_freed(self, pa: int, fi: FrameInfo) -> str | None:
        """Where tables share a frame, the state of the sub-table holding `pa` if freed."""
        if not fi.subtables:
            return None
        off = pa % self.m.frames.frame_size
        starts = [o for o in fi.subtables if o <= off]
        if not starts:
            return None
        state = fi.subtables[max(starts)]
        return state if state in ("freed", "free") else None

    def _check_read(self, who: str, cpu: int, pa: int) -> None:
        fi = self._info(pa)
        if fi is None:
            return
        if fi.state is FrameState.FREE:
            self._freed(who, cpu, pa, fi)
        elif fi.state is FrameState.PGTABLE and self._fragment_freed(pa, fi):
            raise self.fail(f"{who} on cpu{cpu} touched {pa:#x}, in a page-table fragment "
                            f"that was freed (its page lives on for other tables). "
                            f"Frame history: {frame_story(fi)}",
                            cpu=cpu, frame=pa - pa % self.m.frames.frame_size)

    def _freed(self, who: str, cpu: int, pa: int, fi: FrameInfo) -> None:
        st = self.m.kernel.cpus[cpu]
        since = st.reader_since()
        prot = (f"; it has been protected since step {since}" if since is not None
                else "; it holds no RCU/IRQs-off protection")
        raise self.fail(f"{who} on cpu{cpu} touched {pa:#x} in a freed frame "
                        f"(freed at step {fi.free_step} by cpu{fi.free_cpu}){prot}. "
                        f"Frame history: {frame_story(fi)}",
                        cpu=cpu, frame=pa - pa % self.m.frames.frame_size)

    def on_walker_read(self, cpu: int, pa: int, size: int, value: int, level: str) -> None:
        self._check_read(f"the page-table walker reading a {level} entry", cpu, pa)

    def on_walker_write(self, cpu: int, pa: int, size: int, value: int, level: str) -> None:
        self._check_read(f"the walker's A/D-bit write to a {level} entry", cpu, pa)

    def on_kernel_load(self, cpu: int, pa: int, size: int, value: int, what: str) -> None:
        self._check_read(f"a kernel load ({what or 'load'})", cpu, pa)

    def on_kernel_store(self, cpu: int, pa: int, size: int, value: int, what: str) -> None:
        fi = self._info(pa)
        if fi is None:
            return
        if fi.state is FrameState.FREE:
            self._freed(f"a kernel store ({what or 'store'})", cpu, pa, fi)
        if fi.state is FrameState.RCU_PENDING and fi.level is not None:
            raise self.fail(f"cpu{cpu} stored to {pa:#x} ({what or 'store'}) in a {fi.level} "
                            f"table already detached and waiting for its grace period: "
                            f"the update is lost. Frame history: {frame_story(fi)}",
                            cpu=cpu, frame=pa - pa % self.m.frames.frame_size)

    def on_kernel_step(self, cpu: int, op: Any) -> None:
        if type(op) is s.SpinLock and op.lock.page is not None:
            fi = self._info(op.lock.page)
            if fi is not None and fi.state is FrameState.FREE:
                self._freed(f"spin_lock({op.lock.name}), a lock inside a page-table page,",
                            cpu, op.lock.page, fi)
