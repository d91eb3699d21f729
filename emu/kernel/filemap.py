"""shmem/file mappings: page-cache faults, PMD-mapped folios, fault-around, truncate.

Models the parts of mm/filemap.c, mm/memory.c (`do_read_fault`,
`do_shared_fault`, `finish_fault`, `do_set_pmd`) and mm/truncate.c that the
seed series races against, as of v6.12 (each routine says its version;
none of them differs observably from v6.6 to v6.14): a fault locks the folio (so a collapse holding
the huge folio's lock keeps new PTEs out), maps it with a PMD when the VMA
and alignment allow, otherwise with a PTE under the ptl; truncate unmaps
from every VMA mapping the file without mmap_lock, then drops the folios.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from arch.base import Access
from emu.kernel import steps as s
from emu.kernel.fault import VM_FAULT_RETRY_ACCESS, VM_FAULT_SIGSEGV, Vmf
from emu.kernel.folio import Folio, PageCache
from emu.physmem import FrameState

if TYPE_CHECKING:
    from emu.kernel import Kernel
    from emu.kernel.mm import MM, VMA


class FilemapMixin:
    # ---- setup ------------------------------------------------------------------
    def setup_vma(self: Kernel, vma: VMA, spec: object) -> None:
        """A shmem/file VMA gets its own page cache; `thp` puts one PMD folio in it (anon:
        `thp` is VM_HUGEPAGE, as MADV_HUGEPAGE sets it)."""
        if vma.kind == "anon":
            vma.hugepage = bool(getattr(spec, "thp", False))
        if vma.kind not in ("shmem", "file"):
            return
        npages = (vma.end - vma.start) // self.arch.page_size
        shared = getattr(spec, "shares", None)
        if shared is not None:
            # a second mapping of an earlier VMA's file, from page 0
            vma.file = shared.file
            vma.pgoff = 0
            shared.file.vmas.append(vma)
            vma.pmd_mapping = getattr(spec, "pmd_mapping", True)
            return
        cache = PageCache(vma.name or f"{vma.kind}@{vma.start:#x}", vma.kind, npages)
        vma.file = cache
        vma.pgoff = 0
        cache.vmas.append(vma)
        vma.pmd_mapping = getattr(spec, "pmd_mapping", True)
        if getattr(spec, "thp", False):
            ps, pmd = self.arch.page_size, self.arch.pmd_size
            first = -(-vma.start // pmd) * pmd
            for start in range(first, vma.end - pmd + 1, pmd):
                self.cache_huge_folio(cache, (start - vma.start) // ps)

    def new_folio(self: Kernel, kind: str, nr_pages: int, purpose: str) -> Folio:
        """filemap_alloc_folio() (v6.12), trimmed: a folio of `nr_pages` with no references yet."""
        pa = self.frames.alloc(purpose, self.cpu, FrameState.DATA, nframes=nr_pages)
        folio = Folio(pa, nr_pages, kind)
        for i in range(nr_pages):
            self.folios[pa + i * self.arch.page_size] = folio
        return folio

    def free_folio(self: Kernel, folio: Folio, why: str) -> None:
        """The last reference went (v6.12 folio_put -> __folio_put): the frames are free."""
        for i in range(folio.nr_pages):
            pa = folio.pa + i * self.arch.page_size
            self.folios.pop(pa, None)
            self.frames.free(pa, self.cpu, why)
        self.flush_uc_caches()

    def flush_uc_caches(self: Kernel) -> None:
        """Let checkers see the next use of a stale translation (see Machine.on_table_free)."""
        self.hooks.on_table_free(self.cpu, -1, 0, False)

    def folio_of(self: Kernel, pa: int) -> Folio | None:
        return self.folios.get(pa - pa % self.arch.page_size)

    def put_folio(self: Kernel, folio: Folio, n: int = 1) -> None:
        """folio_put() (v6.12): drop a reference, freeing the folio with the last one."""
        if folio.put(n):
            self.free_folio(folio, f"{folio.kind} folio freed (last reference)")

    def cache_huge_folio(self: Kernel, cache: PageCache, index: int) -> Folio:
        nr = self.arch.pmd_size // self.arch.page_size
        folio = self.new_folio(cache.kind, nr, f"{cache.kind} THP folio of {cache.name}")
        folio.index, folio.in_cache = index, True
        folio.get()  # the page cache's reference
        for i in range(nr):
            cache.slots[index + i] = folio
        return folio

    def cache_small_folio(self: Kernel, cache: PageCache, index: int) -> Folio:
        folio = self.new_folio(cache.kind, 1, f"{cache.kind} page {index} of {cache.name}")
        folio.index, folio.in_cache = index, True
        folio.get()
        cache.slots[index] = folio
        return folio

    # ---- faults -------------------------------------------------------------------
    def vma_index(self: Kernel, vma: VMA, addr: int) -> int:
        return vma.pgoff + (addr - vma.start) // self.arch.page_size

    def thp_suitable(self: Kernel, vma: VMA, addr: int) -> bool:
        """Can `addr`'s PMD-aligned range be mapped by one PMD in this VMA?"""
        pmd = self.arch.pmd_size
        start = addr - addr % pmd
        return (self.arch.supports_huge_pmd() and vma.start <= start and start + pmd <= vma.end
                and (vma.start // self.arch.page_size - vma.pgoff) % (pmd // self.arch.page_size) == 0)

    def maybe_map_huge_pmd(self: Kernel, vmf: Vmf) -> s.KernelGen:
        """finish_fault()'s PMD case (v6.12 do_set_pmd via filemap_map_pages): map a PMD-sized folio
        with one pmd.
        """
        vma = vmf.vma
        if vma.kind not in ("shmem", "file") or not vma.pmd_mapping \
                or not self.thp_suitable(vma, vmf.addr) \
                or (vma.private and vmf.access == Access.WRITE):  # do_cow_fault: no PMD
            return False
        folio = vma.file.lookup(self.vma_index(vma, vmf.addr))
        if folio is None or not folio.large:
            return False
        folio.get()  # filemap_fault()'s reference, held while it sleeps on the lock
        yield s.DownWrite(folio.lock)  # lock_folio(): sleeps while khugepaged holds it
        done = yield from self.do_set_pmd(vmf, folio)
        yield s.UpWrite(folio.lock)
        self.put_folio(folio)
        return done

    def do_set_pmd(self: Kernel, vmf: Vmf, folio: Folio) -> s.KernelGen:
        """do_set_pmd() (v6.12): map a locked PMD-sized folio with one PMD entry if the pmd is still
        none.
        """
        mm = vmf.vma.mm
        if not folio.in_cache:
            return False
        # powerpc hash deposits a table with every huge pmd (arch_needs_pgtable_deposit)
        prealloc = (yield from self.pte_alloc_one(mm)) if self.arch_needs_pgtable_deposit() else None
        haddr = vmf.addr - vmf.addr % self.arch.pmd_size
        ptl = yield from self.pmd_lock(mm, vmf.pmd_pa, vmf.addr)
        cur = yield from self.read_entry("pmd", vmf.pmd_pa)
        done = False
        if self.arch.entry_none("pmd", cur):
            if prealloc is not None:  # deposit_prealloc_pte()
                yield from self.pgtable_trans_huge_deposit(mm, vmf.pmd_pa, haddr, prealloc)
                self.mm_inc_nr_ptes(mm)
                prealloc = None
            folio.map()
            mm.rss[folio.kind] += folio.nr_pages
            yield from self.set_entry("pmd", vmf.pmd_pa,
                                      self.arch.mk_pmd_huge(folio.pa, vmf.vma.page_prot), "do_set_pmd")
            done = True
        yield s.SpinUnlock(ptl)
        if prealloc is not None:
            yield from self.pte_free(mm, prealloc)
        return done

    def do_fault_folio(self: Kernel, vmf: Vmf) -> s.KernelGen:
        """__do_fault() -> filemap_fault() (v6.12): (folio, index) of the page cache's folio
        for the fault, with filemap_fault()'s reference and locked; None beyond EOF."""
        vma = vmf.vma
        cache: PageCache = vma.file
        index = self.vma_index(vma, vmf.addr)
        if index >= cache.size_pages:
            return None  # beyond EOF (truncated)
        folio = cache.lookup(index)
        if folio is None:
            folio = self.cache_small_folio(cache, index)
        folio.get()  # the mapping (or the copy) gets its own reference later
        yield s.DownWrite(folio.lock)
        return folio, index

    def do_shared_fault(self: Kernel, vmf: Vmf) -> s.KernelGen:
        """do_read_fault/do_shared_fault + finish_fault (v6.12) for one page of a file folio."""
        got = yield from self.do_fault_folio(vmf)
        if got is None:
            return VM_FAULT_SIGSEGV
        folio, index = got
        ret = yield from self.finish_fault(vmf, folio, index)
        yield s.UpWrite(folio.lock)
        self.put_folio(folio)
        return ret

    def finish_fault(self: Kernel, vmf: Vmf, folio: Folio, index: int) -> s.KernelGen:
        """finish_fault() (v6.12): pte_offset_map_lock, pte_none recheck, set_pte_range,
        update_mmu_cache.
        """
        mm = vmf.vma.mm
        if not folio.in_cache:
            return VM_FAULT_RETRY_ACCESS  # truncated or replaced while we slept
        r = yield from self.pte_offset_map_lock(mm, vmf.pmd_pa, vmf.addr)
        if r is None:
            return VM_FAULT_RETRY_ACCESS
        ptep, ptl = r
        cur = yield from self.read_entry("pte", ptep)
        if self.arch.pte_none(cur):
            page = folio.pa + (index - folio.index) * self.arch.page_size
            pte = self.arch.pte_mkyoung(self.arch.mk_pte(page, vmf.vma.page_prot))
            if vmf.access == Access.WRITE and not vmf.vma.private:
                pte = self.arch.pte_mkdirty(pte)
            folio.map()
            mm.rss[folio.kind] += 1
            yield from self.set_entry("pte", ptep, pte, "set_pte_range (file page)")
            yield from self.update_mmu_cache(vmf, folio, page, ptl, ptep)
        yield from self.pte_unmap_unlock(ptep, ptl)
        return VM_FAULT_RETRY_ACCESS

    # ---- truncate -------------------------------------------------------------------
    def truncate(self: Kernel, cache: PageCache, new_pages: int) -> s.KernelGen:
        """truncate_pagecache() (mm/truncate.c, v6.12): unmap [new_size, EOF) everywhere,
        then drop the folios.

        No mmap_lock: only i_mmap_rwsem (read) and the page-table locks. The
        folios are found as find_lock_entries() finds them: a batch looked up
        with a reference each, then each locked and skipped unless it is still
        this file's at that index (khugepaged's collapse_file() may have
        replaced it while truncate slept on its lock).
        """
        if new_pages >= cache.size_pages:
            cache.size_pages = new_pages
            return 0
        old = cache.size_pages
        cache.size_pages = new_pages
        yield from self.unmap_mapping_range(cache, new_pages, old)
        batch = [f for f in cache.folios() if f.index + f.nr_pages > new_pages]
        for folio in batch:
            folio.get()  # the lookup's reference (find_lock_entries)
        for folio in batch:
            yield s.DownWrite(folio.lock)
            end = folio.index + folio.nr_pages
            if folio.in_cache and cache.lookup(folio.index) is folio:
                # A large folio straddling the new EOF would be split; ptemu drops it whole.
                yield from self.unmap_mapping_range(cache, folio.index, end)
                for i in range(folio.index, end):
                    if cache.slots.get(i) is folio:
                        del cache.slots[i]
                folio.in_cache = False
                self.put_folio(folio)  # the page cache's reference
            yield s.UpWrite(folio.lock)
            self.put_folio(folio)  # the lookup's reference
        return 0

    def unmap_mapping_range(self: Kernel, cache: PageCache, first: int, end: int,
                            even_cows: bool = True) -> s.KernelGen:
        """unmap_mapping_range() (v6.12): zap the file's range in every VMA under i_mmap_rwsem
        (read), whichever mm each belongs to; `even_cows` False leaves private mappings'
        anon copies (truncate passes 1, try_to_unmap of one file folio spares them).
        """
        yield s.DownRead(cache.i_mmap_rwsem)
        ps = self.arch.page_size
        for vma in list(cache.vmas):
            lo = max(vma.start, vma.start + (first - vma.pgoff) * ps)
            hi = min(vma.end, vma.start + (end - vma.pgoff) * ps)
            if lo < hi and (even_cows or not vma.private):
                yield from self.zap_page_range(vma.mm, vma, lo, hi)
            elif lo < hi:
                yield from self.zap_page_range(vma.mm, vma, lo, hi, even_cows=False)
        yield s.UpRead(cache.i_mmap_rwsem)

    def cache_of(self: Kernel, mm: MM, addr: int) -> PageCache | None:
        vma = mm.find_vma(addr)
        return vma.file if vma is not None and vma.kind in ("shmem", "file") else None
