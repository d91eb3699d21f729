"""Use of a table pointer after its table was freed *and reused*.

`UseAfterFree` catches a walker or lockless reader touching a frame the
allocator holds as free. Once the frame has been handed out again (the
quarantine drained, another fault allocated it) the frame is no longer
free, yet a reader that loaded its pointer before the free still reads
it, now as someone else's table or page. This checker follows pointer
provenance: whenever a walker or a kernel routine reads a table entry that
points to a lower table, it remembers that table's frame generation; when
the same reader later touches that frame and the generation has changed,
the table it meant was freed and the frame reused under it.

Walkers forget their pointers when a new walk starts; kernel
routines when their service call ends. Entries are decoded with the arch's
Linux-view predicates; an entry the arch cannot decode is simply not
followed.
"""

from __future__ import annotations

from typing import Any

from emu.check.base import Checker
from emu.check.uaf import frame_story
from emu.physmem import FrameInfo, PhysMemError


class StalePointer(Checker):
    name = "stale-pointer"

    def attach(self, m: Any) -> None:
        super().attach(m)
        self.walk: dict[int, dict[int, tuple[int, int]]] = {}  # cpu -> pfn -> (gen, step)
        self.walk_id: dict[int, int | None] = {}  # cpu -> start step of the walk in flight
        self.kern: dict[int, dict[int, tuple[int, int]]] = {}
        levels = [lv.name for lv in m.arch.levels]
        self.root = levels[0]
        self.leaf = levels[-1]

    def _info(self, pa: int) -> FrameInfo | None:
        try:
            return self.m.frames.info(pa)
        except PhysMemError:
            return None

    def _child(self, level: str | None, pa: int, size: int, value: int) -> FrameInfo | None:
        """The frame of the lower table `value` points to, if it is a table pointer."""
        if level is None or level == self.leaf:
            return None
        a = self.m.arch
        try:
            if a.level(level).entry_size != size:
                return None
            if a.entry_none(level, value) or not a.entry_present(level, value) \
                    or a.entry_bad(level, value):
                return None
            if level == "pmd" and a.pmd_trans_huge(value):
                return None
            return self._info(a.table_pa(level, value))
        except (KeyError, ValueError, NotImplementedError):
            return None

    def _check(self, ptrs: dict[int, tuple[int, int]], who: str, cpu: int, pa: int) -> None:
        fi = self._info(pa)
        if fi is None:
            return
        seen = ptrs.get(fi.pfn)
        if seen is not None and seen[0] != fi.generation:
            raise self.fail(
                f"{who} on cpu{cpu} touched {pa:#x} through a pointer it loaded at step "
                f"{seen[1]}, when that frame held generation {seen[0]}; the table was freed "
                f"and the frame reused since (generation {fi.generation}, now "
                f"{fi.state.value}{' ' + fi.purpose if fi.purpose else ''}). "
                f"Frame history: {frame_story(fi, 6)}",
                cpu=cpu, frame=pa - pa % self.m.frames.frame_size)

    def _remember(self, ptrs: dict[int, tuple[int, int]], level: str | None, pa: int,
                  size: int, value: int) -> None:
        child = self._child(level, pa, size, value)
        if child is not None:
            ptrs[child.pfn] = (child.generation, self.m.step)

    # ---- walkers ---------------------------------------------------------------------
    def _walk_ptrs(self, cpu: int) -> dict[int, tuple[int, int]]:
        wid = self.m.kernel.cpus[cpu].walk_start_step
        if self.walk_id.get(cpu, -1) != wid:
            self.walk_id[cpu] = wid
            self.walk[cpu] = {}  # a new walk: pointers of the last one are gone
        return self.walk[cpu]

    def on_walker_read(self, cpu: int, pa: int, size: int, value: int, level: str) -> None:
        ptrs = self._walk_ptrs(cpu)
        if level == self.root:
            ptrs.clear()
        else:
            self._check(ptrs, f"the walker reading a {level} entry", cpu, pa)
        self._remember(ptrs, level, pa, size, value)

    def on_walker_write(self, cpu: int, pa: int, size: int, value: int, level: str) -> None:
        self._check(self._walk_ptrs(cpu), f"the walker's A/D write to a {level} entry",
                    cpu, pa)

    # ---- kernel routines ----------------------------------------------------------------
    def on_kernel_load(self, cpu: int, pa: int, size: int, value: int, what: str) -> None:
        ptrs = self.kern.setdefault(cpu, {})
        self._check(ptrs, f"a kernel load ({what or 'load'})", cpu, pa)
        fi = self._info(pa)
        if fi is not None:
            self._remember(ptrs, fi.level, pa, size, value)

    def on_lockless_value(self, cpu: int, pa: int, size: int, value: int, what: str) -> None:
        fi = self._info(pa)
        if fi is not None:
            self._remember(self.kern.setdefault(cpu, {}), fi.level, pa, size, value)

    def on_kernel_store(self, cpu: int, pa: int, size: int, value: int, what: str) -> None:
        self._check(self.kern.setdefault(cpu, {}), f"a kernel store ({what or 'store'})", cpu, pa)

    def on_service_end(self, cpu: int, kind: str) -> None:
        self.kern.pop(cpu, None)
