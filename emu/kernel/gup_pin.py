"""Long-term GUP pins: pin_user_pages_fast() and the pins a caller holds.

Models mm/gup.c's FOLL_PIN fast path as of v6.12 (the same steps since
v5.11's 57efa1fe5957 "mm/gup: prevent gup_fast from racing with COW during
fork"): MMF_HAS_PINNED is set first, then `raw_read_seqcount` of
`mm->write_protect_seq` (odd: fork is write-protecting, give up), the
lockless walk of emu.kernel.gup with every reference a pin, and
`read_seqcount_retry`: if fork ran meanwhile, every pin is dropped and the
call pins nothing (Linux would go on in slow GUP, under mmap_lock; ptemu
returns what the fast path got).

The pins stay with the calling vCPU, as a driver keeps pages pinned for
DMA, until it unpins them or exits. Each `Pin` remembers where the page
was mapped, so the GUP pin oracle (emu.check.gup_pin) can tell when the
process's mapping and the pinned page part.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from emu.kernel import steps as s

if TYPE_CHECKING:
    from emu.kernel import Kernel
    from emu.kernel.folio import Folio
    from emu.kernel.mm import MM


@dataclass(eq=False)
class Pin:
    """One pinned page, as the pinner's tables mapped it when it was pinned."""

    mm: MM
    va: int
    pa: int  # the pinned page
    folio: Folio
    pmd_pa: int | None  # the pmd entry mapping va (None: unknown)
    ptep: int | None  # the pte entry mapping va (None: a huge pmd mapped it)
    table: int | None  # the PTE table holding ptep
    # the mapping was torn down (pte or pmd cleared) while pinned: the
    # process gave the range up, a later fault there is a new page
    detached: bool = False
    # the vCPU that cleared the pte under its ptl and may yet set it again
    # (wp_page_copy's ptep_clear_flush + set_pte_at); None: not cleared
    cleared_by: int | None = None


class GupPinMixin:
    def write_protect_seq_read(self: Kernel, mm: MM) -> s.KernelGen:
        """raw_read_seqcount(&mm->write_protect_seq): one read."""
        return (yield s.KernelAtomic(lambda: mm.write_protect_seq,
                                     f"raw_read_seqcount({mm.name}.write_protect_seq)"))

    def write_protect_seq_retry(self: Kernel, mm: MM, seq: int) -> s.KernelGen:
        """read_seqcount_retry(&mm->write_protect_seq, seq): did a fork run meanwhile?"""
        return (yield s.KernelAtomic(lambda: mm.write_protect_seq != seq,
                                     f"read_seqcount_retry({mm.name}.write_protect_seq)"))

    def pin_user_pages_fast(self: Kernel, mm: MM, start: int, nr_pages: int,
                            write: bool) -> s.KernelGen:
        """pin_user_pages_fast() (v6.12 gup_fast_fallback, fast part, FOLL_PIN |
        FOLL_LONGTERM): returns [(page pa, folio)] pinned."""
        mm.has_pinned = True  # mm_set_has_pinned_flag(), before the walk
        seq = yield from self.write_protect_seq_read(mm)
        if seq & 1:
            yield s.Note("pin_user_pages_fast: fork in progress (write_protect_seq odd)")
            return []
        pinned = yield from self.gup_fast(mm, start, nr_pages, write, pin=True)
        retry = yield from self.write_protect_seq_retry(mm, seq)
        if retry:
            self.unpin_pinned(pinned)
            yield s.Note("pin_user_pages_fast: raced with fork (read_seqcount_retry)")
            return []
        return pinned

    def unpin_pinned(self: Kernel, pinned: list) -> None:
        """gup_fast_unpin_user_pages() / unpin_user_pages() (v6.12) of FOLL_PIN pins."""
        for _pa, folio in pinned:
            self.gup_put_folio(folio, 1, True)

    def hold_pins(self: Kernel, cpu: int, mm: MM, start: int, pinned: list) -> None:
        """Keep `pinned` for vCPU `cpu`, each with where it was mapped."""
        ps = self.arch.page_size
        held = self.pins.setdefault(cpu, [])
        for i, (pa, folio) in enumerate(pinned):
            va = start + i * ps
            pmd_pa, ptep, table = self.pin_site(mm, va)
            held.append(Pin(mm, va, pa, folio, pmd_pa, ptep, table))

    def pin_site(self: Kernel, mm: MM, va: int) -> tuple[int | None, int | None, int | None]:
        """(pmd entry, pte entry, PTE table) mapping va in mm now, read outside the schedule."""
        a = self.arch
        table = mm.root
        for name in self.upper_levels():
            val = self.read_entry_now(self.entry_addr(name, table, va), a.level(name).entry_size)
            if a.entry_none(name, val) or not a.entry_present(name, val):
                return None, None, None
            table = a.table_pa(name, val)
        pmd_pa = self.entry_addr("pmd", table, va)
        pmd = self.read_entry_now(pmd_pa, a.level("pmd").entry_size)
        if a.entry_none("pmd", pmd) or a.pmd_trans_huge(pmd):
            return pmd_pa, None, None
        pte_table = a.table_pa("pmd", pmd)
        return pmd_pa, self.entry_addr("pte", pte_table, va), pte_table

    def release_pins(self: Kernel, cpu: int) -> int:
        """unpin_user_pages() of everything vCPU `cpu` holds; how many there were."""
        held = self.pins.pop(cpu, [])
        self.unpin_pinned([(p.pa, p.folio) for p in held])
        return len(held)
