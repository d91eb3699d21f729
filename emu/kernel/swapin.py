"""Faults on non-present ptes and pmds: do_swap_page and the migration-entry waits.

Models mm/memory.c `do_swap_page()` (v6.12) and mm/migrate.c
`migration_entry_wait()` / mm/huge_memory.c `pmd_migration_entry_wait()`:

- `pte_unmap_same()` first: where a pte is wider than a long (x86-PAE) the
  lockless `orig_pte` may be torn (half of a swap entry, half of the
  present pte a racing swap-in is writing), so it is rechecked under the
  ptl before anything decodes it; elsewhere it only unmaps.
- A migration entry waits (`migration_entry_wait`: `pte_offset_map_lock`,
  which may find no table now and then simply returns) on the folio lock
  the migration holds, and the access is retried.
- A swap entry: `get_swap_device()` validates it; a slot referenced once
  and not in the swap cache is read straight into a new folio (the
  SWP_SYNCHRONOUS_IO path, `swapcache_prepare` keeping a racing swap-in
  out), otherwise the swap-cache folio is taken and locked; then
  `pte_offset_map_lock` + `pte_same(orig_pte)` and the pte maps the page,
  the slot is freed (`swap_free`) and MM_SWAPENTS becomes MM_ANONPAGES.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from arch.base import Access
from emu.kernel import steps as s
from emu.kernel.core import KernelBug
from emu.kernel.swap import SWAP_HAS_CACHE, is_migration_type, non_swap_type
from emu.kernel.sync import Spinlock

if TYPE_CHECKING:
    from emu.kernel import Kernel
    from emu.kernel.fault import Vmf
    from emu.kernel.folio import Folio
    from emu.kernel.mm import MM, VMA

VM_FAULT_RETRY_ACCESS = 0
VM_FAULT_SIGBUS = -7


class SwapinMixin:
    def pte_unmap_same(self: Kernel, vmf: Vmf, ptep: int, ptl: Spinlock) -> s.KernelGen:
        """pte_unmap_same() (v6.12): where pte_t is wider than a long, recheck orig_pte under
        the ptl (a torn lockless read); unmap the pte either way. False: it changed."""
        same = True
        if self.split_entry_reads():
            yield s.SpinLock(ptl)
            cur = yield from self.read_entry("pte", ptep, "pte_unmap_same")
            same = cur == vmf.orig_pte
            yield s.SpinUnlock(ptl)
        yield from self.pte_unmap(ptep)
        return same

    def do_swap_page(self: Kernel, vmf: Vmf, ptep: int, ptl: Spinlock) -> s.KernelGen:
        """do_swap_page() (v6.12, small folios): fault a non-present, non-none pte back in."""
        same = yield from self.pte_unmap_same(vmf, ptep, ptl)
        if not same:
            return VM_FAULT_RETRY_ACCESS
        swp_type, offset = self.pte_to_swp_entry(vmf.orig_pte)
        if non_swap_type(swp_type):
            if is_migration_type(swp_type):
                yield from self.migration_entry_wait(vmf.vma.mm, vmf.pmd_pa, vmf.addr)
                return VM_FAULT_RETRY_ACCESS
            # hwpoison / pte markers are never made here: print_bad_pte(), SIGBUS
            raise KernelBug(f"do_swap_page at {vmf.addr:#x}: print_bad_pte: pte "
                            f"{vmf.orig_pte:#x} decodes to swap type {swp_type}, which "
                            "nothing in this kernel writes (a pte value no one stored)")
        if swp_type != 0 or not self.swap.valid(offset):
            # get_swap_device(): "Bad swap file entry" / "Bad swap offset entry"
            raise KernelBug(f"do_swap_page at {vmf.addr:#x}: get_swap_device: \"Bad swap "
                            f"{'file' if swp_type else 'offset'} entry\" (type {swp_type}, offset "
                            f"{offset:#x}) from pte {vmf.orig_pte:#x}: no swap pte ever held it")
        folio, prepared = yield from self.swapin_folio(offset)
        if folio is None:
            return VM_FAULT_RETRY_ACCESS  # a racing swap-in owns the slot: relax and retry
        ret = yield from self.swapin_map(vmf, folio, offset, prepared)
        return ret

    def swapin_folio(self: Kernel, offset: int) -> s.KernelGen:
        """swap_cache_get_folio(), else the SWP_SYNCHRONOUS_IO read (v6.12): (folio with a
        reference, whether swapcache_prepare() marked the slot), or (None, False)."""
        ps = self.arch.page_size

        def lookup() -> tuple[Folio | None, bool]:
            dev = self.swap
            folio = dev.cache.get(offset)
            if folio is not None:
                folio.get()
                return folio, False
            if not dev.count(offset) or dev.swap_map.get(offset, 0) & SWAP_HAS_CACHE:
                return None, False  # freed meanwhile, or swapcache_prepare() -EEXIST
            dev.swap_map[offset] |= SWAP_HAS_CACHE
            new = self.new_folio("anon", 1, f"anon page swapped in from slot {offset}")
            new.get()
            self.mem.write(new.pa, dev.data.get(offset, bytes(ps)))  # swap_read_folio()
            if dev.count(offset) == 1:
                return new, True  # SWP_SYNCHRONOUS_IO: no swap cache
            # shared (fork): swapin_readahead() reads it into the swap cache
            dev.cache[offset] = new
            new.swap = offset
            new.get()
            return new, False
        return (yield s.KernelAtomic(lookup, f"swapin slot {offset}"))

    def swapin_map(self: Kernel, vmf: Vmf, folio: Folio, offset: int,
                   prepared: bool) -> s.KernelGen:
        """do_swap_page()'s second half (v6.12): folio lock, pte_offset_map_lock + pte_same,
        swap_free, set_pte_at; out: swapcache_clear."""
        a = self.arch
        mm = vmf.vma.mm
        yield s.DownWrite(folio.lock)
        if not prepared and folio.swap != offset:
            # folio_free_swap() or reclaim let it go meanwhile: retry the fault
            yield s.UpWrite(folio.lock)
            self.put_folio(folio)
            return VM_FAULT_RETRY_ACCESS
        r = yield from self.pte_offset_map_lock(mm, vmf.pmd_pa, vmf.addr)
        cur = None
        if r is not None:
            ptep, ptl = r
            cur = yield from self.read_entry("pte", ptep, "do_swap_page: pte_same")
        if r is None or cur != vmf.orig_pte:
            if r is not None:
                yield from self.pte_unmap_unlock(ptep, ptl)
            yield s.UpWrite(folio.lock)
            yield from self.swapin_done(folio, offset, prepared)
            return VM_FAULT_RETRY_ACCESS  # out_nomap: someone else faulted it in
        yield from self.swap_free(offset, "do_swap_page")
        # PageAnonExclusive: no other process's swap pte names the slot any more
        folio.anon_exclusive = folio.mapcount == 0 and self.swap.count(offset) == 0
        folio.index = self.vma_index(vmf.vma, vmf.addr)  # folio_add_new_anon_rmap()
        folio.map()
        mm.rss["anon"] += 1
        self.mm_swapents(mm, -1)
        vmf.vma.anon_vma = True
        pte = a.pte_mkyoung(a.mk_pte(folio.pa, vmf.vma.prot))
        if vmf.access == Access.WRITE:
            pte = a.pte_mkdirty(pte)
        yield from self.set_entry("pte", ptep, pte, "do_swap_page: set_pte_at")
        if not prepared:
            yield from self.folio_free_swap(folio)  # should_try_to_free_swap()
        yield from self.pte_unmap_unlock(ptep, ptl)
        yield s.UpWrite(folio.lock)
        yield from self.swapin_done(folio, offset, prepared)
        return VM_FAULT_RETRY_ACCESS

    def swapin_done(self: Kernel, folio: Folio, offset: int, prepared: bool) -> s.KernelGen:
        """do_swap_page()'s exit (v6.12): swapcache_clear() for a direct swap-in, folio_put()."""
        if prepared:
            yield s.KernelAtomic(lambda: self.swap.put(offset, "swapcache_clear", cache=True),
                                 "swapcache_clear")
        self.put_folio(folio)

    # ---- migration entries ----------------------------------------------------------------
    def migration_entry_wait(self: Kernel, mm: MM, pmd_pa: int, addr: int) -> s.KernelGen:
        """migration_entry_wait() (v6.5+): pte_offset_map_lock, which may fail (no table now:
        return and refault); a migration entry still there waits for the folio."""
        r = yield from self.pte_offset_map_lock(mm, pmd_pa, addr)
        if r is None:
            return
        ptep, ptl = r
        pte = yield from self.read_entry("pte", ptep, "migration_entry_wait")
        yield from self.pte_unmap(ptep)
        pfn = self.migration_pte_pfn(pte)
        if pfn is None:
            yield s.SpinUnlock(ptl)
            return
        yield from self.migration_entry_wait_on_locked(pfn, ptl)

    def pmd_migration_entry_wait(self: Kernel, mm: MM, pmd_pa: int, addr: int) -> s.KernelGen:
        """pmd_migration_entry_wait() (v6.12): under the pmd lock, wait if the pmd is still
        a migration entry."""
        ptl = yield from self.pmd_lock(mm, pmd_pa, addr)
        pmdval = yield from self.read_entry("pmd", pmd_pa, "pmd_migration_entry_wait")
        if not self.is_pmd_migration_entry(pmdval):
            yield s.SpinUnlock(ptl)
            return
        yield from self.migration_entry_wait_on_locked(self.arch.swap_pmd_entry(pmdval)[1], ptl)

    def migration_entry_wait_on_locked(self: Kernel, pfn: int, ptl: Spinlock) -> s.KernelGen:
        """migration_entry_wait_on_locked() (v6.12): take a reference if the folio still has
        one (folio_try_get), drop the ptl, sleep until the migration unlocks the folio."""
        folio = self.folio_of(pfn * self.arch.page_size)
        if folio is None or folio.refcount == 0:
            yield s.SpinUnlock(ptl)
            return
        folio.get()
        yield s.SpinUnlock(ptl)
        yield s.DownRead(folio.lock)
        yield s.UpRead(folio.lock)
        self.put_folio(folio)

    # ---- khugepaged ------------------------------------------------------------------------
    def collapse_huge_page_swapin(self: Kernel, mm: MM, vma: VMA, haddr: int,
                                  pmd_pa: int) -> s.KernelGen:
        """__collapse_huge_page_swapin() (v6.13, seed 001: pte_offset_map_ro_nolock, the ptl
        only for do_swap_page()'s pte_same; 6.6-6.12 pte_offset_map_nolock, the same
        steps): swap in every swap pte of the PMD range anon collapse_huge_page() is about
        to collapse, under mmap_read_lock. No table now: SCAN_PMD_NULL."""
        from emu.kernel.fault import Vmf
        from emu.kernel.khugepaged import SCAN_PMD_NULL, SCAN_SUCCEED
        a = self.arch
        ps = a.page_size
        esize = a.level("pte").entry_size
        ptep: int | None = None
        ptl: Spinlock | None = None
        for addr in range(haddr, haddr + a.pmd_size, ps):
            if ptep is None:
                r = yield from self.pte_offset_map_ro_nolock(mm, pmd_pa, addr)
                if r is None:
                    return SCAN_PMD_NULL
                ptep, ptl = r
            else:
                ptep += esize
            vmf = Vmf(vma, addr, Access.READ, pmd_pa)
            vmf.orig_pte = yield from self.ptep_get_lockless(ptep)
            if not a.is_swap_pte(vmf.orig_pte):
                continue
            yield from self.do_swap_page(vmf, ptep, ptl)
            ptep = None  # do_swap_page() unmapped it
        if ptep is not None:
            yield from self.pte_unmap(ptep)
        return SCAN_SUCCEED
