"""khugepaged and MADV_COLLAPSE for shmem/file: collapse, retract, install.

Models mm/khugepaged.c after seed 004 ("mm: free retracted page table by
RCU", Hugh Dickins, v2 2023-06-20) and seed 001 (Qi Zheng's
`pte_offset_map_rw_nolock()` conversion of `collapse_pte_mapped_thp()`):

- `retract_page_tables()` takes no mmap or VMA lock: i_mmap_rwsem for read,
  then per VMA `pmd_lock` + the ptl nested, repeating the skip checks under
  the ptl, `pmdp_collapse_flush`, `pmdp_get_lockless_sync`, and the table is
  freed by `pte_free_defer` once the locks are dropped.
- `collapse_pte_mapped_thp()` runs under `mmap_read_lock` in five steps: the
  VMA check first; step 1 verifies the PTEs under the ptl; step 2 re-maps
  with `_rw_nolock`, rechecks `pmd_same` under the ptl and clears every
  entry (a racing truncate must not find them again); step 3 fixes the
  refcount and counters; step 4 takes `pmd_lock` then the ptl nested,
  rechecks `pmd_same` (the table may have been reclaimed while the ptl was
  dropped), flushes, syncs and defers the free; step 5 installs the PMD.
  The abort path gives back what step 2 took.

Versions: retract_page_tables() is the same from v6.6 to v6.14. The
pmd_same rechecks of collapse_pte_mapped_thp() steps 2 and 4 came with the
`_rw_nolock` conversion in v6.13 (before it, v6.6-v6.12 took the ptl of
`pte_offset_map_nolock()` and rechecked nothing); `[kernel] version` selects
which (`rw_nolock_pmd_same`). collapse_file() follows v6.6-v6.12.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from arch.base import Access
from emu.kernel import steps as s
from emu.kernel.core import KernelBug
from emu.kernel.fault import Vmf
from emu.kernel.folio import Folio, PageCache
from emu.kernel.mmu_notifier import MMU_NOTIFY_CLEAR, MmuNotifierRange
from emu.kernel.version import RW_NOLOCK

if TYPE_CHECKING:
    from emu.kernel import Kernel
    from emu.kernel.mm import MM

SCAN_FAIL = 0
SCAN_SUCCEED = 1
SCAN_PMD_NULL = 2
SCAN_PMD_NONE = 3
SCAN_PMD_MAPPED = 4
SCAN_VMA_CHECK = 5
SCAN_PTE_NON_PRESENT = 6
SCAN_PTE_MAPPED_HUGEPAGE = 7
SCAN_PAGE_COMPOUND = 8
SCAN_TRUNCATED = 9
SCAN_PAGE_COUNT = 10
SCAN_PAGE_FILLED = 11

SCAN_NAMES = {v: k for k, v in dict(globals()).items() if k.startswith("SCAN_")}


class KhugepagedMixin:
    # ---- helpers ------------------------------------------------------------------
    def find_pmd_or_thp_or_none(self: Kernel, mm: MM, addr: int) -> s.KernelGen:
        """find_pmd_or_thp_or_none() (v6.6-v6.14): (result, pmd entry address) by a lockless walk.
        """
        pmd_pa = yield from self.pmd_offset_alloc(mm, addr, alloc=False)
        if pmd_pa is None:
            return SCAN_PMD_NULL, None
        pmdval = yield from self.pmdp_get_lockless(pmd_pa)
        a = self.arch
        if a.entry_none("pmd", pmdval):
            return SCAN_PMD_NONE, pmd_pa
        if a.pmd_trans_huge(pmdval):
            return SCAN_PMD_MAPPED, pmd_pa
        if a.entry_bad("pmd", pmdval) or not a.entry_present("pmd", pmdval):
            return SCAN_PMD_NULL, pmd_pa
        return SCAN_SUCCEED, pmd_pa

    def pmdp_collapse_flush(self: Kernel, haddr: int, pmd_pa: int,
                            mm: MM | None = None) -> s.KernelGen:
        """Clear a pmd that points to a page table and flush the range; returns the old pmd.

        mm/pgtable-generic.c (all modelled versions): pmdp_huge_get_and_clear(),
        then flush_tlb_range() of the VMA's mm (`mm`; None: every CPU); the
        old value is the get-and-clear's.
        """
        old = yield from self.get_and_clear_entry("pmd", pmd_pa,
                                                  "pmdp_collapse_flush: pmdp_huge_get_and_clear")
        yield s.TlbFlushRange(haddr, haddr + self.arch.pmd_size, mm)
        if self.arch.collapse_flush_serializes:
            # book3s64 hash: serialize_against_pte_lookup() IPIs every CPU and
            # waits for IRQs-off hash_page() walks still using the old table
            yield s.TlbRemoveTableSyncOne()
        return old

    def rw_nolock_pmd_same(self: Kernel, pmd_pa: int, pmdval: int) -> s.KernelGen:
        """The recheck a pte_offset_map_rw_nolock() caller owes before writing (6.13+).

        Before 6.13 these callers (collapse steps 2 and 4, arm's adjust_pte)
        used pte_offset_map_nolock() and made no recheck: True, with no read.
        """
        if self.version < RW_NOLOCK:
            return True
        now = yield from self.pmdp_get_lockless(pmd_pa)
        return now == pmdval

    def collapse_clear_pte(self: Kernel, ptep: int) -> s.KernelGen:
        """Step 2's pte_clear(): "must clear entry, or a racing truncate may re-remove it"."""
        yield from self.clear_entry("pte", ptep, "collapse_pte_mapped_thp: pte_clear")

    def retract_notifier_start(self: Kernel, rng: MmuNotifierRange) -> s.KernelGen:
        """retract_page_tables()'s mmu_notifier_invalidate_range_start() (seed 002 v2)."""
        yield from self.mmu_notifier_invalidate_range_start(rng)

    def retract_notifier_end(self: Kernel, rng: MmuNotifierRange) -> s.KernelGen:
        """retract_page_tables()'s mmu_notifier_invalidate_range_end() (seed 002 v2)."""
        yield from self.mmu_notifier_invalidate_range_end(rng)

    def retract_recheck_under_ptl(self: Kernel, vma) -> bool:  # noqa: ANN001
        """retract_page_tables()'s checks repeated under pmd_lock + ptl (v6.6+, seed 004;
        023f47a8250c first made them safe): may this VMA's table go? A COW fault's
        anon_vma_prepare() or UFFDIO_REGISTER may have come since the first look."""
        return not vma.anon_vma and not vma.uffd_wp

    # ---- retract_page_tables ---------------------------------------------------------
    def retract_page_tables(self: Kernel, cache: PageCache, pgoff: int) -> s.KernelGen:
        """retract_page_tables() (v6.6-v6.14, seed 004): no mmap lock; pmd_lock + ptl, checks
        repeated, flush, sync, pte_free_defer.
        """
        a = self.arch
        ps, pmd_size = a.page_size, a.pmd_size
        yield s.DownRead(cache.i_mmap_rwsem)
        for vma in list(cache.vmas):
            addr = vma.start + (pgoff - vma.pgoff) * ps
            if addr % pmd_size or addr < vma.start or addr + pmd_size > vma.end:
                continue
            if vma.anon_vma or vma.uffd_wp:
                continue
            mm = vma.mm  # i_mmap holds every process's VMAs of the file
            result, pmd_pa = yield from self.find_pmd_or_thp_or_none(mm, addr)
            if result != SCAN_SUCCEED:
                continue
            rng = MmuNotifierRange(mm, addr, addr + pmd_size, MMU_NOTIFY_CLEAR,
                                   "retract_page_tables")
            yield from self.retract_notifier_start(rng)
            pml = yield from self.pmd_lock(mm, pmd_pa, addr)
            pmdval = yield from self.read_entry("pmd", pmd_pa)
            if a.entry_none("pmd", pmdval) or a.pmd_trans_huge(pmdval):
                yield s.SpinUnlock(pml)
                yield from self.retract_notifier_end(rng)
                continue
            ptl = self.pte_lockptr(mm, pmdval)
            if ptl is not pml:
                yield s.SpinLock(ptl, nested=True)
            # Repeat the checks under ptl: no mmap_lock is held, so a racing
            # fault may have added an anon_vma or userfaultfd may have armed.
            success = False
            if self.retract_recheck_under_ptl(vma):
                pgt_pmd = yield from self.pmdp_collapse_flush(addr, pmd_pa, mm)
                yield from self.pmdp_get_lockless_sync()
                success = True
            if ptl is not pml:
                yield s.SpinUnlock(ptl)
            yield s.SpinUnlock(pml)
            yield from self.retract_notifier_end(rng)
            if success:
                self.mm_dec_nr_ptes(mm)
                yield from self.pte_free_defer(mm, a.table_pa("pmd", pgt_pmd))
        yield s.UpRead(cache.i_mmap_rwsem)

    def collapse_notifier_start(self: Kernel, rng: MmuNotifierRange) -> s.KernelGen:
        """collapse_pte_mapped_thp()'s mmu_notifier_invalidate_range_start(): after the step-1
        check, before step 2 clears the ptes (seed 004; v2 "moved mmu_notifier after step 1")."""
        yield from self.mmu_notifier_invalidate_range_start(rng)

    def collapse_notifier_end(self: Kernel, rng: MmuNotifierRange) -> s.KernelGen:
        """collapse_pte_mapped_thp()'s mmu_notifier_invalidate_range_end(): after step 4's
        pmdp_collapse_flush() and unlock, before pte_free_defer() (seed 004)."""
        yield from self.mmu_notifier_invalidate_range_end(rng)

    # ---- collapse_pte_mapped_thp ---------------------------------------------------------
    def collapse_pte_mapped_thp(self: Kernel, mm: MM, addr: int, install_pmd: bool) -> s.KernelGen:
        """collapse_pte_mapped_thp() (v6.13 with its pmd_same rechecks and the table kept mapped
        from step 2 to step 4; 6.6-6.12 without either, see rw_nolock_pmd_same).
        """
        a = self.arch
        ps, pmd_size = a.page_size, a.pmd_size
        haddr = addr - addr % pmd_size
        vma = mm.find_vma(haddr)
        # First check VMA found, in case page tables are being torn down.
        if vma is None or vma.file is None or not (vma.start <= haddr and haddr + pmd_size <= vma.end):
            return SCAN_VMA_CHECK
        result, pmd_pa = yield from self.find_pmd_or_thp_or_none(mm, haddr)
        if result == SCAN_PMD_MAPPED:
            return result
        if vma.uffd_wp:
            return SCAN_FAIL
        index = self.vma_index(vma, haddr)
        folio: Folio | None = vma.file.lookup(index)
        if folio is None or not folio.large or folio.index != index or not folio.in_cache:
            return SCAN_PAGE_COMPOUND
        # filemap_lock_folio(): the reference is taken with the lookup, then the
        # lock; a folio truncated meanwhile is no longer the file's
        folio.get()
        yield s.DownWrite(folio.lock)
        if not folio.in_cache:
            yield s.UpWrite(folio.lock)
            self.put_folio(folio)
            return SCAN_FAIL
        result, pmd_pa = yield from self.find_pmd_or_thp_or_none(mm, haddr)
        if result in (SCAN_PMD_NONE, SCAN_PMD_NULL):
            return (yield from self._collapse_install(mm, vma, haddr, folio, install_pmd))
        if result != SCAN_SUCCEED:
            return (yield from self._collapse_drop(folio, result))

        r = yield from self.pte_offset_map_lock(mm, pmd_pa, haddr)
        if r is None:
            return (yield from self._collapse_drop(folio, SCAN_FAIL))
        start_pte, ptl = r
        lv = a.level("pte")
        nr = pmd_size // ps
        # step 1: check all mapped PTEs are to the right huge page
        for i in range(nr):
            pte = yield from self.read_entry("pte", start_pte + i * lv.entry_size, "collapse step 1")
            if a.pte_none(pte):
                continue
            if not a.pte_present(pte) or a.pte_pa(pte) != folio.pa + i * ps:
                yield from self.pte_unmap_unlock(start_pte, ptl)
                return (yield from self._collapse_drop(folio, SCAN_FAIL))
        yield from self.pte_unmap_unlock(start_pte, ptl)
        rng = MmuNotifierRange(mm, haddr, haddr + pmd_size, MMU_NOTIFY_CLEAR,
                               "collapse_pte_mapped_thp")
        yield from self.collapse_notifier_start(rng)

        # step 2: clear page table and adjust rmap, after re-taking the ptl
        nr_ptes = 0
        r = yield from self.pte_offset_map_rw_nolock(mm, pmd_pa, haddr)
        if r is None:
            return (yield from self._collapse_abort(mm, folio, nr_ptes, None, None, SCAN_FAIL, rng))
        start_pte, pgt_pmd, ptl = r
        yield s.SpinLock(ptl)
        same = yield from self.rw_nolock_pmd_same(pmd_pa, pgt_pmd)
        if not same:
            return (yield from self._collapse_abort(mm, folio, nr_ptes, start_pte, ptl, SCAN_FAIL,
                                                        rng))
        for i in range(nr):
            ptep = start_pte + i * lv.entry_size
            pte = yield from self.read_entry("pte", ptep, "collapse step 2")
            if a.pte_none(pte):
                continue
            if not a.pte_present(pte):
                return (yield from self._collapse_abort(mm, folio, nr_ptes, start_pte, ptl,
                                                        SCAN_PTE_NON_PRESENT, rng))
            if a.pte_pa(pte) != folio.pa + i * ps:
                return (yield from self._collapse_abort(mm, folio, nr_ptes, start_pte, ptl, SCAN_FAIL,
                                                        rng))
            yield from self.collapse_clear_pte(ptep)
            folio.unmap()
            nr_ptes += 1
        # 6.13 (seed 001 v4: "move the pte_unmap() backward"): the table stays
        # mapped, under RCU, until step 4 is done with its ptl; 6.6-6.12 unmapped
        # it here and step 4 then locked the ptl of a table it had let go of.
        keep_mapped = self.version >= RW_NOLOCK
        if keep_mapped:
            yield s.SpinUnlock(ptl)
        else:
            yield from self.pte_unmap_unlock(start_pte, ptl)

        # step 3: set proper refcount and mm_counters
        if nr_ptes:
            folio.put(nr_ptes)
            mm.rss[self.mm_counter_kind(folio)] -= nr_ptes

        # step 4: remove the page table; the huge page lock keeps it empty,
        # but with the ptl dropped, a table can be reclaimed without mmap_lock
        # (MADV_DONTNEED's empty-table reclaim): recheck under both locks
        pml = yield from self.pmd_lock(mm, pmd_pa, haddr)
        if ptl is not pml:
            yield s.SpinLock(ptl, nested=True)
            same = yield from self.rw_nolock_pmd_same(pmd_pa, pgt_pmd)
            if not same:
                yield s.TlbFlushRange(0, 1 << self.arch.va_bits, mm)  # flush_tlb_mm()
                yield from self._collapse_step4_unlock(start_pte, ptl, pml, keep_mapped)
                yield from self.collapse_notifier_end(rng)
                return (yield from self._collapse_drop(folio, SCAN_FAIL))
        old = yield from self.pmdp_collapse_flush(haddr, pmd_pa, mm)
        yield from self.pmdp_get_lockless_sync()
        yield from self._collapse_step4_unlock(start_pte, ptl, pml, keep_mapped)
        yield from self.collapse_notifier_end(rng)
        if a.entry_none("pmd", old):
            # Linux would pte_free_defer(pmd_pgtable(none)): page 0. Name the
            # table the collapse believed it was removing, not frame 0.
            raise KernelBug(
                f"collapse_pte_mapped_thp step 4 cleared a pmd that was already none and "
                f"would free the table of a none pmd: the table at {a.table_pa('pmd', pgt_pmd):#x} "
                "it mapped in step 2 was detached while the ptl was dropped "
                "(a missing pmd_same() recheck)")
        self.mm_dec_nr_ptes(mm)
        yield from self.pte_free_defer(mm, a.table_pa("pmd", old))
        return (yield from self._collapse_install(mm, vma, haddr, folio, install_pmd))

    def _collapse_step4_unlock(self: Kernel, start_pte: int, ptl, pml,
                               mapped: bool) -> s.KernelGen:
        """Step 4's unlock: 6.13 pte_unmap_unlock(start_pte, ptl) then pml if it is another
        lock; 6.6-6.12 (table already unmapped) ptl if another lock, then pml.
        """
        if mapped:
            yield from self.pte_unmap_unlock(start_pte, ptl)
            if pml is not ptl:
                yield s.SpinUnlock(pml)
            return
        if ptl is not pml:
            yield s.SpinUnlock(ptl)
        yield s.SpinUnlock(pml)

    def _collapse_install(self: Kernel, mm: MM, vma, haddr: int, folio: Folio,
                          install_pmd: bool) -> s.KernelGen:
        """Step 5: install the PMD (set_huge_pmd) if asked; then drop the folio."""
        result = SCAN_SUCCEED
        if install_pmd:
            pmd_pa = yield from self.pmd_offset_alloc(mm, haddr, alloc=True)
            done = yield from self.do_set_pmd(Vmf(vma, haddr, Access.READ, pmd_pa), folio)
            result = SCAN_SUCCEED if done else SCAN_FAIL
        return (yield from self._collapse_drop(folio, result))

    def _collapse_abort(self: Kernel, mm: MM, folio: Folio, nr_ptes: int, start_pte: int | None,
                        ptl, result: int, rng: MmuNotifierRange) -> s.KernelGen:
        """collapse_pte_mapped_thp()'s abort label (v6.13): give back what step 2 took, unlock, drop
        the folio.
        """
        if nr_ptes:
            yield s.TlbFlushRange(0, 1 << self.arch.va_bits, mm)  # flush_tlb_mm()
            folio.put(nr_ptes)
            mm.rss[self.mm_counter_kind(folio)] -= nr_ptes
        if start_pte is not None:
            yield from self.pte_unmap_unlock(start_pte, ptl)
        yield from self.collapse_notifier_end(rng)
        return (yield from self._collapse_drop(folio, result))

    def _collapse_drop(self: Kernel, folio: Folio, result: int) -> s.KernelGen:
        """collapse_pte_mapped_thp()'s drop_folio label (v6.6-v6.14): unlock and put the folio."""
        yield s.UpWrite(folio.lock)
        self.put_folio(folio)
        yield s.Note(f"collapse_pte_mapped_thp: {SCAN_NAMES.get(result, result)}")
        return result

    # ---- collapse_file (the page-cache half) -----------------------------------------------
    def collapse_file(self: Kernel, cache: PageCache, index: int) -> s.KernelGen:
        """Replace the small folios of one PMD range with a huge one, then retract.

        Follows mm/khugepaged.c's collapse_file() as of v6.6-v6.12: every old
        folio is looked up with a reference, locked, checked to be still the
        file's at that index (truncate may have removed it: SCAN_TRUNCATED),
        unmapped (try_to_unmap) and checked for unexpected references (a GUP
        pin, a racing fault or truncate holding it: SCAN_PAGE_COUNT); the old
        folios stay in the page cache, locked, until the new folio replaces
        them all at once, so a racing fault or truncate sleeps on an old
        folio's lock and then finds it gone. Holes are rechecked at the end
        (SCAN_PAGE_FILLED). Any failure rolls back: the old folios are
        unlocked and stay the file's. Returns SCAN_PTE_MAPPED_HUGEPAGE on
        success so MADV_COLLAPSE goes on to collapse_pte_mapped_thp().
        """
        nr = self.arch.pmd_size // self.arch.page_size
        cur = cache.lookup(index)
        if cur is not None and cur.large:
            return SCAN_PTE_MAPPED_HUGEPAGE
        if index + nr > cache.size_pages:
            return SCAN_FAIL
        huge = self.new_folio(cache.kind, nr, f"{cache.kind} THP folio of {cache.name}")
        huge.index = index
        yield s.DownWrite(huge.lock)
        ps = self.arch.page_size
        locked: list[Folio] = []  # old folios: locked, with our lookup reference
        holes: list[int] = []
        result = SCAN_SUCCEED
        for i in range(nr):
            if index + i >= cache.size_pages:
                result = SCAN_TRUNCATED  # the file shrank under us
                break
            old = cache.lookup(index + i)
            if old is None:
                holes.append(i)  # shmem: a zero page; file: readahead would fill it
                continue
            old.get()  # xas_load + folio_try_get
            yield s.DownWrite(old.lock)
            if old.large:
                result = SCAN_PTE_MAPPED_HUGEPAGE if old.index == index else SCAN_PAGE_COMPOUND
            elif not old.in_cache or cache.lookup(index + i) is not old:
                result = SCAN_TRUNCATED  # folio_mapping(folio) != mapping
            else:
                # try_to_unmap(): no PTE may map the old page once it is copied
                yield from self.unmap_mapping_range(cache, index + i, index + i + 1,
                                                    even_cows=False)
                # the page cache's reference and ours, nothing else (Linux's
                # "ref_count != 3" also counts the LRU isolation ptemu lacks)
                if old.refcount != 2 or old.mapcount:
                    result = SCAN_PAGE_COUNT
            if result != SCAN_SUCCEED:
                yield s.UpWrite(old.lock)
                self.put_folio(old)
                break
            locked.append(old)
        if result == SCAN_SUCCEED and holes:
            # v6.6: a hole filled while the old folios were being isolated
            # (a racing fault) means this collapse would hide that page
            if any(cache.lookup(index + i) is not None for i in holes):
                result = SCAN_PAGE_FILLED
            else:
                for i in holes:  # XA_RETRY_ENTRY: a fault now waits on the new folio
                    cache.slots[index + i] = huge
        if result != SCAN_SUCCEED:
            # rollback: the old folios stay the file's; the new one goes away
            for i in holes:
                if cache.slots.get(index + i) is huge:
                    del cache.slots[index + i]
            for old in locked:
                yield s.UpWrite(old.lock)
                self.put_folio(old)
            yield s.UpWrite(huge.lock)
            self.free_folio(huge, "collapse_file rollback: new folio unused")
            yield s.Note(f"collapse_file: {SCAN_NAMES.get(result, result)}")
            return result
        for old in locked:  # the old folios are locked: copy them
            i = old.index - index
            self.mem.write(huge.pa + i * ps, self.mem.read(old.pa, ps))
        for i in range(nr):  # one multi-index store replaces them all
            cache.slots[index + i] = huge
        huge.in_cache = True
        huge.get()  # the page cache's reference
        for old in locked:
            old.in_cache = False
        yield from self.retract_page_tables(cache, index)
        yield s.UpWrite(huge.lock)
        for old in locked:  # the collapse has succeeded: free the old folios
            yield s.UpWrite(old.lock)
            self.put_folio(old, 2)  # the page cache's reference and ours
        return SCAN_PTE_MAPPED_HUGEPAGE

    # ---- entry points for services -----------------------------------------------------------
    def madvise_collapse(self: Kernel, mm: MM, start: int, end: int) -> s.KernelGen:
        """madvise_collapse() (v6.6-v6.12) on a shmem/file range (anon: madvise_collapse_anon):
        0, or a negative errno."""
        a = self.arch
        pmd_size = a.pmd_size
        yield s.DownRead(mm.mmap_lock)
        vma = mm.find_vma(start)
        if vma is not None and vma.kind == "anon" and end <= vma.end:
            yield s.UpRead(mm.mmap_lock)
            return (yield from self.madvise_collapse_anon(mm, start, end))
        if vma is None or vma.kind not in ("shmem", "file") or end > vma.end:
            yield s.UpRead(mm.mmap_lock)
            return -22
        yield s.UpRead(mm.mmap_lock)
        failed = 0
        haddr = -(-start // pmd_size) * pmd_size
        while haddr + pmd_size <= end:
            result = yield from self.collapse_file(vma.file, self.vma_index(vma, haddr))
            if result == SCAN_PTE_MAPPED_HUGEPAGE:
                yield s.DownRead(mm.mmap_lock)
                result = yield from self.collapse_pte_mapped_thp(mm, haddr, True)
                yield s.UpRead(mm.mmap_lock)
            if result not in (SCAN_SUCCEED, SCAN_PMD_MAPPED):
                failed += 1
            haddr += pmd_size
        return -11 if failed else 0  # -EAGAIN, as madvise_collapse() reports

    def khugepaged_scan_file(self: Kernel, mm: MM, addr: int) -> s.KernelGen:
        """One khugepaged pass (v6.6 hpage_collapse_scan_file -> collapse_file, then
        collapse_pte_mapped_thp without install).
        """
        vma = mm.find_vma(addr)
        if vma is not None and vma.kind == "anon":
            return (yield from self.khugepaged_scan_anon(mm, addr))
        if vma is None or vma.kind not in ("shmem", "file"):
            return -22
        haddr = addr - addr % self.arch.pmd_size
        result = yield from self.collapse_file(vma.file, self.vma_index(vma, haddr))
        now = vma.file.lookup(self.vma_index(vma, haddr))
        if result == SCAN_PTE_MAPPED_HUGEPAGE and now is not None and now.large:
            # Already huge in the page cache but still PTE-mapped here:
            # khugepaged collapses it under mmap_read_lock, without installing
            # the PMD (the next fault maps it).
            yield s.DownRead(mm.mmap_lock)
            result = yield from self.collapse_pte_mapped_thp(mm, haddr, False)
            yield s.UpRead(mm.mmap_lock)
        return 0 if result in (SCAN_SUCCEED, SCAN_PMD_MAPPED, SCAN_PMD_NONE) else -11
