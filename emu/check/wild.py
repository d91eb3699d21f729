"""Reads through a wild page-table pointer: into a frame that is no page table.

A walker (the MMU, or a lockless kernel reader such as GUP-fast or the
pte_offset_map family) follows the table pointer an entry holds. When that
pointer is one no entry ever legitimately held (a pmd assembled from the
halves of two different values, on x86-PAE where a lockless pmd read is two
32-bit loads), the next read lands wherever the mixed address points: in a
hole or above RAM, or in a frame that holds data or was never allocated. That
read is the consequence this checker reports, naming the entry value the
reader followed.

Frames that are, or were, page tables are other checkers' business: a freed
one is a use after free (`use-after-free`), a reused one a stale pointer
(`stale-pointer`). Every page-table read of the correct model lands in a
table frame, so this checker is quiet on correct code.
"""

from __future__ import annotations

from emu.check.base import Checker
from emu.check.uaf import frame_story
from emu.physmem import FrameInfo, FrameState, PhysMemError


class WildPointer(Checker):
    name = "wild-pointer"

    def attach(self, m) -> None:  # noqa: ANN001
        super().attach(m)
        self.followed: dict[int, tuple[int, int, int, str]] = {}  # cpu -> (entry pa, value, step, what)
        self.root = m.arch.levels[0].name

    def _source(self, cpu: int) -> str:
        seen = self.followed.get(cpu)
        if seen is None:
            return ""
        pa, value, step, what = seen
        return (f" It followed the value {value:#x} that {what} of the entry at {pa:#x} "
                f"returned at step {step}.")

    def _not_a_table(self, fi: FrameInfo) -> str | None:
        if fi.state in (FrameState.PGTABLE, FrameState.RCU_PENDING):
            return None
        if fi.state is FrameState.FREE:
            # a freed table is use-after-free's to report; a frame never handed out is wild
            return None if fi.generation else "a frame never allocated"
        return f"a {fi.state.value} frame" + (f" ({fi.purpose})" if fi.purpose else "")

    def _check(self, who: str, cpu: int, pa: int) -> None:
        try:
            fi = self.m.frames.info(pa)
        except PhysMemError:
            return  # on_outside_ram reports it
        what = self._not_a_table(fi)
        if what is not None:
            raise self.fail(f"{who} on cpu{cpu} read {pa:#x} as a page-table entry, but "
                            f"that is {what}, never a page table of this mm.{self._source(cpu)} "
                            f"Frame history: {frame_story(fi) or 'none'}",
                            cpu=cpu, frame=self.m.frames.frame_base(pa))

    def on_lockless_value(self, cpu: int, pa: int, size: int, value: int, what: str) -> None:
        self.followed[cpu] = (pa, value, self.m.step, what)

    def on_walker_read(self, cpu: int, pa: int, size: int, value: int, level: str) -> None:
        if level != self.root:
            self._check(f"the page-table walker reading a {level} entry", cpu, pa)

    def on_kernel_load(self, cpu: int, pa: int, size: int, value: int, what: str) -> None:
        self._check(f"a kernel load ({what or 'load'})", cpu, pa)

    def on_outside_ram(self, cpu: int, pa: int, size: int, who: str) -> None:
        raise self.fail(f"{who} on cpu{cpu} read {pa:#x}, outside RAM "
                        f"({', '.join(f'{b:#x}-{b + n:#x}' for b, n in self.m.mem.banks)}): "
                        f"a wild table pointer.{self._source(cpu)}", cpu=cpu)

    def on_service_end(self, cpu: int, kind: str) -> None:
        self.followed.pop(cpu, None)
