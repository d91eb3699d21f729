"""MADV_DONTNEED with empty PTE table reclaim (mm/pt_reclaim.c, v6.14).

Qi Zheng's follow-up to seed 001 ("This also a preparation for reclaiming
the empty user PTE page table pages"): after zapping a range under
`mmap_read_lock`, a PTE table left empty is removed and freed. Only the
read side of mmap_lock is held, so `pte_offset_map_rw_nolock()` users such
as arm's `adjust_pte()` can be holding the table: they must recheck
`pmd_same()` under the ptl. The table is freed through the arch's
mmu_gather path after the TLB flush (RCU-deferred where the arch frees
tables by RCU).

Versions: Linux has the reclaim from 6.14 and selects CONFIG_PT_RECLAIM
only on x86-64. ptemu models it on every arch as x86-64 has it, for
`[kernel] version` 6.14 and later; before 6.14 MADV_DONTNEED only zaps.
Where the arch's mmu_gather would free at once, the reclaimed table is
still freed after a grace period (x86-64's reclaim selects
MMU_GATHER_RCU_TABLE_FREE).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emu.kernel import steps as s
from emu.kernel.mmu_notifier import MMU_NOTIFY_CLEAR, MmuNotifierRange
from emu.kernel.version import PT_RECLAIM

if TYPE_CHECKING:
    from emu.kernel import Kernel
    from emu.kernel.mm import MM

MADV_DONTNEED = 4


class PtReclaimMixin:
    def madvise_dontneed(self: Kernel, mm: MM, start: int, end: int) -> s.KernelGen:
        """madvise(MADV_DONTNEED) on one VMA (6.14 zap_page_range_single with ZAP_FLAG_RECLAIM)."""
        yield s.DownRead(mm.mmap_lock)
        vma = mm.find_vma(start)
        if vma is None or end > vma.end:
            yield s.UpRead(mm.mmap_lock)
            return -22
        # zap_page_range_single(): one mmu notifier range over the zap and, from
        # 6.14, the reclaim of the tables it emptied
        rng = MmuNotifierRange(mm, start, end, MMU_NOTIFY_CLEAR, "zap_page_range_single")
        yield from self.zap_notifier_start(rng)
        yield from self.unmap_page_range(mm, vma, start, end)
        if self.version >= PT_RECLAIM:
            pmd_size = self.arch.pmd_size
            addr = -(-start // pmd_size) * pmd_size
            while addr + pmd_size <= end:
                yield from self.try_to_free_pte(mm, addr)
                addr += pmd_size
        yield from self.zap_notifier_end(rng)
        yield s.UpRead(mm.mmap_lock)
        return 0

    def try_to_free_pte(self: Kernel, mm: MM, addr: int) -> s.KernelGen:
        """try_to_free_pte() (v6.14 mm/pt_reclaim.c): free the PTE table at addr if every entry is
        none (pmd_lock + ptl nested).
        """
        a = self.arch
        pmd_pa = yield from self.pmd_offset_alloc(mm, addr, alloc=False)
        if pmd_pa is None:
            return False
        pml = yield from self.pmd_lock(mm, pmd_pa, addr)
        pmdval = yield from self.read_entry("pmd", pmd_pa, "try_to_free_pte")
        if a.entry_none("pmd", pmdval) or a.pmd_trans_huge(pmdval) or a.entry_bad("pmd", pmdval):
            yield s.SpinUnlock(pml)
            return False
        table = a.table_pa("pmd", pmdval)
        ptl = self.pte_lockptr(mm, pmdval)
        if ptl is not pml:
            yield s.SpinLock(ptl, nested=True)
        lv = a.level("pte")
        # One step reads the whole table: the ptl keeps writers out.
        raw = yield s.Load(table, lv.table_bytes, "try_to_free_pte: scan for none")
        data = raw.to_bytes(lv.table_bytes, a.byteorder)
        empty = all(a.pte_none(int.from_bytes(data[i:i + lv.entry_size], a.byteorder))
                    for i in range(0, lv.table_bytes, lv.entry_size))
        if empty:
            yield from self.clear_entry("pmd", pmd_pa, "try_to_free_pte: pmd_clear")
        if ptl is not pml:
            yield s.SpinUnlock(ptl)
        yield s.SpinUnlock(pml)
        if not empty:
            return False
        self.mm_dec_nr_ptes(mm)
        # Linux only reclaims where tables are freed by RCU (PT_RECLAIM depends
        # on MMU_GATHER_RCU_TABLE_FREE): pte_offset_map() users may hold it.
        yield from self.flush_and_free_table(mm, addr, table, rcu=True)
        return True
