"""userfaultfd: UFFDIO_REGISTER and UFFDIO_COPY (mfill_atomic) into anon and shmem.

Models fs/userfaultfd.c's registration and mm/userfaultfd.c's mfill_atomic()
as of v6.6 (mmap_read_lock held over the copy; 6.12 takes the VMA read lock
and map_changing_lock instead, which exclude the same writers for what
ptemu models), and mm/shmem.c's shmem_mfill_atomic_pte() (v6.12):

- UFFDIO_REGISTER, under mmap_write_lock, sets VM_UFFD_MISSING and/or
  VM_UFFD_WP on the VMAs of the range (userfaultfd_set_ctx(); no pte is
  written). A VM_UFFD_WP VMA is one retract_page_tables() and
  collapse_pte_mapped_thp() must leave alone (they re-check under the ptl:
  the registration takes no rmap lock).
- UFFDIO_COPY, per page: mm_alloc_pmd(); pmdp_get_lockless(); a none pmd
  gets a table (__pte_alloc); re-read: not present or huge -> -EEXIST, bad
  -> -EFAULT; then a new folio is filled from the source (copy_from_user)
  and mfill_atomic_install_pte() maps it with pte_offset_map_lock(), which
  since seed 003 15/32 ("mm/userfaultfd: allow pte_offset_map_lock() to
  fail", -EAGAIN per PeterX) may find the table gone: a retract or an
  empty-table reclaim ran after the pmd read. -EAGAIN goes back to the
  caller, with the pages copied so far counted.
- shmem: the folio is added to the page cache first (-EEXIST if the index
  is taken: a fault or collapse_file() got there first) and removed again
  if the pte cannot be installed.

Not modelled: faults in a MISSING-registered range are resolved as if it
were not registered (no handle_userfault() round trip to a handler thread),
registration of part of a VMA (Linux splits it: -EINVAL here), the
-ENOENT retry of a source that faults, UFFDIO_MOVE, UFFDIO_WRITEPROTECT.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from emu.kernel import steps as s

if TYPE_CHECKING:
    from emu.kernel import Kernel
    from emu.kernel.folio import Folio
    from emu.kernel.mm import MM, VMA

UFFDIO_REGISTER_MODE_MISSING = 1
UFFDIO_REGISTER_MODE_WP = 2
EAGAIN = 11
EFAULT = 14
EEXIST = 17
EINVAL = 22
ENOENT = 2


class UserfaultfdMixin:
    def userfaultfd_register(self: Kernel, mm: MM, start: int, end: int,
                             mode: int) -> s.KernelGen:
        """userfaultfd_register() (v6.6): set VM_UFFD_MISSING/WP on whole VMAs of the range."""
        yield s.DownWrite(mm.mmap_lock)
        vmas = [v for v in mm.vmas if v.start < end and start < v.end]
        covered = sum(min(v.end, end) - max(v.start, start) for v in vmas)
        if not vmas or covered != end - start or any(v.kind == "text" for v in vmas) \
                or any(v.start < start or v.end > end for v in vmas):
            yield s.UpWrite(mm.mmap_lock)
            return -EINVAL
        for vma in vmas:  # userfaultfd_set_ctx(): vma_start_write + vm_flags_reset
            vma.uffd_missing = bool(mode & UFFDIO_REGISTER_MODE_MISSING)
            vma.uffd_wp = bool(mode & UFFDIO_REGISTER_MODE_WP)
        yield s.UpWrite(mm.mmap_lock)
        return 0

    def mfill_atomic_copy(self: Kernel, mm: MM, dst: int, length: int,
                          copy_from_user: Callable[[int], bytes | None]) -> s.KernelGen:
        """mfill_atomic() for UFFDIO_COPY (v6.6): bytes copied, or a negative errno if none.

        `copy_from_user(offset)` returns the source page at that offset, or None if
        it cannot be read (-EFAULT)."""
        a = self.arch
        ps = a.page_size
        yield s.DownRead(mm.mmap_lock)
        vma = mm.find_vma(dst)
        # validate_dst_vma(): all of it in one registered VMA, anon or shmem
        if vma is None or dst + length > vma.end or not (vma.uffd_missing or vma.uffd_wp) \
                or vma.kind not in ("anon", "shmem"):
            yield s.UpRead(mm.mmap_lock)
            return -ENOENT
        if vma.private:
            # "Ensure the dst_vma has a anon_vma": a MAP_PRIVATE file VMA gets anon
            # copies (v6.6 mfill_atomic(); anon VMAs get it at their first pte here)
            yield from self.anon_vma_prepare(vma)
        copied = 0
        err = 0
        while copied < length:
            addr = dst + copied
            pmd_pa = yield from self.pmd_offset_alloc(mm, addr, alloc=True)  # mm_alloc_pmd()
            pmdval = yield from self.pmdp_get_lockless(pmd_pa)
            if a.entry_none("pmd", pmdval):
                yield from self.pte_alloc(mm, pmd_pa, addr)
            pmdval = yield from self.pmdp_get_lockless(pmd_pa)
            # "If the dst_pmd is THP don't override it and just be strict", which
            # includes a pmd that went none again after __pte_alloc()
            if not a.entry_present("pmd", pmdval) or a.pmd_trans_huge(pmdval):
                err = -EEXIST
                break
            if a.entry_bad("pmd", pmdval):
                err = -EFAULT
                break
            data = copy_from_user(copied)
            if data is None:
                err = -EFAULT
                break
            err = yield from self.mfill_atomic_pte(mm, vma, pmd_pa, addr, data)
            if err:
                break
            copied += ps
        yield s.UpRead(mm.mmap_lock)
        if err:
            yield s.Note(f"mfill_atomic {dst + copied:#x}: {err}")
        return copied if copied else err

    def mfill_atomic_pte(self: Kernel, mm: MM, vma: VMA, pmd_pa: int, addr: int,
                         data: bytes) -> s.KernelGen:
        """mfill_atomic_pte() (v6.6): private (anon, or MAP_PRIVATE shmem) ->
        mfill_atomic_pte_copy, shared shmem -> shmem_mfill_atomic_pte."""
        if vma.kind == "shmem" and not vma.private:
            return (yield from self.shmem_mfill_atomic_pte(mm, vma, pmd_pa, addr, data))
        folio = self.new_folio("anon", 1, f"anon page for {addr:#x} (UFFDIO_COPY)")
        folio.index = self.vma_index(vma, addr)  # linear_page_index(): the anon rmap's key
        folio.get()  # the allocation's reference
        self.mem.write(folio.pa, data)  # copy_from_user() into the new page
        ret = yield from self.mfill_atomic_install_pte(mm, vma, pmd_pa, addr, folio, folio.pa)
        self.put_folio(folio)  # ours; the mapping holds its own
        return ret

    def shmem_mfill_atomic_pte(self: Kernel, mm: MM, vma: VMA, pmd_pa: int, addr: int,
                               data: bytes) -> s.KernelGen:
        """shmem_mfill_atomic_pte() (v6.12): a new locked folio, into the page cache, then
        the pte; out_delete_from_cache if the pte cannot be installed."""
        cache = vma.file
        index = self.vma_index(vma, addr)
        folio = self.new_folio("shmem", 1, f"shmem page {index} of {cache.name} (UFFDIO_COPY)")
        folio.get()  # the allocation's reference
        self.mem.write(folio.pa, data)
        yield s.DownWrite(folio.lock)  # __folio_set_locked()
        if index >= cache.size_pages:
            ret = -EFAULT
        elif cache.lookup(index) is not None:  # shmem_add_to_page_cache(): slot taken
            ret = -EEXIST
        else:
            folio.index, folio.in_cache = index, True
            folio.get()  # the page cache's reference
            cache.slots[index] = folio
            ret = yield from self.mfill_atomic_install_pte(mm, vma, pmd_pa, addr, folio, folio.pa)
            if ret:  # filemap_remove_folio()
                if cache.slots.get(index) is folio:
                    del cache.slots[index]
                folio.in_cache = False
                self.put_folio(folio)
        yield s.UpWrite(folio.lock)
        self.put_folio(folio)
        return ret

    def mfill_atomic_install_pte(self: Kernel, mm: MM, vma: VMA, pmd_pa: int, addr: int,
                                 folio: Folio, page: int) -> s.KernelGen:
        """mfill_atomic_install_pte() (v6.6, seed 003 15/32): pte_offset_map_lock(); no table ->
        -EAGAIN; a pte there -> -EEXIST; else rmap, counter, set_pte_at."""
        a = self.arch
        r = yield from self.mfill_map_pte(mm, pmd_pa, addr)
        if r is None:
            return -EAGAIN
        ptep, ptl = r
        ret = 0
        if vma.file is not None and self.vma_index(vma, addr) >= vma.file.size_pages:
            ret = -EFAULT  # mfill_file_over_size()
        else:
            cur = yield from self.read_entry("pte", ptep, "mfill_atomic_install_pte")
            if not a.pte_none(cur):
                ret = -EEXIST
        if not ret:
            pte = a.pte_mkdirty(a.pte_mkyoung(a.mk_pte(page, vma.prot)))
            folio.map()
            if folio.kind == "anon":
                vma.anon_vma = True  # folio_add_new_anon_rmap()
                folio.anon_exclusive = True
            mm.rss[self.mm_counter_kind(folio)] += 1
            yield from self.set_entry("pte", ptep, pte, "mfill_atomic_install_pte: set_pte_at")
        yield from self.mfill_unmap_pte(ptep, ptl)
        return ret

    def mfill_map_pte(self: Kernel, mm: MM, pmd_pa: int, addr: int) -> s.KernelGen:
        """mfill_atomic_install_pte()'s pte_offset_map_lock() (v6.5+): (ptep, ptl) or None."""
        return (yield from self.pte_offset_map_lock(mm, pmd_pa, addr))

    def mfill_unmap_pte(self: Kernel, ptep: int, ptl) -> s.KernelGen:  # noqa: ANN001
        """mfill_atomic_install_pte()'s pte_unmap_unlock() (v6.5+)."""
        yield from self.pte_unmap_unlock(ptep, ptl)
