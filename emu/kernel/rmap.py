"""Reverse mapping: page_vma_mapped_walk, try_to_unmap, try_to_migrate, remove_migration_ptes.

Models mm/page_vma_mapped.c and mm/rmap.c (v6.12, with v6.13's map_pte):
`page_vma_mapped_walk()` finds where one VMA maps a folio without holding
any lock but the rmap's (anon_vma or i_mmap_rwsem, read): a lockless pmd
read, `pmd_lock` for a huge or migration pmd, and `map_pte()`, which maps
the table with `pte_offset_map_rw_nolock()` (v6.13; v6.6-v6.12's
`pte_offset_map_nolock()`), checks the pte's type locklessly, takes the
ptl and (v6.13, seed 001) rechecks `pmd_same()`, retrying on a change;
PVMW_SYNC walks use `pte_offset_map_lock()`. A map that fails (no table
now) restarts from the pmd.

`rmap_walk()` visits the VMAs that may map a folio: for anon, every anon
VMA of every process covering the folio's linear index (a superset of its
anon_vma's, which page_vma_mapped_walk's pfn check narrows), under that
mm's anon_vma lock; for shmem/file, the file's i_mmap under i_mmap_rwsem.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from emu.kernel import steps as s
from emu.kernel.mmu_notifier import MMU_NOTIFY_CLEAR, MmuNotifierRange
from emu.kernel.swap import SWP_MIGRATION_READ, SWP_MIGRATION_WRITE
from emu.kernel.sync import RwSem

if TYPE_CHECKING:
    from emu.kernel import Kernel
    from emu.kernel.folio import Folio
    from emu.kernel.mm import MM, VMA
    from emu.kernel.sync import Spinlock

PVMW_SYNC = 1
PVMW_MIGRATION = 2


@dataclass
class Pvmw:
    """struct page_vma_mapped_walk."""

    folio: Folio
    vma: VMA
    address: int
    flags: int = 0
    pmd_pa: int | None = None
    pte: int | None = None  # the mapped pte's physical address
    ptl: Spinlock | None = None  # held
    map_ptl: Spinlock | None = None  # map_pte()'s ptl, taken lazily by later ptes
    pmdval: int = 0  # map_pte()'s pmd snapshot (6.13's pmd_same recheck)
    pmd_hit: bool = False  # the last hit was a pmd mapping (the next call ends the walk)

    @property
    def end(self) -> int:
        return min(self.vma.end, self.first + self.folio.nr_pages * self.page_size)

    first: int = 0
    page_size: int = 0


class RmapMixin:
    # ---- locks --------------------------------------------------------------------------
    def anon_vma_lock_of(self: Kernel, mm: MM) -> RwSem:
        """anon_vma->root->rwsem (v6.12) of `mm`'s anon VMAs (one root anon_vma per process)."""
        sem = mm.context.get("anon_vma")
        if sem is None:
            sem = mm.context["anon_vma"] = RwSem(f"anon_vma{'[' + mm.lock_tag + ']' if mm.lock_tag else ''}")
        return sem

    def folio_address(self: Kernel, folio: Folio, vma: VMA) -> int | None:
        """vma_address() (v6.12): where `vma` would map the folio's first page, or None
        (anon and file alike: the folio's linear index against the VMA's vm_pgoff,
        which mremap keeps)."""
        ps = self.arch.page_size
        addr = vma.start + (folio.index - vma.pgoff) * ps
        return addr if vma.start <= addr < vma.end else None

    def rmap_walk(self: Kernel, folio: Folio, one, locked: bool = False) -> s.KernelGen:  # noqa: ANN001
        """rmap_walk() (v6.12): `one(vma, addr)` for every VMA that may map `folio`, under the
        rmap lock, until it returns False or the folio is no longer mapped."""
        if folio.kind == "anon":
            for mm in list(self.mms):
                if mm.dead:
                    continue
                vmas = [v for v in mm.vmas if v.kind == "anon"
                        and self.folio_address(folio, v) is not None]
                if not vmas:
                    continue
                sem = self.anon_vma_lock_of(mm)
                yield s.DownRead(sem)
                for vma in vmas:
                    go = yield from one(vma, self.folio_address(folio, vma))
                    if not go:
                        break
                yield s.UpRead(sem)
            return
        cache = next((v.file for mm in self.mms for v in mm.vmas
                      if v.file is not None and folio.in_cache and v.file.lookup(folio.index) is folio),
                     None)
        if cache is None:
            return
        yield s.DownRead(cache.i_mmap_rwsem)
        for vma in list(cache.vmas):
            addr = self.folio_address(folio, vma)
            if addr is None:
                continue
            go = yield from one(vma, addr)
            if not go:
                break
        yield s.UpRead(cache.i_mmap_rwsem)

    # ---- page_vma_mapped_walk ---------------------------------------------------------------
    def new_pvmw(self: Kernel, folio: Folio, vma: VMA, addr: int, flags: int = 0) -> Pvmw:
        """DEFINE_FOLIO_VMA_WALK (v6.12)."""
        return Pvmw(folio, vma, addr, flags, first=addr, page_size=self.arch.page_size)

    def page_vma_mapped_walk_done(self: Kernel, pvmw: Pvmw) -> s.KernelGen:
        """page_vma_mapped_walk_done() (v6.12): unmap the pte and drop the lock held."""
        if pvmw.pte is not None:
            yield from self.pte_unmap(pvmw.pte)
            pvmw.pte = None
        if pvmw.ptl is not None:
            yield s.SpinUnlock(pvmw.ptl)
            pvmw.ptl = None

    def _pvmw_not_found(self: Kernel, pvmw: Pvmw) -> s.KernelGen:
        yield from self.page_vma_mapped_walk_done(pvmw)
        return False

    def check_pte(self: Kernel, pvmw: Pvmw, pte: int) -> bool:
        """check_pte() (v6.12): does the pte map (or, for PVMW_MIGRATION, hold a migration
        entry for) a page of the folio?"""
        a = self.arch
        ps = a.page_size
        if pvmw.flags & PVMW_MIGRATION:
            pfn = self.migration_pte_pfn(pte)
            if pfn is None:
                return False
            pa = pfn * ps
        elif a.pte_present(pte):
            pa = a.pte_pa(pte)
        else:
            return False
        return pvmw.folio.pa <= pa < pvmw.folio.pa + pvmw.folio.nr_pages * ps

    def map_pte(self: Kernel, pvmw: Pvmw) -> s.KernelGen:
        """map_pte() (v6.13 pte_offset_map_rw_nolock + pmd_same retry; v6.6-v6.12
        pte_offset_map_nolock with no recheck; PVMW_SYNC: pte_offset_map_lock).

        Returns True (pte mapped, ptl held), False (pte mapped, not of the wanted
        type, no lock) or None (no table: restart)."""
        mm = pvmw.vma.mm
        a = self.arch
        if pvmw.flags & PVMW_SYNC:
            r = yield from self.pte_offset_map_lock(mm, pvmw.pmd_pa, pvmw.address)
            if r is None:
                return None
            pvmw.pte, pvmw.ptl = r
            pvmw.map_ptl = pvmw.ptl
            return True
        while True:
            r = yield from self.pte_offset_map_rw_nolock(mm, pvmw.pmd_pa, pvmw.address)
            if r is None:
                return None
            pvmw.pte, pvmw.pmdval, pvmw.map_ptl = r
            pte = yield from self.read_entry("pte", pvmw.pte, "map_pte: ptep_get")
            if pvmw.flags & PVMW_MIGRATION:
                if not a.is_swap_pte(pte):
                    return False
            elif not a.pte_present(pte) or a.pte_none(pte):
                return False
            yield s.SpinLock(pvmw.map_ptl)
            same = yield from self.map_pte_pmd_same(pvmw)
            if same:
                pvmw.ptl = pvmw.map_ptl
                return True
            yield from self.pte_unmap_unlock(pvmw.pte, pvmw.map_ptl)
            pvmw.pte = None

    def map_pte_pmd_same(self: Kernel, pvmw: Pvmw) -> s.KernelGen:
        """map_pte()'s pmd_same() recheck under the ptl (v6.13, seed 001; none before)."""
        return (yield from self.rw_nolock_pmd_same(pvmw.pmd_pa, pvmw.pmdval))

    def page_vma_mapped_walk(self: Kernel, pvmw: Pvmw) -> s.KernelGen:
        """page_vma_mapped_walk() (v6.12; map_pte as above): True with the mapping locked
        (pvmw.pte set, or None for a pmd mapping with pvmw.ptl the pmd lock), or False
        with nothing held. Call again for the folio's next mapping in the VMA."""
        a = self.arch
        mm = pvmw.vma.mm
        ps, pmd_size = a.page_size, a.pmd_size
        if pvmw.pmd_hit:
            return (yield from self._pvmw_not_found(pvmw))
        if pvmw.pte is not None:
            found = yield from self._pvmw_next_pte(pvmw)
            if found is not None:
                return found
        while pvmw.address < pvmw.end:
            pmd_pa = yield from self.pmd_offset_alloc(mm, pvmw.address, alloc=False)
            if pmd_pa is None:
                pvmw.address = pvmw.address - pvmw.address % pmd_size + pmd_size
                continue
            pvmw.pmd_pa = pmd_pa
            pmde = yield from self.pmdp_get_lockless(pmd_pa)
            if a.pmd_trans_huge(pmde) or self.is_pmd_migration_entry(pmde):
                pvmw.ptl = yield from self.pmd_lock(mm, pmd_pa, pvmw.address)
                pmde = yield from self.read_entry("pmd", pmd_pa, "page_vma_mapped_walk: pmd")
                if self.is_pmd_migration_entry(pmde):
                    pa = a.swap_pmd_entry(pmde)[1] * ps
                    if not pvmw.flags & PVMW_MIGRATION or pa != pvmw.folio.pa:
                        return (yield from self._pvmw_not_found(pvmw))
                    pvmw.pmd_hit = True
                    return True
                if a.pmd_trans_huge(pmde):
                    if pvmw.flags & PVMW_MIGRATION or a.pmd_huge_pa(pmde) != pvmw.folio.pa:
                        return (yield from self._pvmw_not_found(pvmw))
                    pvmw.pmd_hit = True
                    return True
                # THP pmd was split under us: handle on pte level
                yield s.SpinUnlock(pvmw.ptl)
                pvmw.ptl = None
            elif a.entry_none("pmd", pmde) or not a.entry_present("pmd", pmde):
                pvmw.address = pvmw.address - pvmw.address % pmd_size + pmd_size
                continue
            ok = yield from self.map_pte(pvmw)
            if ok is None:
                continue  # restart: the table went away
            if ok:
                pte = yield from self.read_entry("pte", pvmw.pte, "check_pte")
                if self.check_pte(pvmw, pte):
                    return True
            found = yield from self._pvmw_next_pte(pvmw)
            if found is not None:
                return found
        return (yield from self._pvmw_not_found(pvmw))

    def _pvmw_next_pte(self: Kernel, pvmw: Pvmw) -> s.KernelGen:
        """page_vma_mapped_walk()'s next_pte/this_pte loop (v6.13): True/False as the walk's result,
        None to restart from the pmd."""
        a = self.arch
        ps, pmd_size = a.page_size, a.pmd_size
        esize = a.level("pte").entry_size
        while True:
            pvmw.address += ps
            if pvmw.address >= pvmw.end:
                return (yield from self._pvmw_not_found(pvmw))
            if pvmw.address % pmd_size == 0:
                # the next table: drop this one and restart from its pmd
                if pvmw.ptl is not None:
                    yield s.SpinUnlock(pvmw.ptl)
                    pvmw.ptl = None
                yield from self.pte_unmap(pvmw.pte)
                pvmw.pte = None
                return None
            pvmw.pte += esize
            pte = yield from self.read_entry("pte", pvmw.pte, "page_vma_mapped_walk: next pte")
            if a.pte_none(pte):
                continue
            if pvmw.ptl is None:
                yield s.SpinLock(pvmw.map_ptl)
                same = yield from self.map_pte_pmd_same(pvmw)
                if not same:
                    yield from self.pte_unmap_unlock(pvmw.pte, pvmw.map_ptl)
                    pvmw.pte = None
                    return None
                pvmw.ptl = pvmw.map_ptl
            pte = yield from self.read_entry("pte", pvmw.pte, "check_pte")
            if self.check_pte(pvmw, pte):
                return True

    # ---- try_to_unmap ----------------------------------------------------------------------
    def ptep_clear_flush(self: Kernel, mm: MM, pvmw: Pvmw, who: str) -> s.KernelGen:
        """ptep_clear_flush() (all versions) of the pte the walk holds: its old value."""
        ps = self.arch.page_size
        cur = yield from self.read_entry("pte", pvmw.pte, who)
        pteval = yield from self.get_and_clear_entry("pte", pvmw.pte, f"{who}: ptep_clear_flush", cur)
        page = pvmw.address - pvmw.address % ps
        yield s.TlbFlushRange(page, page + ps, mm)
        return pteval

    def try_to_unmap(self: Kernel, folio: Folio) -> s.KernelGen:
        """try_to_unmap() (v6.12, no TTU_BATCH_FLUSH: each pte is flushed as it goes)."""
        def one(vma: VMA, addr: int) -> s.KernelGen:
            ok = yield from self.try_to_unmap_one(folio, vma, addr)
            return ok and folio.mapcount > 0
        yield from self.rmap_walk(folio, one)

    def try_to_unmap_one(self: Kernel, folio: Folio, vma: VMA, addr: int) -> s.KernelGen:
        """try_to_unmap_one() (v6.12): clear and flush each pte mapping the folio; an anon
        page leaves a swap entry of its swap-cache slot (swap_duplicate, MM_SWAPENTS), a
        file/shmem page just goes (its page cache keeps it)."""
        a = self.arch
        mm = vma.mm
        ps = a.page_size
        rng = MmuNotifierRange(mm, addr, addr + folio.nr_pages * ps, MMU_NOTIFY_CLEAR,
                               "try_to_unmap_one")
        yield from self.mmu_notifier_invalidate_range_start(rng)
        pvmw = self.new_pvmw(folio, vma, addr)
        ret = True
        while (yield from self.page_vma_mapped_walk(pvmw)):
            if pvmw.pte is None:
                # a PMD mapping: reclaim would split it first (not modelled): give up
                ret = False
                yield from self.page_vma_mapped_walk_done(pvmw)
                break
            pteval = yield from self.ptep_clear_flush(mm, pvmw, "try_to_unmap_one")
            if folio.kind == "anon":
                if folio.swap is None or (yield from self.swap_duplicate(folio.swap)) < 0:
                    yield from self.set_entry("pte", pvmw.pte, pteval, "try_to_unmap_one: restore")
                    ret = False
                    yield from self.page_vma_mapped_walk_done(pvmw)
                    break
                mm.rss["anon"] -= 1
                self.mm_swapents(mm, 1)
                yield from self.set_entry("pte", pvmw.pte, self.swp_entry_to_pte(0, folio.swap),
                                          "try_to_unmap_one: set_pte_at(swp_pte)")
            else:
                mm.rss[self.mm_counter_kind(folio)] -= 1
            folio.unmap()
            self.put_folio(folio)
        yield from self.mmu_notifier_invalidate_range_end(rng)
        return ret

    # ---- migration entries -------------------------------------------------------------------
    def try_to_migrate(self: Kernel, folio: Folio) -> s.KernelGen:
        """try_to_migrate() (v6.12)."""
        def one(vma: VMA, addr: int) -> s.KernelGen:
            ok = yield from self.try_to_migrate_one(folio, vma, addr)
            return ok and folio.mapcount > 0
        yield from self.rmap_walk(folio, one)

    def try_to_migrate_one(self: Kernel, folio: Folio, vma: VMA, addr: int) -> s.KernelGen:
        """try_to_migrate_one() (v6.12): each pte mapping the folio becomes a migration entry
        (writable if the pte was); a PMD mapping becomes a PMD migration entry
        (set_pmd_migration_entry) where the arch has THP migration. The rss counters
        keep counting the pages (migration entries are still the process's)."""
        a = self.arch
        mm = vma.mm
        ps = a.page_size
        rng = MmuNotifierRange(mm, addr, addr + folio.nr_pages * ps, MMU_NOTIFY_CLEAR,
                               "try_to_migrate_one")
        yield from self.mmu_notifier_invalidate_range_start(rng)
        pvmw = self.new_pvmw(folio, vma, addr)
        ret = True
        while (yield from self.page_vma_mapped_walk(pvmw)):
            if pvmw.pte is None:
                if not a.thp_migration():
                    ret = False  # Linux splits the pmd first (TTU_SPLIT_HUGE_PMD): not modelled
                    yield from self.page_vma_mapped_walk_done(pvmw)
                    break
                yield from self.set_pmd_migration_entry(pvmw)
                continue
            pteval = yield from self.ptep_clear_flush(mm, pvmw, "try_to_migrate_one")
            pfn = a.pte_pa(pteval) // ps
            yield from self.set_entry("pte", pvmw.pte,
                                      self.make_migration_pte(pfn, a.pte_write(pteval)),
                                      "try_to_migrate_one: set_pte_at(migration entry)")
            folio.unmap()
            self.put_folio(folio)
        yield from self.mmu_notifier_invalidate_range_end(rng)
        return ret

    def set_pmd_migration_entry(self: Kernel, pvmw: Pvmw) -> s.KernelGen:
        """set_pmd_migration_entry() (v6.12, under the pmd lock): pmdp_invalidate (modelled as
        pmdp_huge_get_and_clear + flush), then set_pmd_at(the swap pmd)."""
        a = self.arch
        mm = pvmw.vma.mm
        folio = pvmw.folio
        haddr = pvmw.address - pvmw.address % a.pmd_size
        old = yield from self.get_and_clear_entry("pmd", pvmw.pmd_pa,
                                                  "set_pmd_migration_entry: pmdp_invalidate")
        yield s.TlbFlushRange(haddr, haddr + a.pmd_size, mm)
        swp_type = SWP_MIGRATION_WRITE if a.pte_write(old) else SWP_MIGRATION_READ
        yield from self.set_entry("pmd", pvmw.pmd_pa,
                                  a.mk_swap_pmd(swp_type, folio.pa // a.page_size),
                                  "set_pmd_migration_entry: set_pmd_at")
        folio.unmap()
        self.put_folio(folio)

    def remove_migration_ptes(self: Kernel, src: Folio, dst: Folio) -> s.KernelGen:
        """remove_migration_ptes() (v6.12): rmap_walk of `src` (the folio the entries name)
        putting `dst` back in every migration entry (PVMW_SYNC | PVMW_MIGRATION)."""
        def one(vma: VMA, addr: int) -> s.KernelGen:
            yield from self.remove_migration_pte(src, dst, vma, addr)
            return True
        yield from self.rmap_walk(dst, one)  # dst has src's mapping and index by now

    def remove_migration_pte(self: Kernel, src: Folio, dst: Folio, vma: VMA,
                             addr: int) -> s.KernelGen:
        """remove_migration_pte() (v6.12): each migration entry for `src` in `vma` maps `dst`
        (writable if the entry was); a PMD entry goes through remove_migration_pmd."""
        a = self.arch
        ps = a.page_size
        pvmw = self.new_pvmw(src, vma, addr, PVMW_SYNC | PVMW_MIGRATION)
        while (yield from self.page_vma_mapped_walk(pvmw)):
            if pvmw.pte is None:
                yield from self.remove_migration_pmd(pvmw, dst)
                continue
            old = yield from self.read_entry("pte", pvmw.pte, "remove_migration_pte")
            swp_type, pfn = a.swap_pte_entry(old)
            page_pa = dst.pa + (pfn * ps - src.pa)
            prot = replace(vma.prot, write=vma.prot.write and swp_type == SWP_MIGRATION_WRITE)
            dst.map()
            yield from self.set_entry("pte", pvmw.pte, a.mk_pte(page_pa, prot),
                                      "remove_migration_pte: set_pte_at")

    def remove_migration_pmd(self: Kernel, pvmw: Pvmw, dst: Folio) -> s.KernelGen:
        """remove_migration_pmd() (v6.12, under the pmd lock): the PMD maps `dst`."""
        a = self.arch
        old = yield from self.read_entry("pmd", pvmw.pmd_pa, "remove_migration_pmd")
        prot = replace(pvmw.vma.prot, write=pvmw.vma.prot.write
                       and a.swap_pmd_entry(old)[0] == SWP_MIGRATION_WRITE)
        dst.map()
        yield from self.set_entry("pmd", pvmw.pmd_pa, a.mk_pmd_huge(dst.pa, prot),
                                  "remove_migration_pmd: set_pmd_at")
