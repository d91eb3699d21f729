"""GUP-fast: the lockless software page-table walker.

Models mm/gup.c's gup_fast as in v6.12 (v6.6's gup_pte_range() and
gup_huge_pmd() are the same steps under older names): IRQs off for the
whole walk (which holds off the IPI of tlb_remove_table_sync_one() and, on
arches freeing tables by RCU, the grace period), every pmd read with
`pmdp_get_lockless()`, the PTE table mapped from the pmd value already read
(`pte_offset_map(&pmd)`), the pte read with `ptep_get_lockless()`, then the
folio reference taken as a step of its own (`try_grab_folio_fast()`'s
atomic add, which fails on a folio whose count already reached zero), and
after it a recheck that neither the pmd nor the pte changed (70cbc3cc78a9),
else the reference is dropped and the walk stops. Other CPUs run between the
read, the grab and the recheck, as they can in Linux. It is the adversary
of retract and collapse. A pin holds the page, never the page table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emu.kernel import steps as s
from emu.kernel.folio import Folio

if TYPE_CHECKING:
    from emu.kernel import Kernel
    from emu.kernel.mm import MM


class GupMixin:
    def try_grab_folio_fast(self: Kernel, page_pa: int, refs: int,
                            pin: bool = False) -> s.KernelGen:
        """One atomic step: take `refs` references on the folio now holding page_pa.

        folio_ref_try_add(): fails (None) if the page is no folio's or its
        count is zero (being freed); the caller's pte/pmd recheck catches a
        page that was freed and reused meanwhile. `pin` (FOLL_PIN): the
        references are pins too (ptemu keeps the pin count apart rather than
        adding GUP_PIN_COUNTING_BIAS to the refcount).
        """
        def grab() -> Folio | None:
            folio = self.folio_of(page_pa)
            if folio is None or folio.refcount == 0:
                return None
            folio.get(refs)
            if pin:
                folio.pincount += refs
            return folio

        return (yield s.KernelAtomic(grab, f"try_grab_folio_fast {page_pa:#x} +{refs}"
                                           + (" FOLL_PIN" if pin else "")))

    def gup_put_folio(self: Kernel, folio: Folio, refs: int, pin: bool) -> None:
        """gup_put_folio() (v6.12): drop what try_grab_folio_fast took."""
        if pin:
            folio.pincount -= refs
        self.put_folio(folio, refs)

    def gup_fast(self: Kernel, mm: MM, start: int, nr_pages: int, write: bool,
                 pin: bool = False) -> s.KernelGen:
        """gup_fast() (v6.12; 6.6 lockless_pages_from_mm): pin up to nr_pages pages from start;
        returns [(page pa, folio)] pinned. `pin`: FOLL_PIN, whose walk is bracketed by
        the read of mm->write_protect_seq (emu.kernel.gup_pin).
        """
        a = self.arch
        ps = a.page_size
        pinned: list[tuple[int, Folio]] = []
        yield s.IrqDisable()
        addr = start
        end = start + nr_pages * ps
        while addr < end:
            pmd_pa = yield from self.pmd_offset_alloc(mm, addr, alloc=False)
            if pmd_pa is None:
                break
            pmd = yield from self.pmdp_get_lockless(pmd_pa)
            if a.entry_none("pmd", pmd) or not a.entry_present("pmd", pmd):
                break
            if a.pmd_trans_huge(pmd):
                ok = yield from self.gup_huge_pmd(pmd, pmd_pa, addr, end, write, pinned, pin)
                if not ok:
                    break
                addr = addr - addr % a.pmd_size + a.pmd_size
                continue
            if a.entry_bad("pmd", pmd):
                break
            next_pmd = min(end, addr - addr % a.pmd_size + a.pmd_size)
            ok = yield from self.gup_pte_range(pmd, pmd_pa, addr, next_pmd, write, pinned, pin)
            if not ok:
                break
            addr = next_pmd
        yield s.IrqEnable()
        return pinned

    def gup_pte_range(self: Kernel, pmd: int, pmd_pa: int, addr: int, end: int, write: bool,
                      pinned: list, pin: bool = False) -> s.KernelGen:
        """gup_fast_pte_range() (v6.12; 6.6 gup_pte_range): read, grab, recheck pmd and pte, per
        page; a FOLL_PIN of a read-only pte of an anon page that is not exclusive
        must unshare it first (gup_must_unshare), which only slow GUP can.
        """
        a = self.arch
        lv = a.level("pte")
        yield s.RcuReadLock()  # pte_offset_map(&pmd, addr): from the value, not the entry
        base = self.entry_addr("pte", a.table_pa("pmd", pmd), addr)
        ok = True
        for va in range(addr, end, a.page_size):
            ptep = base + (lv.index(va) - lv.index(addr)) * lv.entry_size
            pte = yield from self.ptep_get_lockless(ptep)
            if not a.pte_present(pte) or (write and not a.pte_write(pte)):
                ok = False
                break
            folio = yield from self.try_grab_folio_fast(a.pte_pa(pte), 1, pin)
            if folio is None:
                ok = False
                break
            pmd_now = yield from self.pmdp_get_lockless(pmd_pa)
            pte_now = yield from self.read_entry("pte", ptep, "gup_fast recheck pte")
            if pmd_now != pmd or pte_now != pte or \
                    (pin and not a.pte_write(pte) and self.gup_must_unshare(folio)):
                self.gup_put_folio(folio, 1, pin)
                ok = False
                break
            pinned.append((a.pte_pa(pte), folio))
        yield from self.gup_pte_unmap(base)
        return ok

    def gup_pte_unmap(self: Kernel, ptep: int) -> s.KernelGen:
        """pte_unmap() of gup_fast_pte_range (v6.12)."""
        yield from self.pte_unmap(ptep)

    def gup_must_unshare(self: Kernel, folio: Folio) -> bool:
        """gup_must_unshare() (v6.12), FOLL_PIN of a read-only pte: an anon page not
        exclusive to this mm must be unshared by a fault first."""
        return folio.kind == "anon" and not folio.anon_exclusive

    def gup_huge_pmd(self: Kernel, pmd: int, pmd_pa: int, addr: int, end: int, write: bool,
                     pinned: list, pin: bool = False) -> s.KernelGen:
        """gup_fast_pmd_leaf() (v6.12; 6.6 gup_huge_pmd): one grab for the pages, then the pmd
        recheck.
        """
        a = self.arch
        # pmd_access_permitted(): not a pmd pmdp_invalidate() made non-present (a split in
        # progress), nor a read-only one for a write
        if not a.pmd_huge_valid(pmd) or (write and not a.pmd_huge_write(pmd)):
            return False
        stop = min(end, addr - addr % a.pmd_size + a.pmd_size)
        pages = range(addr, stop, a.page_size)
        # one reference per page pinned, as try_grab_folio_fast(folio, refs) takes
        folio = yield from self.try_grab_folio_fast(a.pmd_huge_pa(pmd), len(pages), pin)
        if folio is None:
            return False
        pmd_now = yield from self.pmdp_get_lockless(pmd_pa)
        if pmd_now != pmd:
            self.gup_put_folio(folio, len(pages), pin)
            return False
        for va in pages:
            pinned.append((a.pmd_huge_pa(pmd) + va % a.pmd_size, folio))
        return True

    def unpin_user_pages(self: Kernel, pinned: list) -> None:
        """unpin_user_pages() (v6.12): drop each pin's reference."""
        for _pa, folio in pinned:
            self.put_folio(folio)
