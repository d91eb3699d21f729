"""MADV_PAGEOUT and the reclaim of the folios it isolates.

Models mm/madvise.c `madvise_cold_or_pageout_pte_range()` (v6.12: under
mmap_read_lock, each PTE table under `pte_offset_map_lock()`, a table that
is gone meanwhile is skipped; only small folios mapped once and not
already isolated are taken) and mm/vmscan.c `reclaim_pages()` ->
`shrink_folio_list()` (v6.12, ignore_references): folio trylock, an anon
folio gets a swap slot and enters the swap cache (`add_to_swap`), the
rmap unmaps it (`try_to_unmap`: anon ptes become swap entries, file and
shmem ptes are dropped), a still-mapped folio is kept, an anon one is
written to its slot and, if no one else holds a reference
(`__remove_mapping`'s refcount freeze), leaves the swap cache and is
freed. Shmem and file folios stay in their page cache (their writeback is
not modelled), as a dirty folio would.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emu.kernel import steps as s

if TYPE_CHECKING:
    from emu.kernel import Kernel
    from emu.kernel.folio import Folio
    from emu.kernel.mm import MM


class VmscanMixin:
    def madvise_pageout(self: Kernel, mm: MM, start: int, end: int) -> s.KernelGen:
        """madvise(MADV_PAGEOUT) (v6.12): isolate the range's folios, then reclaim them."""
        a = self.arch
        pmd_size = a.pmd_size
        yield s.DownRead(mm.mmap_lock)
        if mm.overlaps(start, end) is None:
            yield s.UpRead(mm.mmap_lock)
            return -12  # -ENOMEM: nothing mapped there
        isolated: list[Folio] = []
        for vma in [v for v in mm.vmas if v.start < end and start < v.end and v.kind != "text"]:
            addr = max(start, vma.start)
            stop = min(end, vma.end)
            while addr < stop:
                nxt = min(stop, addr - addr % pmd_size + pmd_size)
                yield from self.madvise_pageout_pte_range(mm, addr, nxt, isolated)
                addr = nxt
        yield s.UpRead(mm.mmap_lock)
        reclaimed = yield from self.reclaim_pages(isolated)
        return reclaimed

    def madvise_pageout_pte_range(self: Kernel, mm: MM, start: int, end: int,
                                  isolated: list[Folio]) -> s.KernelGen:
        """madvise_cold_or_pageout_pte_range() (v6.12, pageout; walk_pmd_range() skips a none
        pmd): a huge pmd is left alone (its split is not modelled); anything else goes
        to pte_offset_map_lock(), which may find no table (a PMD migration entry, say)
        and return; each present pte's small folio mapped once is isolated
        (folio_isolate_lru: one reference)."""
        a = self.arch
        pmd_pa = yield from self.pmd_offset_alloc(mm, start, alloc=False)
        if pmd_pa is None:
            return
        pmdval = yield from self.read_entry("pmd", pmd_pa, "madvise_pageout: *pmd")
        if a.entry_none("pmd", pmdval) or a.pmd_trans_huge(pmdval):
            return
        r = yield from self.pte_offset_map_lock(mm, pmd_pa, start)
        if r is None:
            return
        ptep0, ptl = r
        ps = a.page_size
        esize = a.level("pte").entry_size
        for i, _addr in enumerate(range(start, end, ps)):
            pte = yield from self.read_entry("pte", ptep0 + i * esize, "madvise_pageout: ptep_get")
            if a.pte_none(pte) or not a.pte_present(pte):
                continue
            folio = self.folio_of(a.pte_pa(pte))
            if folio is None or folio.large or folio.mapcount != 1 or folio.isolated:
                continue
            folio.isolated = True
            folio.get()
            isolated.append(folio)
        yield from self.pte_unmap_unlock(ptep0, ptl)

    def reclaim_pages(self: Kernel, folios: list[Folio]) -> s.KernelGen:
        """reclaim_pages() -> shrink_folio_list() (v6.12): returns the pages reclaimed."""
        done = 0
        for folio in folios:
            freed = yield from self.shrink_folio(folio)
            done += freed
        return done

    def shrink_folio(self: Kernel, folio: Folio) -> s.KernelGen:
        """One folio of shrink_folio_list() (v6.12): 1 if it was freed, else 0 (kept)."""
        locked = yield from self.folio_trylock(folio)
        if not locked:
            return (yield from self.putback_folio(folio))
        if folio.kind == "anon" and folio.swap is None:
            ok = yield from self.add_to_swap(folio)
            if not ok:
                yield s.UpWrite(folio.lock)
                return (yield from self.putback_folio(folio))
        if folio.mapcount:
            yield from self.try_to_unmap(folio)
            if folio.mapcount:
                yield s.UpWrite(folio.lock)  # activate_locked: still mapped somewhere
                return (yield from self.putback_folio(folio))
        if folio.kind != "anon":
            yield s.UpWrite(folio.lock)  # writeback of shmem/file folios is not modelled
            return (yield from self.putback_folio(folio))
        yield from self.swap_writepage(folio)
        freed = yield from self.remove_mapping(folio)
        yield s.UpWrite(folio.lock)
        if not freed:
            return (yield from self.putback_folio(folio))
        folio.isolated = False
        self.put_folio(folio)  # the isolation reference: the last one
        return 1

    def swap_writepage(self: Kernel, folio: Folio) -> s.KernelGen:
        """swap_writepage() (v6.12) on a synchronous device: the page's bytes go to its slot."""
        ps = self.arch.page_size

        def write() -> None:
            self.swap.data[folio.swap] = self.mem.read(folio.pa, ps)
        yield s.KernelAtomic(write, f"swap_writepage(slot {folio.swap})")

    def remove_mapping(self: Kernel, folio: Folio) -> s.KernelGen:
        """__remove_mapping() (v6.12) of a swap-cache folio: freeze the refcount at
        isolation + swap cache (any other reference, a racing swap-in's, keeps it),
        then delete it from the swap cache."""
        def remove() -> bool:
            if folio.refcount != 2 or folio.mapcount:
                return False
            self.delete_from_swap_cache(folio)
            return True
        return (yield s.KernelAtomic(remove, "__remove_mapping"))

    def putback_folio(self: Kernel, folio: Folio) -> s.KernelGen:
        """folio_putback_lru() (v6.12): back on the LRU, the isolation reference dropped."""
        folio.isolated = False
        self.put_folio(folio)
        return 0
        yield
