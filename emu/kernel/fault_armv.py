"""arm's VIVT cache-alias fix-up: update_mmu_cache, make_coherent, adjust_pte.

Models arch/arm/mm/fault-armv.c as converted by seed 001 (Qi Zheng, v4,
fc9c45b71f43 "arm: adjust_pte() use pte_offset_map_rw_nolock()"): when a
shared file page gets a new user mapping, every other mapping of the same
page in the same mm is made uncached. `adjust_pte()` maps the alias's PTE
with `pte_offset_map_rw_nolock()`; with split PTE locks the alias's ptl is
not the fault's (`ptl != vmf->ptl`), so it takes it nested and must recheck
`pmd_same()` before writing, because the alias's table may have been
removed without mmap_lock (retract, empty-table reclaim).

It is a Linux algorithm, so it lives here; it runs only where the arch
says its caches alias (`Arch.vivt_cache_aliasing`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emu.kernel import steps as s
from emu.kernel.sync import Spinlock

if TYPE_CHECKING:
    from emu.kernel import Kernel
    from emu.kernel.fault import Vmf
    from emu.kernel.folio import Folio


class FaultArmvMixin:
    def update_mmu_cache(self: Kernel, vmf: Vmf, folio: Folio, page_pa: int,
                         ptl: Spinlock, ptep: int) -> s.KernelGen:
        """arm's update_mmu_cache() (v6.13); called with the new pte at `ptep` set and vmf's
        ptl held.
        """
        if not self.arch.vivt_cache_aliasing or vmf.vma.file is None:
            return
        yield from self.make_coherent(vmf, page_pa, ptl, ptep)

    def make_coherent(self: Kernel, vmf: Vmf, page_pa: int, fault_ptl: Spinlock,
                      ptep: int) -> s.KernelGen:
        """make_coherent() (v6.13): adjust every other user mapping of the page in this mm;
        if any was present, make the faulting mapping at `ptep` uncached too.
        """
        vma = vmf.vma
        ps = self.arch.page_size
        index = self.vma_index(vma, vmf.addr)
        aliases = 0
        for other in list(vma.file.vmas):
            if other is vma or other.mm is not vma.mm:
                continue  # make_coherent(): only this mm's other mappings alias
            alias = other.start + (index - other.pgoff) * ps
            if not other.contains(alias):
                continue
            aliases += yield from self.adjust_pte(other, alias, page_pa, fault_ptl)
        if aliases:
            # two live mappings of one page in a VIVT cache: both go uncached
            yield from self.do_adjust_pte(vma, vmf.addr, page_pa, ptep)

    def adjust_pte(self: Kernel, vma, address: int, page_pa: int,
                   fault_ptl: Spinlock) -> s.KernelGen:
        """adjust_pte() (v6.13 pte_offset_map_rw_nolock + pmd_same; 6.6-6.12 pte_offset_map_nolock,
        no recheck).
        """
        mm = vma.mm
        pmd_pa = yield from self.pmd_offset_alloc(mm, address, alloc=False)
        if pmd_pa is None:
            return 0
        while True:
            r = yield from self.pte_offset_map_rw_nolock(mm, pmd_pa, address)
            if r is None:
                return 0
            ptep, pmdval, ptl = r
            need_lock = ptl is not fault_ptl  # split PTE locks: another table's lock
            if not need_lock:
                break
            yield s.SpinLock(ptl, nested=True)
            same = yield from self.rw_nolock_pmd_same(pmd_pa, pmdval)
            if same:
                break
            yield from self.pte_unmap_unlock(ptep, ptl)
        ret = yield from self.do_adjust_pte(vma, address, page_pa, ptep)
        if need_lock:
            yield s.SpinUnlock(ptl)
        yield from self.pte_unmap(ptep)
        return ret

    def do_adjust_pte(self: Kernel, vma, address: int, page_pa: int, ptep: int) -> s.KernelGen:
        """do_adjust_pte() (v6.13): make a present mapping of the page uncached (flush its
        cache line, set, flush TLB) unless it already is; 1 if it was present (a real alias).
        """
        a = self.arch
        pte = yield from self.read_entry("pte", ptep, "do_adjust_pte")
        if not a.pte_present(pte):
            return 0
        new = a.pte_mkuncached(pte)
        if new != pte:
            yield from self.set_entry("pte", ptep, new, "do_adjust_pte: set uncached")
            start = address - address % a.page_size
            yield s.TlbFlushRange(start, start + a.page_size, vma.mm)
        return 1
