"""Page migration: move the folios of a range to new frames through migration entries.

Models mm/migrate.c (v6.12) as the move_pages()/migrate_pages() syscalls
drive it: each folio is found by a page-table lookup under mmap_read_lock
and isolated (one reference), then migrated with no mmap_lock held:
`migrate_folio_unmap()` (folio lock, a locked new folio, `try_to_migrate`
turning every mapping into a migration entry), `move_to_new_folio()`
(`folio_migrate_mapping`: the page cache or swap cache slot moves to the
new folio only if the refcount is what the mappings and caches explain,
else -EAGAIN; then the copy) and `remove_migration_ptes()`, which maps
the new folio where the entries were, or the old one again on failure.
A fault on a migration entry sleeps on the old folio's lock meanwhile.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emu.kernel import steps as s

if TYPE_CHECKING:
    from emu.kernel import Kernel
    from emu.kernel.folio import Folio
    from emu.kernel.mm import MM

EAGAIN = 11


class MigrateMixin:
    def migrate_range(self: Kernel, mm: MM, start: int, end: int) -> s.KernelGen:
        """move_pages() of every page in [start, end) to another frame (v6.12
        do_pages_move): returns how many folios moved."""
        a = self.arch
        ps = a.page_size
        folios: list[Folio] = []
        yield s.DownRead(mm.mmap_lock)
        for addr in range(start, end, ps):
            vma = mm.find_vma(addr)
            if vma is None or vma.kind == "text":
                continue
            folio = yield from self.folio_walk(mm, addr)
            if folio is None:
                continue
            if folio in folios or folio.isolated:
                self.put_folio(folio)
                continue
            folio.isolated = True  # folio_isolate_lru(): the lookup's reference stays
            folios.append(folio)
        yield s.UpRead(mm.mmap_lock)
        moved = 0
        for folio in folios:
            rc = yield from self.migrate_folio(folio)
            moved += rc == 0
        return moved

    def folio_walk(self: Kernel, mm: MM, addr: int) -> s.KernelGen:
        """folio_walk_start() (v6.12): the folio mapped at `addr`, with a reference, or None:
        a huge pmd under pmd_lock, a pte under pte_offset_map_lock."""
        a = self.arch
        pmd_pa = yield from self.pmd_offset_alloc(mm, addr, alloc=False)
        if pmd_pa is None:
            return None
        pmdval = yield from self.pmdp_get_lockless(pmd_pa)
        if a.pmd_trans_huge(pmdval):
            pml = yield from self.pmd_lock(mm, pmd_pa, addr)
            pmdval = yield from self.read_entry("pmd", pmd_pa, "folio_walk_start: pmd")
            folio = self.folio_of(a.pmd_huge_pa(pmdval)) if a.pmd_trans_huge(pmdval) else None
            if folio is not None:
                folio.get()
            yield s.SpinUnlock(pml)
            return folio
        r = yield from self.pte_offset_map_lock(mm, pmd_pa, addr)
        if r is None:
            return None
        ptep, ptl = r
        pte = yield from self.read_entry("pte", ptep, "folio_walk_start: pte")
        folio = self.folio_of(a.pte_pa(pte)) if a.pte_present(pte) and not a.pte_none(pte) else None
        if folio is not None:
            folio.get()
        yield from self.pte_unmap_unlock(ptep, ptl)
        return folio

    def migrate_folio(self: Kernel, src: Folio) -> s.KernelGen:
        """migrate_folio_unmap() + migrate_folio_move() (v6.12, MIGRATE_SYNC): 0 if `src`
        moved (and was freed), else -EAGAIN / -EBUSY with `src` kept."""
        yield s.DownWrite(src.lock)
        if src.large and src.kind == "anon":
            rc = -16  # anon THP migration needs a split first: not modelled (-EBUSY)
            yield s.UpWrite(src.lock)
            return (yield from self.migrate_done(src, rc))
        dst = self.new_folio(src.kind, src.nr_pages, f"{src.kind} folio migrated from {src.pa:#x}")
        dst.get()  # the allocation's reference
        yield s.DownWrite(dst.lock)
        was_mapped = src.mapcount > 0
        if was_mapped:
            yield from self.try_to_migrate(src)
        rc = -EAGAIN
        if src.mapcount == 0:
            rc = yield from self.move_to_new_folio(dst, src)
        if was_mapped:
            target = dst if rc == 0 else src
            yield from self.remove_migration_ptes(src, target)
        yield s.UpWrite(dst.lock)
        yield s.UpWrite(src.lock)
        self.put_folio(dst)
        return (yield from self.migrate_done(src, rc))

    def migrate_done(self: Kernel, src: Folio, rc: int) -> s.KernelGen:
        """migrate_folio_done() / putback (v6.12): the isolation reference goes."""
        src.isolated = False
        self.put_folio(src)
        if rc:
            yield s.Note(f"migrate {src.pa:#x}: {rc}")
        return rc

    def move_to_new_folio(self: Kernel, dst: Folio, src: Folio) -> s.KernelGen:
        """move_to_new_folio() -> migrate_folio() (v6.12): folio_migrate_mapping() under the
        mapping's xa_lock (refcount check and the cache slot moved, one step), then the
        copy (folio_mc_copy)."""
        a = self.arch
        nbytes = src.nr_pages * a.page_size

        def migrate_mapping() -> int:
            # expected: isolation + the page cache's or swap cache's reference
            expected = 1 + (1 if src.in_cache else 0) + (1 if src.swap is not None else 0)
            if src.refcount != expected or src.mapcount:
                return -EAGAIN
            dst.index = src.index
            dst.anon_exclusive = src.anon_exclusive  # folio_migrate_flags()
            if src.in_cache:
                cache = next((v.file for mm in self.mms for v in mm.vmas
                              if v.file is not None and v.file.lookup(src.index) is src), None)
                if cache is None:
                    return -EAGAIN  # no mapping left to find the file by
                for i in range(src.nr_pages):
                    cache.slots[src.index + i] = dst
                dst.in_cache, src.in_cache = True, False
                dst.get()
                src.put()
            if src.swap is not None:
                self.swap.cache[src.swap] = dst
                dst.swap, src.swap = src.swap, None
                dst.get()
                src.put()
            self.mem.write(dst.pa, self.mem.read(src.pa, nbytes))
            return 0
        return (yield s.KernelAtomic(migrate_mapping, "folio_migrate_mapping + copy"))
