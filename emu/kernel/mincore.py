"""mincore(2): which pages of a range are resident, by a walk of the page tables.

Models mm/mincore.c as of v6.12 (v6.6 is the same steps): the syscall works
in chunks of one page of result bytes, each under mmap_read_lock, walked by
walk_page_range() with `mincore_pte_range` as pmd_entry and
`mincore_unmapped_range` as pte_hole, the chunk copied out after the lock is
dropped. `mincore_pte_range()` takes a huge pmd under pmd_lock
(pmd_trans_huge_lock) and otherwise maps the PTE table with
`pte_offset_map_lock()`; since seed 003 09/32 that may find no table (the
walk saw one, then khugepaged retracted it or MADV_DONTNEED reclaimed it)
and the callback asks for `ACTION_AGAIN`, so walk_pmd_range() re-reads the
pmd and reports the range as a hole (page-cache lookups for a file or shmem
VMA, zeroes for anon). mmap_read_lock does not exclude either: the table
may only be read under the RCU read lock pte_offset_map() takes.

The result buffer stands for the page mincore() allocates with
__get_free_page(); ptemu zeroes it, so a byte the walk never wrote reads 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from emu.kernel import steps as s
from emu.kernel.pagewalk import ACTION_AGAIN, MmWalk, MmWalkOps

if TYPE_CHECKING:
    from emu.kernel import Kernel
    from emu.kernel.mm import MM, VMA

EINVAL = 22
ENOMEM = 12
EFAULT = 14


@dataclass
class MincoreVec:
    """walk->private: the result buffer and how far the walk has filled it."""

    buf: bytearray
    pos: int = 0


class MincoreMixin:
    def mincore_walk_ops(self: Kernel) -> MmWalkOps:
        """mincore_walk_ops (v6.12): pmd_entry and pte_hole (no hugetlb in ptemu)."""
        return MmWalkOps(pmd_entry=self.mincore_pte_range, pte_hole=self.mincore_unmapped_range,
                         name="mincore")

    def mincore_page(self: Kernel, vma: VMA, index: int) -> s.KernelGen:
        """mincore_page() (v6.12): is the page-cache folio at index there (uptodate)?"""
        cache = vma.file

        def lookup() -> int:
            folio = cache.lookup(index)
            return 1 if folio is not None and folio.in_cache else 0

        return (yield s.KernelAtomic(lookup, f"mincore_page: filemap_get_incore_folio {index}"))

    def _mincore_unmapped_range(self: Kernel, vma: VMA, addr: int, end: int,
                                 vec: MincoreVec, at: int) -> s.KernelGen:
        """__mincore_unmapped_range() (v6.12): page-cache residency for a file VMA, else 0."""
        nr = (end - addr) // self.arch.page_size
        for i in range(nr):
            if vma.file is not None:
                vec.buf[at + i] = yield from self.mincore_page(vma, self.vma_index(vma, addr) + i)
            else:
                vec.buf[at + i] = 0
        return nr

    def mincore_unmapped_range(self: Kernel, walk: MmWalk, addr: int, end: int,
                               depth: int) -> s.KernelGen:
        """mincore_unmapped_range() (v6.12): the pte_hole callback."""
        vec: MincoreVec = walk.private
        vec.pos += yield from self._mincore_unmapped_range(walk.vma, addr, end, vec, vec.pos)
        return 0

    def pmd_trans_huge_lock(self: Kernel, mm: MM, pmd_pa: int, addr: int) -> s.KernelGen:
        """pmd_trans_huge_lock() (v6.12): the pmd lock if the pmd maps a huge page or is a
        swap (migration) pmd, else None."""
        a = self.arch
        val = yield from self.read_entry("pmd", pmd_pa, "pmd_trans_huge_lock")
        if not (a.pmd_trans_huge(val) or a.is_swap_pmd(val)):
            return None
        ptl = yield from self.pmd_lock(mm, pmd_pa, addr)
        val = yield from self.read_entry("pmd", pmd_pa, "__pmd_trans_huge_lock recheck")
        if a.pmd_trans_huge(val) or a.is_swap_pmd(val):
            return ptl
        yield s.SpinUnlock(ptl)
        return None

    def mincore_pte_range(self: Kernel, walk: MmWalk, pmd_pa: int, addr: int,
                          end: int) -> s.KernelGen:
        """mincore_pte_range() (v6.12, seed 003 09/32): the pmd_entry callback."""
        a = self.arch
        vec: MincoreVec = walk.private
        nr = (end - addr) // a.page_size
        ptl = yield from self.pmd_trans_huge_lock(walk.mm, pmd_pa, addr)
        if ptl is not None:
            vec.buf[vec.pos: vec.pos + nr] = b"\x01" * nr
            yield s.SpinUnlock(ptl)
            vec.pos += nr
            return 0
        r = yield from self.mincore_map_pte(walk.mm, pmd_pa, addr)
        if r is None:
            return (yield from self.mincore_no_table(walk, addr, end))
        ptep, ptl = r
        esize = a.level("pte").entry_size
        for i in range(nr):
            pte = yield from self.read_entry("pte", ptep + i * esize, "mincore_pte_range")
            if a.pte_none(pte):
                # pte_none_mostly(): look the page up in the cache, as for a hole
                yield from self._mincore_unmapped_range(walk.vma, addr + i * a.page_size,
                                                         addr + (i + 1) * a.page_size, vec,
                                                         vec.pos + i)
            elif a.is_swap_pte(pte) and self.pte_to_swp_entry(pte)[0] == 0:
                # a swap entry: resident if its slot's folio is in the swap cache
                vec.buf[vec.pos + i] = int(self.pte_to_swp_entry(pte)[1] in self.swap.cache)
            else:
                # present, or a migration entry ("always uptodate")
                vec.buf[vec.pos + i] = 1
        yield from self.mincore_unmap_pte(ptep, ptl)
        vec.pos += nr
        return 0

    def mincore_map_pte(self: Kernel, mm: MM, pmd_pa: int, addr: int) -> s.KernelGen:
        """mincore_pte_range()'s pte_offset_map_lock() (v6.5+): (ptep, ptl) or None."""
        return (yield from self.pte_offset_map_lock(mm, pmd_pa, addr))

    def mincore_unmap_pte(self: Kernel, ptep: int, ptl) -> s.KernelGen:  # noqa: ANN001
        """mincore_pte_range()'s pte_unmap_unlock() (v6.5+)."""
        yield from self.pte_unmap_unlock(ptep, ptl)

    def mincore_no_table(self: Kernel, walk: MmWalk, addr: int, end: int) -> s.KernelGen:
        """No PTE table after all (seed 003 09/32): walk_pmd_range() must look again."""
        walk.action = ACTION_AGAIN
        return 0
        yield

    def do_mincore(self: Kernel, mm: MM, addr: int, pages: int, vec: MincoreVec) -> s.KernelGen:
        """do_mincore() (v6.12): one chunk, within one VMA; pages done or -ENOMEM."""
        ps = self.arch.page_size
        vma = mm.find_vma(addr)  # vma_lookup()
        if vma is None:
            return -ENOMEM
        end = min(vma.end, addr + pages * ps)
        # can_do_mincore(): anonymous, or a file the caller could open for
        # writing; every ptemu mapping's object is its own
        err = yield from self.walk_page_range(mm, addr, end, self.mincore_walk_ops(), vec)
        if err < 0:
            return err
        return (end - addr) // ps

    def mincore(self: Kernel, mm: MM, start: int, length: int,
                copy_to_user: Callable[[int, bytes], bool]) -> s.KernelGen:
        """sys_mincore() (v6.12): chunks of one page of result bytes, each walked under
        mmap_read_lock and copied out (copy_to_user(offset, data) -> ok) after the unlock."""
        ps = self.arch.page_size
        if start % ps:
            return -EINVAL
        pages = -(-length // ps)
        done = 0
        while pages:
            vec = MincoreVec(bytearray(ps))  # __get_free_page(GFP_USER), zeroed here
            yield s.DownRead(mm.mmap_lock)
            retval = yield from self.do_mincore(mm, start, min(pages, ps), vec)
            yield s.UpRead(mm.mmap_lock)
            if retval <= 0:
                return retval
            if not copy_to_user(done, bytes(vec.buf[:retval])):
                return -EFAULT
            pages -= retval
            done += retval
            start += retval * ps
        return 0
