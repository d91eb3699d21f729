"""The generic page-table walker: walk_page_range() and its per-level loops.

Models mm/pagewalk.c as of v6.12 (v6.6 is the same for what ptemu can
observe) after seed 003's patches 09/32 ("mm/pagewalkers: ACTION_AGAIN if
pte_offset_map_lock() fails") and 10/32 ("mm/pagewalk: walk_pte_range()
allow for pte_offset_map()"): `walk_pte_range()` maps the PTE table with
`pte_offset_map_lock()`, which may now find no table there (retracted by
khugepaged, reclaimed by MADV_DONTNEED); it then sets `ACTION_AGAIN` and
`walk_pmd_range()` re-reads the pmd, checking a second time after
`walk_pte_range()` returns. A `pmd_entry` callback that maps the table
itself (mincore, ...) does the same on its own failure.

A walk's callbacks are kernel generators taking the `MmWalk` first; they
yield at every shared access like any routine, and return an errno-style
int (0 to go on). The walk holds whatever lock its caller took
(mmap_read_lock for PGWALK_RDLOCK walks); it takes no lock of its own above
the ptl.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from emu.kernel import steps as s

if TYPE_CHECKING:
    from emu.kernel import Kernel
    from emu.kernel.mm import MM, VMA

# enum page_walk_action (include/linux/pagewalk.h)
ACTION_SUBTREE = 0  # descend to the next level
ACTION_CONTINUE = 1  # do not descend
ACTION_AGAIN = 2  # call the entry callback again (the entry changed under us)

EINVAL = 22


@dataclass
class MmWalkOps:
    """struct mm_walk_ops: the callbacks a walk makes (None: not wanted).

    pmd_entry(walk, pmd_pa, addr, next), pte_entry(walk, ptep, addr, next)
    and pte_hole(walk, addr, next, depth) are generator functions.
    """

    pmd_entry: Callable[..., s.KernelGen] | None = None
    pte_entry: Callable[..., s.KernelGen] | None = None
    pte_hole: Callable[..., s.KernelGen] | None = None
    name: str = "walk"


@dataclass
class MmWalk:
    """struct mm_walk: the walk in progress, handed to every callback."""

    ops: MmWalkOps
    mm: MM
    vma: VMA | None = None
    private: Any = None
    action: int = ACTION_SUBTREE


class PageWalkMixin:
    def walk_page_range(self: Kernel, mm: MM, start: int, end: int, ops: MmWalkOps,
                        private: Any = None) -> s.KernelGen:
        """walk_page_range() (v6.12): walk [start, end) VMA by VMA; holes outside VMAs go to
        pte_hole with depth -1. The caller holds mmap_lock (PGWALK_RDLOCK)."""
        if start >= end:
            return -EINVAL
        walk = MmWalk(ops, mm, private=private)
        err = 0
        while start < end:
            vma = next((v for v in mm.vmas if v.end > start), None)  # find_vma()
            if vma is None or start < vma.start:
                walk.vma = None
                nxt = end if vma is None else min(end, vma.start)
                if ops.pte_hole is not None:
                    err = yield from ops.pte_hole(walk, start, nxt, -1)
            else:
                walk.vma = vma
                nxt = min(end, vma.end)
                err = yield from self.walk_pgd_range(walk, start, nxt)
            if err:
                break
            start = nxt
        return err

    def walk_pgd_range(self: Kernel, walk: MmWalk, addr: int, end: int) -> s.KernelGen:
        """walk_pgd_range() .. walk_pud_range() (v6.12): the levels above the pmd, as the arch
        folds them; an empty entry is a hole at that level's depth."""
        return (yield from self._walk_upper(walk, 0, walk.mm.root, addr, end))

    def _walk_upper(self: Kernel, walk: MmWalk, depth: int, table: int, addr: int,
                    end: int) -> s.KernelGen:
        a = self.arch
        uppers = self.upper_levels()
        if depth == len(uppers):
            return (yield from self.walk_pmd_range(walk, table, addr, end))
        name = uppers[depth]
        lv = a.level(name)
        span = 1 << lv.shift
        err = 0
        while addr < end:
            nxt = min(end, addr - addr % span + span)
            epa = self.entry_addr(name, table, addr)
            val = yield from self.read_entry(name, epa, f"walk_{name}_range")
            if a.entry_none(name, val) or not a.entry_present(name, val):
                if walk.ops.pte_hole is not None:
                    err = yield from walk.ops.pte_hole(walk, addr, nxt, depth)
            elif walk.ops.pmd_entry is not None or walk.ops.pte_entry is not None:
                err = yield from self._walk_upper(walk, depth + 1, a.table_pa(name, val), addr, nxt)
            if err:
                break
            addr = nxt
        return err

    def walk_pmd_range(self: Kernel, walk: MmWalk, pmd_table: int, addr: int,
                       end: int) -> s.KernelGen:
        """walk_pmd_range() (v6.12): per pmd: none -> pte_hole; pmd_entry; ACTION_AGAIN re-reads the
        pmd, before and (seed 003 10/32) after walk_pte_range()."""
        a = self.arch
        ops = walk.ops
        pmd_size = a.pmd_size
        depth = len(self.upper_levels())
        err = 0
        while addr < end:
            nxt = min(end, addr - addr % pmd_size + pmd_size)
            pmd_pa = self.entry_addr("pmd", pmd_table, addr)
            while True:  # again:
                pmdval = yield from self.read_entry("pmd", pmd_pa, "walk_pmd_range")
                if a.entry_none("pmd", pmdval):
                    if ops.pte_hole is not None:
                        err = yield from ops.pte_hole(walk, addr, nxt, depth)
                    break
                walk.action = ACTION_SUBTREE
                if ops.pmd_entry is not None:
                    err = yield from ops.pmd_entry(walk, pmd_pa, addr, nxt)
                if err:
                    break
                if walk.action == ACTION_AGAIN:
                    continue
                if walk.action == ACTION_CONTINUE or ops.pte_entry is None:
                    break
                # Linux calls split_huge_pmd() here; ptemu does not split (anon
                # THP is not modelled yet), so a huge pmd is left to pmd_entry.
                if a.pmd_trans_huge(pmdval):
                    break
                err = yield from self.walk_pte_range(walk, pmd_pa, addr, nxt)
                if err:
                    break
                if walk.action == ACTION_AGAIN:
                    continue
                break
            if err:
                break
            addr = nxt
        return err

    def walk_pte_range(self: Kernel, walk: MmWalk, pmd_pa: int, addr: int,
                       end: int) -> s.KernelGen:
        """walk_pte_range() (v6.12, seed 003 09/32): pte_offset_map_lock(); no table -> ACTION_AGAIN.
        """
        r = yield from self.pte_offset_map_lock(walk.mm, pmd_pa, addr)
        if r is None:
            walk.action = ACTION_AGAIN
            return 0
        ptep, ptl = r
        err = yield from self.walk_pte_range_inner(walk, ptep, addr, end)
        yield from self.pte_unmap_unlock(ptep, ptl)
        return err

    def walk_pte_range_inner(self: Kernel, walk: MmWalk, ptep: int, addr: int,
                             end: int) -> s.KernelGen:
        """walk_pte_range_inner() (v6.12): pte_entry for each page of [addr, end)."""
        ps = self.arch.page_size
        esize = self.arch.level("pte").entry_size
        err = 0
        while addr < end:
            err = yield from walk.ops.pte_entry(walk, ptep, addr, addr + ps)
            if err:
                break
            addr += ps
            ptep += esize
        return err
