"""Torn reads: a multi-load lockless read that yields a value never in memory.

Tracks every value each page-table entry has held since the run began
(kernel stores, whole or by halves, and walker A/D updates), and checks
each value a lockless reader concluded (`Observed` from
pmdp/ptep_get_lockless or a plain two-load read) against that history.
"""

from __future__ import annotations

from emu.check.base import Checker
from emu.physmem import FrameState, PhysMemError


class TornRead(Checker):
    name = "torn-read"

    def attach(self, m) -> None:  # noqa: ANN001
        super().attach(m)
        self.width = max(lv.entry_size for lv in m.arch.levels)
        self.history: dict[int, set[int]] = {}

    def _entry(self, pa: int) -> int:
        return pa - pa % self.width

    def _record(self, pa: int, size: int, value: int) -> None:
        m = self.m
        try:
            if m.frames.info(pa).state not in (FrameState.PGTABLE, FrameState.RCU_PENDING):
                return
        except PhysMemError:
            return
        bo = m.arch.byteorder
        entry = self._entry(pa)
        old = m.mem.read_int(entry, self.width, bo)
        raw = bytearray(old.to_bytes(self.width, bo))
        off = pa - entry
        raw[off: off + size] = value.to_bytes(size, bo)
        new = int.from_bytes(raw, bo)
        hist = self.history.setdefault(entry, set())
        hist.add(old)
        hist.add(new)

    def on_kernel_store(self, cpu, pa, size, value, what) -> None:  # noqa: ANN001
        if size <= self.width:
            self._record(pa, size, value)

    def on_walker_write(self, cpu, pa, size, value, level) -> None:  # noqa: ANN001
        self._record(pa, size, value)

    def on_lockless_value(self, cpu, pa, size, value, what) -> None:  # noqa: ANN001
        m = self.m
        current = m.mem.read_int(pa, size, m.arch.byteorder)
        seen = self.history.get(self._entry(pa), set())
        if value == current or value in seen:
            return
        held = ", ".join(f"{v:#x}" for v in sorted(seen | {current}))
        raise self.fail(f"cpu{cpu} {what} of the entry at {pa:#x} returned {value:#x}, "
                        f"a value it never held (it held {held})", cpu=cpu, frame=pa)
