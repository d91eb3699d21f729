"""The GUP pin oracle: a pinned page must stay the page its process maps.

A FOLL_PIN pin (pin_user_pages) promises coherence: a device doing DMA
through the pinned page and the process touching the same address see the
same memory. The consequence of getting fork/COW wrong is that they part:
the pinner's pte is switched to another page (a COW copy after fork shared
the pinned page) while the pin is held. This checker watches every kernel
store to the pmd and pte entries of each held pin (emu.kernel.gup_pin.Pin)
and reports:

- the pte mapping the pinned address now maps a different page, with no
  unmapping in between (a zap, munmap or retract clearing the entry and
  dropping the ptl, or clearing its pmd, is the process giving the range
  up: later faults there are new pages, not a broken pin; a clear and a set
  by one CPU under one ptl is a replacement, as wp_page_copy makes);
- the PTE table holding the pinned mapping freed while its pmd still
  pointed to it and the pin was held.

A GUP-fast walk that reads a table freed under it is the use-after-free
checker's; this one is about what a pin outlives. Quiet on correct code:
Linux never replaces an exclusive pinned anon page (fork copies it,
do_wp_page reuses it) and clears a mapping before freeing its table.
"""

from __future__ import annotations

from emu.check.base import Checker
from emu.kernel.steps import SpinUnlock


class GupPinLost(Checker):
    name = "gup-pin"

    def _entry_after(self, entry: int, esize: int, pa: int, size: int, value: int) -> int:
        """The entry at `entry` once a store of `value` to [pa, pa+size) lands."""
        a = self.m.arch
        raw = bytearray(self.m.mem.read(entry, esize))
        lo, hi = max(pa, entry), min(pa + size, entry + esize)
        data = value.to_bytes(size, a.byteorder)
        raw[lo - entry: hi - entry] = data[lo - pa: hi - pa]
        return int.from_bytes(bytes(raw), a.byteorder)

    def on_kernel_store(self, cpu: int, pa: int, size: int, value: int, what: str) -> None:
        pins = self.m.kernel.pins
        if not pins:
            return
        a = self.m.arch
        psize, esize = a.level("pmd").entry_size, a.level("pte").entry_size
        for holder, held in pins.items():
            for pin in held:
                if pin.detached:
                    continue
                if pin.pmd_pa is not None and pin.pmd_pa < pa + size and pa < pin.pmd_pa + psize:
                    pmd = self._entry_after(pin.pmd_pa, psize, pa, size, value)
                    if pin.table is None or a.entry_none("pmd", pmd) or a.pmd_trans_huge(pmd) \
                            or a.table_pa("pmd", pmd) != pin.table:
                        pin.detached = True
                    continue
                if pin.ptep is None or not (pin.ptep < pa + size and pa < pin.ptep + esize):
                    continue
                pte = self._entry_after(pin.ptep, esize, pa, size, value)
                if a.pte_none(pte) or not a.pte_present(pte):
                    # a zap, unless the same CPU sets it again before it lets the ptl go
                    pin.cleared_by = cpu
                    continue
                now = a.pte_pa(pte)
                if now == pin.pa - pin.pa % a.page_size:
                    pin.cleared_by = None  # set again to the same page (mprotect's commit)
                    continue
                raise self.fail(
                    f"pinned page lost: cpu{holder} holds a FOLL_PIN pin on page {pin.pa:#x}, "
                    f"mapped at {pin.va:#x} in process {pin.mm.name}, and cpu{cpu}'s {what} "
                    f"now maps {pin.va:#x} to page {now:#x}: DMA through the pin and the "
                    "process no longer share memory (a COW copy of a page fork shared "
                    "while it was pinned)", cpu, pin.pa, va=pin.va, holder=holder)

    def on_kernel_step(self, cpu: int, op: object) -> None:
        pins = self.m.kernel.pins
        if not pins or not isinstance(op, SpinUnlock):
            return
        for held in pins.values():
            for pin in held:
                if pin.cleared_by == cpu:
                    pin.detached = True  # cleared and unlocked: the process unmapped it

    def on_table_free(self, cpu: int | None, pa: int, size: int, deferred: bool) -> None:
        nbytes = self.m.arch.level("pte").table_bytes
        for holder, held in self.m.kernel.pins.items():
            for pin in held:
                if not pin.detached and pin.table is not None and size > 0 \
                        and pin.table < pa + size and pa < pin.table + nbytes:
                    raise self.fail(
                        f"pinned mapping's table freed: the PTE table {pin.table:#x} mapping "
                        f"page {pin.pa:#x} at {pin.va:#x} (pinned by cpu{holder}) was freed "
                        "while its pmd still pointed to it", cpu, pin.table, va=pin.va)
