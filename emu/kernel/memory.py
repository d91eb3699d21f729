"""Unmapping: zap_page_range, munmap and free_pgtables.

Versions: v6.12 throughout (each routine says so); the entry primitives the
zap uses (ptep/pmdp_get_and_clear) are the arch's for `[kernel] version`.
Models mm/memory.c's zap path (`zap_pte_range` under `pte_offset_map_lock`,
`zap_huge_pmd` (emu.kernel.huge_memory), a TLB flush before pages are released) and
mm/vma.c's munmap (v6.12): detach the VMA first, so lockless walkers that
start later find nothing, then zap, then `free_pgtables`: unlink the file
VMA from i_mmap under i_mmap_rwsem (write), then free the now-empty tables. Page tables of a detached range are freed through
`tlb_remove_table`: deferred by RCU where the arch frees tables by RCU, at
once after the IPI flush where it does not (arm 2-level).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emu.kernel import steps as s
from emu.kernel.folio import Folio
from emu.kernel.mmu_notifier import MMU_NOTIFY_CLEAR, MmuNotifierRange

if TYPE_CHECKING:
    from emu.kernel import Kernel
    from emu.kernel.mm import MM, VMA


class MemoryMixin:
    def mm_counter_kind(self: Kernel, folio: Folio) -> str:
        """mm_counter_file()/MM_ANONPAGES (v6.12): which rss counter a folio's mappings count in."""
        return "anon" if folio.kind == "anon" else ("shmem" if folio.kind == "shmem" else "file")

    def zap_page_range(self: Kernel, mm: MM, vma: VMA, start: int, end: int,
                       tlb: list[Folio] | None = None, even_cows: bool = True) -> s.KernelGen:
        """zap_page_range_single() -> unmap_page_range() (v6.12): remove every mapping in [start,
        end) of `vma`, inside an mmu notifier range; leaves the page tables.

        `tlb`: the caller's mmu_gather (munmap's, which spans the table frees
        too): the folios go there, to be put after its tlb_finish_mmu()
        flush, and no flush is made here. None: this zap is its own gather
        (zap_page_range_single), flushed before the pages are put.
        `even_cows` False (zap_details of unmap_mapping_range(even_cows=0),
        which try_to_unmap of a file folio amounts to): a private mapping's
        anon copies stay.
        """
        rng = MmuNotifierRange(mm, start, end, MMU_NOTIFY_CLEAR, "zap_page_range_single")
        yield from self.zap_notifier_start(rng)
        if even_cows:
            yield from self.unmap_page_range(mm, vma, start, end, tlb)
        else:
            yield from self.unmap_page_range(mm, vma, start, end, tlb, even_cows=False)
        yield from self.zap_notifier_end(rng)

    def zap_notifier_start(self: Kernel, rng: MmuNotifierRange) -> s.KernelGen:
        """zap_page_range_single()'s mmu_notifier_invalidate_range_start() (v6.12)."""
        yield from self.mmu_notifier_invalidate_range_start(rng)

    def zap_notifier_end(self: Kernel, rng: MmuNotifierRange) -> s.KernelGen:
        """zap_page_range_single()'s mmu_notifier_invalidate_range_end() (v6.12)."""
        yield from self.mmu_notifier_invalidate_range_end(rng)

    def unmap_page_range(self: Kernel, mm: MM, vma: VMA, start: int, end: int,
                         tlb: list[Folio] | None = None, even_cows: bool = True) -> s.KernelGen:
        """unmap_page_range() (v6.12): per pmd, zap a huge pmd or the ptes of its table."""
        a = self.arch
        pmd_size = a.pmd_size
        addr = start
        while addr < end:
            next_pmd = min(end, addr - addr % pmd_size + pmd_size)
            pmd_pa = yield from self.pmd_offset_alloc(mm, addr, alloc=False)
            if pmd_pa is not None:
                pmdval = yield from self.pmdp_get_lockless(pmd_pa)
                if a.pmd_trans_huge(pmdval) and next_pmd - addr != pmd_size:
                    # zap_pmd_range(): part of a THP goes: split it, zap its ptes
                    yield from self.split_huge_pmd(vma, pmd_pa, addr)
                    yield from self.zap_pte_range(mm, vma, pmd_pa, addr, next_pmd, tlb)
                elif a.pmd_trans_huge(pmdval):
                    yield from self.zap_huge_pmd(mm, vma, pmd_pa, addr, tlb)
                elif self.is_pmd_migration_entry(pmdval):
                    if next_pmd - addr == pmd_size:  # a part would need a split (not modelled)
                        yield from self.zap_huge_pmd(mm, vma, pmd_pa, addr, tlb)
                elif not a.entry_none("pmd", pmdval) and even_cows:
                    yield from self.zap_pte_range(mm, vma, pmd_pa, addr, next_pmd, tlb)
                elif not a.entry_none("pmd", pmdval):
                    yield from self.zap_pte_range(mm, vma, pmd_pa, addr, next_pmd, tlb,
                                                  even_cows=False)
            addr = next_pmd

    def zap_pte_range(self: Kernel, mm: MM, vma: VMA, pmd_pa: int, start: int,
                      end: int, tlb: list[Folio] | None = None,
                      even_cows: bool = True) -> s.KernelGen:
        """zap_pte_range() (v6.12, one pte per step rather than 6.9's batches): ptep_get_and_clear
        under the ptl, flush, put (into `tlb`, unflushed, if the caller gathers: a
        batch that never fills, so no force_flush). The flush covers the present ptes
        cleared (__tlb_adjust_range), none if none was (tlb_flush_mmu_tlbonly()).
        """
        a = self.arch
        r = yield from self.pte_offset_map_lock(mm, pmd_pa, start)
        if r is None:
            return
        ptep0, ptl = r
        ps = a.page_size
        lv = a.level("pte")
        released: list[Folio] = []
        # tlb_remove_tlb_entry() -> __tlb_adjust_range(): the gather's range spans
        # the present ptes cleared, and nothing else
        lo = hi = None
        for addr in range(start, end, ps):
            ptep = ptep0 + (lv.index(addr) - lv.index(start)) * lv.entry_size
            cur = yield from self.read_entry("pte", ptep, "zap_pte_range")
            if a.pte_none(cur):
                continue
            if not even_cows and a.pte_present(cur):
                kept = self.folio_of(a.pte_pa(cur))
                if kept is not None and kept.kind == "anon":
                    continue  # should_zap_folio(): a private copy is not the file's
            cur = yield from self.get_and_clear_entry("pte", ptep,
                                                      "zap_pte_range: ptep_get_and_clear", cur)
            if not a.pte_present(cur):
                yield from self.zap_nonpresent_pte(mm, cur)
                continue
            lo = addr if lo is None else lo
            hi = addr + ps
            folio = self.folio_of(a.pte_pa(cur))
            if folio is None:
                continue
            folio.unmap()
            mm.rss[self.mm_counter_kind(folio)] -= 1
            released.append(folio)
        yield from self.pte_unmap_unlock(ptep0, ptl)
        if tlb is not None:
            tlb.extend(released)
            return
        # tlb_finish_mmu(): flush before the pages can be reused; a gather that
        # cleared no present pte has an empty range and flushes nothing
        if lo is not None:
            yield s.TlbFlushRange(lo, hi, mm)
        for folio in released:
            self.put_folio(folio)

    def free_pgtables(self: Kernel, mm: MM, vma: VMA) -> s.KernelGen:
        """free_pgtables() for one detached, zapped VMA (mm/memory.c, v6.6 and v6.12).

        First unlink_file_vma(): the VMA leaves its file's i_mmap under
        i_mmap_rwsem held for write, so an rmap walker (retract_page_tables,
        truncate's unmap_mapping_range), which holds it for read, either
        finishes with the VMA first or never finds it. Only then
        free_pgd_range(): every PTE table the VMA used that no other VMA
        shares (floor/ceiling), pmd_clear() and pte_free_tlb() with no ptl or
        pmd lock taken.
        """
        # "Hide vma from rmap and truncate_pagecache before freeing pgtables"
        yield from self.unlink_file_vma(vma)
        yield from self.free_pgd_range(mm, vma)

    def unlink_file_vma(self: Kernel, vma: VMA) -> s.KernelGen:
        """unlink_file_vma() (v6.6; 6.10+ batches it): take `vma` out of its file's i_mmap
        under i_mmap_rwsem held for write."""
        if vma.file is not None:
            cache = vma.file
            yield s.DownWrite(cache.i_mmap_rwsem)
            if vma in cache.vmas:
                cache.vmas.remove(vma)
            yield s.UpWrite(cache.i_mmap_rwsem)

    def free_pgd_range(self: Kernel, mm: MM, vma: VMA) -> s.KernelGen:
        """free_pgd_range() -> free_pte_range() (v6.6-v6.14) over one detached VMA: each PTE
        table no other VMA shares goes by pmd_clear, mm_dec_nr_ptes, pte_free_tlb; no ptl
        or pmd lock is taken."""
        a = self.arch
        pmd_size = a.pmd_size
        for addr in range(vma.start - vma.start % pmd_size, vma.end, pmd_size):
            if mm.overlaps(addr, addr + pmd_size):
                continue  # another VMA still uses this table
            pmd_pa = yield from self.pmd_offset_alloc(mm, addr, alloc=False)
            if pmd_pa is None:
                continue
            pmdval = yield from self.read_entry("pmd", pmd_pa, "free_pgtables")
            if a.entry_none("pmd", pmdval) or a.pmd_trans_huge(pmdval) or a.is_swap_pmd(pmdval):
                continue
            table = a.table_pa("pmd", pmdval)
            yield from self.clear_entry("pmd", pmd_pa, "free_pgtables: pmd_clear")
            self.mm_dec_nr_ptes(mm)
            yield from self.flush_and_free_table(mm, addr, table)

    def flush_and_free_table(self: Kernel, mm: MM, addr: int, table: int,
                             rcu: bool = False) -> s.KernelGen:
        """tlb_finish_mmu(): flush every CPU's TLB for the range, then free the table.

        The flush comes first: on arches that free tables right after it (no
        RCU table freeing), its IPI is what waits out walks still in flight.
        `rcu` forces an RCU-deferred free whatever the arch's mmu_gather does.
        """
        yield s.TlbFlushRange(addr, addr + self.arch.pmd_size, mm)
        if rcu:
            yield from self.policy.free_defer(self, mm, table, "pte")
        else:
            yield from self.tlb_remove_table(mm, table)

    def tlb_remove_table(self: Kernel, mm: MM, table: int) -> s.KernelGen:
        """Free a detached PTE table the way the arch's mmu_gather does."""
        # Through the policy, not pte_free_defer(): mmu_gather is its own path
        # (and the pte_free_immediate variant is about khugepaged's callers).
        yield from self.policy.tlb_remove_table(self, mm, table, "pte")

    def do_munmap(self: Kernel, mm: MM, start: int, end: int) -> s.KernelGen:
        """munmap() (v6.12 vms_gather_munmap_vmas / vms_complete_munmap_vmas;
        v6.6 do_vmi_align_munmap is the same in what ptemu can see).

        Under mmap_write_lock: split the VMAs straddling the range's ends
        (emu.kernel.vma_split), detach the VMAs inside it from the mm (lockless walkers
        starting later find nothing). Then mmap_write_downgrade(), as munmap()
        has done since 4.20: the zap (unmap_vmas) and free_pgtables(), which
        unlinks each file VMA from i_mmap before freeing its tables, run under
        the read lock, concurrently with faults and khugepaged in the VMAs
        that remain.
        """
        yield s.DownWrite(mm.mmap_lock)
        yield from self.do_vmi_munmap(mm, start, end, unlock=True)
        yield s.UpRead(mm.mmap_lock)
        return 0

    def do_vmi_munmap(self: Kernel, mm: MM, start: int, end: int, unlock: bool) -> s.KernelGen:
        """do_vmi_munmap() (v6.12) with the mmap write lock held: split, detach, and with
        `unlock` downgrade to the read lock before the zap (munmap()); without, keep
        the write lock (mremap's unmap of the old range and of the destination).

        Text and stack VMAs go like any other: the program's next fetch or
        push there faults, and the fault finds no VMA (SIGSEGV).
        """
        # vms_gather_munmap_vmas(): the VMAs straddling start and end are split first
        victims = yield from self.split_range(mm, start, end)
        for v in victims:
            mm.vmas.remove(v)
        if unlock:
            yield s.DowngradeWrite(mm.mmap_lock)
        if not victims:
            return
        # vms_clear_ptes(): one mmu_gather over unmap_vmas() and free_pgtables();
        # tlb_finish_mmu() flushes once, then frees the gathered pages. Until
        # then nothing sent an IPI: a GUP-fast walk may read the pmd at any
        # time of the zap, and only the flush before the table free waits for it.
        tlb: list[Folio] = []
        for v in victims:
            yield from self.zap_page_range(mm, v, v.start, v.end, tlb)
        for v in victims:
            yield from self.free_pgtables(mm, v)
        if tlb:
            yield s.TlbFlushRange(min(v.start for v in victims), max(v.end for v in victims), mm)
        for folio in tlb:
            self.put_folio(folio)
