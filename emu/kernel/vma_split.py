"""Splitting and merging VMAs: __split_vma, vma_merge, and munmap of part of a VMA.

Models mm/vma.c as of v6.12 (v6.6's mm/mmap.c makes the same steps in
what ptemu can see):

- `split_vma()` (`__split_vma`): with the mmap write lock held, a VMA
  becomes two at `addr`; `vma_adjust_trans_huge()` first splits a huge pmd
  that straddles `addr` (for a shmem/file VMA that clears the pmd, and the
  pages refault by PTEs); a file VMA's new half enters its file's i_mmap
  under i_mmap_rwsem (write), so a split file VMA is found twice by rmap
  walkers (retract_page_tables, truncate), each half with its own pgoff.
- `vma_merge_neighbours()` (`vma_merge` of a VMA whose flags changed, as
  mprotect_fixup asks for): a neighbour with the same kind, protection,
  file and contiguous pgoff is absorbed, and leaves i_mmap under the same
  lock.
- `do_vmi_munmap()`: split at both ends, then the whole-VMA munmap of
  `MemoryMixin.do_munmap`. free_pgtables' floor and ceiling (a PTE table
  still used by a neighbour is kept) are in `free_pgd_range`.

ptemu has no per-VMA locks (faults take mmap_lock for read), so
vma_start_write() is implied by the mmap write lock these paths hold.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from emu.kernel import steps as s

if TYPE_CHECKING:
    from emu.kernel import Kernel
    from emu.kernel.mm import MM, VMA


class VmaSplitMixin:
    def split_vma(self: Kernel, mm: MM, vma: VMA, addr: int) -> s.KernelGen:
        """__split_vma() (v6.12 mm/vma.c): `vma` keeps [start, addr), a new VMA gets
        [addr, end); returns the new one. Caller holds the mmap write lock."""
        assert vma.start < addr < vma.end and addr % self.arch.page_size == 0
        yield from self.vma_adjust_trans_huge(mm, vma, addr)
        new = replace(vma, start=addr, name=f"{vma.name}+{addr - vma.start:#x}")
        new.mm = None
        if vma.file is not None:
            new.pgoff = vma.pgoff + (addr - vma.start) // self.arch.page_size
        if vma.kind == "text":
            new.image = vma.image[addr - vma.start:]
        cache = vma.file
        if cache is not None:  # vma_prepare(): i_mmap_lock_write
            yield s.DownWrite(cache.i_mmap_rwsem)
        vma.end = addr
        if vma.kind == "text":
            vma.image = vma.image[: addr - vma.start]
        mm.insert_vma(new)
        if cache is not None:  # vma_complete(): the new half joins the interval tree
            cache.vmas.insert(cache.vmas.index(vma) + 1, new)
            yield s.UpWrite(cache.i_mmap_rwsem)
        return new

    def vma_adjust_trans_huge(self: Kernel, mm: MM, vma: VMA, addr: int) -> s.KernelGen:
        """vma_adjust_trans_huge() (v6.12): a huge pmd mapping across the split point is split
        first (split_huge_pmd_if_needed, emu.kernel.huge_memory): an anon THP is remapped by
        PTEs from its deposited table; for a shmem/file VMA __split_huge_pmd_locked() clears
        the pmd (pmdp_huge_clear_flush, with the rmap and counters dropped): the pages refault
        by PTEs."""
        a = self.arch
        if addr % a.pmd_size == 0 or not a.supports_huge_pmd():
            return
        pmd_pa = yield from self.pmd_offset_alloc(mm, addr, alloc=False)
        if pmd_pa is None:
            return
        pmdval = yield from self.pmdp_get_lockless(pmd_pa)
        if a.pmd_trans_huge(pmdval):
            yield from self.split_huge_pmd(vma, pmd_pa, addr)

    def vma_mergeable(self: Kernel, a: VMA, b: VMA) -> bool:
        """is_mergeable_vma() + the pgoff test of can_vma_merge_after() (v6.12), for `a`
        directly below `b`."""
        if a.end != b.start or a.kind != b.kind or a.prot != b.prot or a.file is not b.file:
            return False
        if (a.uffd_wp, a.uffd_missing, a.pmd_mapping, a.hugepage, a.private) != \
                (b.uffd_wp, b.uffd_missing, b.pmd_mapping, b.hugepage, b.private):  # vm_flags
            return False
        if a.kind == "text":
            return False  # each program image is its own mapping
        if a.file is not None:
            return a.pgoff + (a.end - a.start) // self.arch.page_size == b.pgoff
        return True

    def vma_merge_neighbours(self: Kernel, mm: MM, vma: VMA) -> s.KernelGen:
        """vma_merge() (v6.12 vma_modify -> vma_merge_existing_range) of a VMA whose flags have
        changed: absorb the next and previous VMAs where they may merge; returns the VMA
        that now covers `vma`'s range."""
        i = mm.vmas.index(vma)
        nxt = mm.vmas[i + 1] if i + 1 < len(mm.vmas) else None
        if nxt is not None and self.vma_mergeable(vma, nxt):
            yield from self._vma_absorb(mm, vma, nxt)
        prev = mm.vmas[i - 1] if i > 0 else None
        if prev is not None and self.vma_mergeable(prev, vma):
            yield from self._vma_absorb(mm, prev, vma)
            vma = prev
        return vma

    def _vma_absorb(self: Kernel, mm: MM, low: VMA, high: VMA) -> s.KernelGen:
        """`low` grows over `high`, which leaves the mm and i_mmap (vma_prepare /
        vma_complete under i_mmap_rwsem for write)."""
        cache = low.file
        if cache is not None:
            yield s.DownWrite(cache.i_mmap_rwsem)
        low.end = high.end
        low.anon_vma = low.anon_vma or high.anon_vma
        mm.vmas.remove(high)
        if cache is not None:
            if high in cache.vmas:
                cache.vmas.remove(high)
            yield s.UpWrite(cache.i_mmap_rwsem)

    def split_range(self: Kernel, mm: MM, start: int, end: int) -> s.KernelGen:
        """Split the VMAs straddling `start` and `end` so [start, end) is whole VMAs
        (vms_gather_munmap_vmas / vma_modify, v6.12); returns those VMAs, lowest first."""
        first = mm.find_vma(start)
        if first is not None and first.start < start:
            yield from self.split_vma(mm, first, start)
        last = mm.find_vma(end - 1)
        if last is not None and last.end > end:
            yield from self.split_vma(mm, last, end)
        return [v for v in mm.vmas if start <= v.start and v.end <= end]
