"""khugepaged and MADV_COLLAPSE for anonymous memory: collapse_huge_page().

Models mm/khugepaged.c's anon half as of v6.12 (each routine names its
version; v6.6 differs only in names ptemu does not show):

- `hpage_collapse_scan_pmd()` under mmap_read_lock: `pte_offset_map_lock`
  (NULL: SCAN_PMD_NULL), every pte present, anon, writable somewhere, and
  `is_refcount_suitable()` (a GUP pin: SCAN_PAGE_COUNT).
- `collapse_huge_page()`: drop mmap_lock, allocate the PMD folio, retake it
  for read and revalidate, then for write (no fault, munmap or mremap can
  run: only GUP-fast and hardware walkers still reach the table), revalidate
  and check the pmd again, `anon_vma_lock_write`, notifier start, under
  `pmd_lock` `pmdp_collapse_flush()` (the table leaves the tree), notifier
  end, then `tlb_remove_table_sync_one()` (2ba99c5e0881 "mm/khugepaged: fix
  GUP-fast interaction by sending IPI": the old table is about to be
  deposited, and a deposited table is freed with a plain `pte_free()` by
  zap_deposited_table, so no IRQs-off GUP-fast may still be reading it; on
  arches whose TLB flush is no IPI this is the only thing that waits for
  them), `__collapse_huge_page_isolate()` under the old table's ptl through
  a stack copy of the pmd (every page locked and its references rechecked:
  a pin taken before the flush aborts), the copy, then
  `__collapse_huge_page_copy_succeeded()` (each old pte cleared under the
  ptl, the old pages released), and under `pmd_lock`
  `pgtable_trans_huge_deposit()` of the old table and `set_pmd_at()`. A
  failure after the flush puts the old table back with `pmd_populate()`.

Not modelled: LRU isolation, swap-in of non-present ptes (they abort:
SCAN_PTE_NON_PRESENT), max_ptes_none/shared limits (Linux's defaults admit
every case ptemu builds), and the young-page requirement of khugepaged
(every pte counts as referenced). Per-VMA locks are not modelled: mmap_lock
for write already excludes every fault here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emu.kernel import steps as s
from emu.kernel.core import KernelBug
from emu.kernel.folio import Folio
from emu.kernel.khugepaged import (
    SCAN_FAIL,
    SCAN_NAMES,
    SCAN_PAGE_COUNT,
    SCAN_PMD_MAPPED,
    SCAN_PMD_NULL,
    SCAN_PTE_NON_PRESENT,
    SCAN_SUCCEED,
    SCAN_VMA_CHECK,
)
from emu.kernel.mmu_notifier import MMU_NOTIFY_CLEAR, MmuNotifierRange
from emu.physmem import PhysMemError

if TYPE_CHECKING:
    from emu.kernel import Kernel
    from emu.kernel.mm import MM, VMA

SCAN_PAGE_RO = 20
SCAN_PAGE_ANON = 21
SCAN_PAGE_LOCK = 22
SCAN_ALLOC_HUGE_PAGE_FAIL = 23
SCAN_PTE_UFFD_WP = 24
SCAN_NAMES.update({SCAN_PAGE_RO: "SCAN_PAGE_RO", SCAN_PAGE_ANON: "SCAN_PAGE_ANON",
                   SCAN_PAGE_LOCK: "SCAN_PAGE_LOCK",
                   SCAN_ALLOC_HUGE_PAGE_FAIL: "SCAN_ALLOC_HUGE_PAGE_FAIL",
                   SCAN_PTE_UFFD_WP: "SCAN_PTE_UFFD_WP"})


class KhugepagedAnonMixin:
    # ---- checks -----------------------------------------------------------------------
    def is_refcount_suitable(self: Kernel, folio: Folio) -> bool:
        """is_refcount_suitable() (v6.12) for an anon folio outside the swap cache: one
        reference per mapping and nothing else (a GUP pin, a racing grab: not suitable)."""
        return folio.refcount == folio.mapcount

    def hugepage_vma_revalidate(self: Kernel, mm: MM, addr: int, khugepaged: bool) -> VMA | int:
        """hugepage_vma_revalidate(expect_anon=true) (v6.12): the VMA, or a SCAN_ result."""
        vma = mm.find_vma(addr)
        pmd = self.arch.pmd_size
        if vma is None or not (vma.start <= addr and addr + pmd <= vma.end):
            return SCAN_VMA_CHECK
        if vma.kind != "anon" or not vma.anon_vma:
            return SCAN_PAGE_ANON
        if khugepaged and not vma.hugepage:  # TVA_ENFORCE_SYSFS, enabled=madvise
            return SCAN_VMA_CHECK
        return vma

    # ---- the scan ---------------------------------------------------------------------
    def hpage_collapse_scan_pmd(self: Kernel, mm: MM, vma: VMA, haddr: int,
                                khugepaged: bool) -> s.KernelGen:
        """hpage_collapse_scan_pmd() (v6.12), entered with mmap_read_lock held; returns
        (result, still holding mmap_read_lock)."""
        a = self.arch
        result, pmd_pa = yield from self.find_pmd_or_thp_or_none(mm, haddr)
        if result != SCAN_SUCCEED:
            return result, True
        r = yield from self.pte_offset_map_lock(mm, pmd_pa, haddr)
        if r is None:
            return SCAN_PMD_NULL, True
        start_pte, ptl = r
        lv = a.level("pte")
        writable = False
        result = SCAN_SUCCEED
        for i in range(lv.entries):
            pte = yield from self.read_entry("pte", start_pte + i * lv.entry_size,
                                             "hpage_collapse_scan_pmd")
            if a.pte_none(pte):
                continue
            if not a.pte_present(pte):
                result = SCAN_PTE_NON_PRESENT
                break
            writable = writable or a.pte_write(pte)
            folio = self.folio_of(a.pte_pa(pte))
            if folio is None or folio.kind != "anon":
                result = SCAN_PAGE_ANON
                break
            if folio.lock.is_locked():
                result = SCAN_PAGE_LOCK
                break
            if not self.is_refcount_suitable(folio):
                result = SCAN_PAGE_COUNT
                break
        if result == SCAN_SUCCEED and not writable:
            result = SCAN_PAGE_RO
        yield from self.pte_unmap_unlock(start_pte, ptl)
        if result != SCAN_SUCCEED:
            return result, True
        # collapse_huge_page() returns with mmap_lock released
        result = yield from self.collapse_huge_page(mm, haddr, khugepaged)
        return result, False

    # ---- collapse_huge_page -----------------------------------------------------------
    def collapse_huge_page(self: Kernel, mm: MM, haddr: int, khugepaged: bool) -> s.KernelGen:
        """collapse_huge_page() (v6.12): entered with mmap_read_lock held, returns with it
        released (see the module docstring for the steps)."""
        a = self.arch
        yield s.UpRead(mm.mmap_lock)
        nr = a.pmd_size // a.page_size
        try:
            folio = self.new_folio("anon", nr, f"anon THP collapsing {haddr:#x}")
        except PhysMemError:
            return SCAN_ALLOC_HUGE_PAGE_FAIL
        yield s.DownRead(mm.mmap_lock)
        vma = self.hugepage_vma_revalidate(mm, haddr, khugepaged)
        if isinstance(vma, int):
            yield s.UpRead(mm.mmap_lock)
            return self._collapse_anon_out(folio, vma)
        result, pmd_pa = yield from self.find_pmd_or_thp_or_none(mm, haddr)
        yield s.UpRead(mm.mmap_lock)
        if result != SCAN_SUCCEED:
            return self._collapse_anon_out(folio, result)
        # "Prevent all access to pagetables with the exception of gup_fast
        # later handled by the ptep_clear_flush and the VM handled by the
        # anon_vma lock + PG_lock."
        yield s.DownWrite(mm.mmap_lock)
        vma = self.hugepage_vma_revalidate(mm, haddr, khugepaged)
        if isinstance(vma, int):
            return (yield from self._collapse_anon_up_write(mm, folio, vma))
        result, now_pa = yield from self.find_pmd_or_thp_or_none(mm, haddr)  # check_pmd_still_valid
        if result == SCAN_SUCCEED and now_pa != pmd_pa:
            result = SCAN_FAIL
        if result != SCAN_SUCCEED:
            return (yield from self._collapse_anon_up_write(mm, folio, result))
        yield s.DownWrite(vma.anon_vma_lock)
        rng = MmuNotifierRange(mm, haddr, haddr + a.pmd_size, MMU_NOTIFY_CLEAR,
                               "collapse_huge_page")
        yield from self.mmu_notifier_invalidate_range_start(rng)
        pml = yield from self.pmd_lock(mm, pmd_pa, haddr)  # "probably unnecessary"
        # no huge and small TLB entries for one address; GUP-fast backs off
        # when it sees the pmd changed
        _pmd = yield from self.pmdp_collapse_flush(haddr, pmd_pa, mm)
        yield s.SpinUnlock(pml)
        yield from self.mmu_notifier_invalidate_range_end(rng)
        yield from self.collapse_gup_fast_sync()

        start_pte, ptl = yield from self.pte_offset_map_lock_value(mm, _pmd, haddr)
        result = yield from self.collapse_huge_page_isolate(vma, haddr, start_pte)
        yield s.SpinUnlock(ptl)
        if result[0] != SCAN_SUCCEED:
            yield from self.pte_unmap(start_pte)
            pml = yield from self.pmd_lock(mm, pmd_pa, haddr)
            cur = yield from self.read_entry("pmd", pmd_pa, "collapse_huge_page: BUG_ON(!pmd_none)")
            if not a.entry_none("pmd", cur):
                raise KernelBug(f"collapse_huge_page: pmd {pmd_pa:#x} was refilled ({cur:#x}) "
                                "under mmap_write_lock")
            # "We can only use set_pmd_at when establishing hugepmds": the
            # old table goes back with pmd_populate
            yield from self.set_entry("pmd", pmd_pa, _pmd, "collapse_huge_page: pmd_populate")
            yield s.SpinUnlock(pml)
            yield s.UpWrite(vma.anon_vma_lock)
            yield from self.release_pte_folios(result[1])
            return (yield from self._collapse_anon_up_write(mm, folio, result[0]))
        # "All pages are isolated and locked so anon_vma rmap can't run anymore."
        yield s.UpWrite(vma.anon_vma_lock)
        yield from self.collapse_huge_page_copy(mm, start_pte, folio, haddr, ptl, result[1])
        yield from self.pte_unmap(start_pte)

        entry = a.pmd_mkdirty(a.mk_pmd_huge(folio.pa, vma.prot))
        pml = yield from self.pmd_lock(mm, pmd_pa, haddr)
        cur = yield from self.read_entry("pmd", pmd_pa, "collapse_huge_page: BUG_ON(!pmd_none)")
        if not a.entry_none("pmd", cur):
            raise KernelBug(f"collapse_huge_page: pmd {pmd_pa:#x} was refilled ({cur:#x}) "
                            "under mmap_write_lock")
        folio.map()  # folio_add_new_anon_rmap(RMAP_EXCLUSIVE)
        folio.anon_exclusive = True  # RMAP_EXCLUSIVE: PageAnonExclusive, as fork and GUP read it
        yield from self.pgtable_trans_huge_deposit(mm, pmd_pa, haddr, a.table_pa("pmd", _pmd))
        yield from self.set_entry("pmd", pmd_pa, entry, "collapse_huge_page: set_pmd_at")
        yield s.SpinUnlock(pml)
        yield s.UpWrite(mm.mmap_lock)
        yield s.Note("collapse_huge_page: SCAN_SUCCEED")
        return SCAN_SUCCEED

    def collapse_gup_fast_sync(self: Kernel) -> s.KernelGen:
        """collapse_huge_page()'s tlb_remove_table_sync_one() after pmdp_collapse_flush()
        (2ba99c5e0881, v6.2; stable 5.10+): an IPI every CPU must take, so no IRQs-off
        GUP-fast walk of the detached table survives it."""
        yield s.TlbRemoveTableSyncOne()

    def pte_offset_map_lock_value(self: Kernel, mm: MM, pmdval: int, addr: int) -> s.KernelGen:
        """pte_offset_map_lock(mm, &_pmd, ...) on a stack copy of the pmd (v6.12): the copy
        cannot change, so the pmd_same recheck always holds. (ptep, ptl)."""
        yield s.RcuReadLock()
        ptep = self.entry_addr("pte", self.arch.table_pa("pmd", pmdval), addr)
        ptl = self.pte_lockptr(mm, pmdval)
        yield s.SpinLock(ptl)
        return ptep, ptl

    def collapse_huge_page_isolate(self: Kernel, vma: VMA, haddr: int,
                                     start_pte: int) -> s.KernelGen:
        """__collapse_huge_page_isolate() (v6.12; ptl held): every page present, anon, locked
        by us and with no reference but its mapping. (result, the folios locked)."""
        a = self.arch
        lv = a.level("pte")
        locked: list[Folio] = []
        writable = False
        for i in range(lv.entries):
            pte = yield from self.read_entry("pte", start_pte + i * lv.entry_size,
                                             "__collapse_huge_page_isolate")
            if a.pte_none(pte):
                if vma.uffd_missing:
                    return SCAN_FAIL, locked  # SCAN_EXCEED_NONE_PTE: userfaultfd_armed
                continue
            if not a.pte_present(pte):
                return SCAN_PTE_NON_PRESENT, locked
            folio = self.folio_of(a.pte_pa(pte))
            if folio is None or folio.kind != "anon":
                return SCAN_PAGE_ANON, locked
            got = yield from self.folio_trylock(folio)
            if not got:
                return SCAN_PAGE_LOCK, locked
            # "The page table that maps the page has been already unlinked from
            # the page table tree and this process cannot get an additional pin
            # on the page": a pin taken before that shows here
            if not self.isolate_refcount_suitable(folio):
                yield s.UpWrite(folio.lock)
                return SCAN_PAGE_COUNT, locked
            locked.append(folio)
            writable = writable or a.pte_write(pte)
        if not writable:
            return SCAN_PAGE_RO, locked
        return SCAN_SUCCEED, locked

    def isolate_refcount_suitable(self: Kernel, folio: Folio) -> bool:
        """__collapse_huge_page_isolate()'s is_refcount_suitable() check (v6.12)."""
        return self.is_refcount_suitable(folio)

    def release_pte_folios(self: Kernel, locked: list[Folio]) -> s.KernelGen:
        """release_pte_pages() (v6.12): unlock the folios isolated so far."""
        for folio in locked:
            yield s.UpWrite(folio.lock)

    def collapse_huge_page_copy(self: Kernel, mm: MM, start_pte: int, folio: Folio,
                                  haddr: int, ptl, locked: list[Folio]) -> s.KernelGen:  # noqa: ANN001
        """__collapse_huge_page_copy() + _copy_succeeded() (v6.12): copy each mapped page (a
        none pte leaves the new page's zeroes), then per pte under the ptl ptep_clear and
        rmap removal, the old pages released; none ptes are counted as the huge page's."""
        a = self.arch
        lv = a.level("pte")
        ps = a.page_size
        ptes = []
        for i in range(lv.entries):
            pte = yield from self.read_entry("pte", start_pte + i * lv.entry_size,
                                             "__collapse_huge_page_copy")
            ptes.append(pte)
            if a.pte_none(pte):
                continue
            src, dst = a.pte_pa(pte), folio.pa + i * ps
            yield s.KernelAtomic(lambda src=src, dst=dst: self.mem.write(dst, self.mem.read(src, ps)),
                                 f"copy_mc_user_highpage {src:#x} -> {dst:#x}")
        for folio_old in locked:  # release_pte_folio(): unlock (and LRU putback)
            yield s.UpWrite(folio_old.lock)
        for i, pte in enumerate(ptes):
            if a.pte_none(pte):
                mm.rss["anon"] += 1
                continue
            old = self.folio_of(a.pte_pa(pte))
            yield s.SpinLock(ptl)
            yield from self.clear_entry("pte", start_pte + i * lv.entry_size,
                                        "__collapse_huge_page_copy_succeeded: ptep_clear")
            old.unmap()
            yield s.SpinUnlock(ptl)
            self.put_folio(old)  # free_page_and_swap_cache()

    def _collapse_anon_up_write(self: Kernel, mm: MM, folio: Folio, result: int) -> s.KernelGen:
        """collapse_huge_page()'s out_up_write label (v6.12)."""
        yield s.UpWrite(mm.mmap_lock)
        return self._collapse_anon_out(folio, result)

    def _collapse_anon_out(self: Kernel, folio: Folio, result: int) -> int:
        """collapse_huge_page()'s out_nolock label (v6.12): the unused folio goes."""
        self.free_folio(folio, "collapse_huge_page: new folio unused")
        return result

    # ---- entry points -----------------------------------------------------------------
    def madvise_collapse_anon(self: Kernel, mm: MM, start: int, end: int) -> s.KernelGen:
        """madvise_collapse() (v6.12) over an anon range: per aligned PMD, the scan and the
        collapse (no sysfs check, no young-page requirement); 0, or -EAGAIN if any failed."""
        pmd = self.arch.pmd_size
        haddr = -(-start // pmd) * pmd
        failed = 0
        while haddr + pmd <= end:
            yield s.DownRead(mm.mmap_lock)
            vma = self.hugepage_vma_revalidate(mm, haddr, False)
            if isinstance(vma, int):
                yield s.UpRead(mm.mmap_lock)
                result = vma
            else:
                result, locked = yield from self.hpage_collapse_scan_pmd(mm, vma, haddr, False)
                if locked:
                    yield s.UpRead(mm.mmap_lock)
            yield s.Note(f"madvise_collapse {haddr:#x}: {SCAN_NAMES.get(result, result)}")
            if result not in (SCAN_SUCCEED, SCAN_PMD_MAPPED):
                failed += 1
            haddr += pmd
        return -11 if failed else 0

    def khugepaged_scan_anon(self: Kernel, mm: MM, addr: int) -> s.KernelGen:
        """One khugepaged_scan_mm_slot() visit (v6.12) of the anon PMD range at addr: under
        mmap_read_lock, VM_HUGEPAGE required, then hpage_collapse_scan_pmd()."""
        haddr = addr - addr % self.arch.pmd_size
        yield s.DownRead(mm.mmap_lock)
        vma = self.hugepage_vma_revalidate(mm, haddr, True)
        if isinstance(vma, int):
            yield s.UpRead(mm.mmap_lock)
            return -22 if vma == SCAN_VMA_CHECK else -11
        result, locked = yield from self.hpage_collapse_scan_pmd(mm, vma, haddr, True)
        if locked:
            yield s.UpRead(mm.mmap_lock)
        yield s.Note(f"khugepaged {haddr:#x}: {SCAN_NAMES.get(result, result)}")
        return 0 if result in (SCAN_SUCCEED, SCAN_PMD_MAPPED) else -11
