"""mremap: moving a mapping and its page tables.

Models mm/mremap.c as of v6.12 (v6.13 for move_ptes' new-table mapping;
each routine says its version), under `mmap_write_lock`:

- `do_mremap()`: shrink in place (unmap the tail), grow in place when the
  gap after the VMA is free, or with MREMAP_MAYMOVE|MREMAP_FIXED
  `mremap_to()`: unmap the destination, then `move_vma()`.
- `move_vma()`: `copy_vma()` makes the new VMA (merged into the VMA below
  the destination where it may be, which sets `need_rmap_locks`; a new VMA
  is linked into i_mmap after the old one, so rmap walkers see the old ptes,
  or the new, or both, and needs none), `move_page_tables()`, then the old
  range is unmapped (do_vmi_munmap, the write lock kept).
- `move_page_tables()`: under an MMU_NOTIFY_UNMAP range, per PMD extent: a
  huge pmd by `move_huge_pmd()`; a whole, PMD-aligned PTE table on arches
  with HAVE_MOVE_PMD (x86, powerpc radix) by `move_normal_pmd()`, always
  under the rmap locks (97113eb39fa7, 5.19); otherwise `move_ptes()`, whose
  -EAGAIN (a table that went away) re-reads the old pmd.
- `move_normal_pmd()`: pmd_lock of the old pmd, the new one nested; from
  6.12 (6fa1066fc5d0, "mm/mremap: fix move_normal_pmd/retract_page_tables
  race") the old pmd is re-read under those locks and the move abandoned if
  it no longer points to a table: move_page_tables() looked at it before
  the rmap locks, and retract_page_tables() (i_mmap_rwsem read, no mmap
  lock) may have taken the table in between. Before 6.12 the move went on
  and pmd_populate() made the new pmd from an empty one.
- `move_ptes()`: old `pte_offset_map_lock()`, new `pte_offset_map_rw_nolock()`
  with no pmd_same recheck (seed 001: the new table is empty, so
  retract_page_tables(), which only runs once collapse_file() has unmapped
  the range, finds nothing to race in it, and the exclusive mmap_lock keeps
  everything else off it); the new ptl nested; per pte get-and-clear at old
  and set at new; if any was present, `flush_tlb_range()` of the old range
  before either ptl is dropped (eb66ae030829, "mremap: properly flush TLB
  before releasing the page": the new ptl keeps the page from being freed
  by an rmap walker until no TLB maps the old address).

A split or moved VMA shares its anon_vma (and its lock) with the original, as
anon_vma_clone() links it. MREMAP_DONTUNMAP, and a move without
MREMAP_FIXED (get_unmapped_area placement), are not modelled.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from emu.kernel import steps as s
from emu.kernel.mmu_notifier import MMU_NOTIFY_UNMAP, MmuNotifierRange
from emu.kernel.version import MOVE_PMD_RECHECK

if TYPE_CHECKING:
    from emu.kernel import Kernel
    from emu.kernel.mm import MM, VMA
    from emu.kernel.sync import Spinlock

MREMAP_MAYMOVE, MREMAP_FIXED, MREMAP_DONTUNMAP = 1, 2, 4  # include/uapi/linux/mman.h
EAGAIN, ENOMEM, EFAULT, EINVAL = 11, 12, 14, 22


class MremapMixin:
    def do_mremap(self: Kernel, mm: MM, addr: int, old_len: int, new_len: int, flags: int,
                  new_addr: int) -> s.KernelGen:
        """do_mremap() (v6.12) on page-aligned, validated arguments: the new address, or
        -errno."""
        yield s.DownWrite(mm.mmap_lock)
        if mm.find_vma(addr) is None:  # vma_lookup()
            yield s.UpWrite(mm.mmap_lock)
            return -EFAULT
        if flags & MREMAP_FIXED:
            ret = yield from self.mremap_to(mm, addr, old_len, new_addr, new_len)
        else:
            ret = yield from self.mremap_in_place(mm, addr, old_len, new_len, flags)
        yield s.UpWrite(mm.mmap_lock)
        return ret

    def vma_to_resize(self: Kernel, mm: MM, addr: int, old_len: int) -> VMA | int:
        """vma_to_resize() (v6.12): the VMA holding [addr, addr+old_len), or -EFAULT."""
        vma = mm.find_vma(addr)
        if vma is None or old_len > vma.end - addr:
            return -EFAULT
        return vma

    def mremap_in_place(self: Kernel, mm: MM, addr: int, old_len: int, new_len: int,
                        flags: int) -> s.KernelGen:
        """do_mremap()'s shrink and grow without MREMAP_FIXED (v6.12)."""
        if old_len >= new_len:  # "Always allow a shrinking remap"
            if old_len > new_len:
                yield from self.do_vmi_munmap(mm, addr + new_len, addr + old_len, unlock=False)
            return addr
        vma = self.vma_to_resize(mm, addr, old_len)
        if isinstance(vma, int):
            return vma
        delta = new_len - old_len
        if addr + old_len == vma.end and vma.end + delta <= 1 << self.arch.va_bits \
                and mm.overlaps(vma.end, vma.end + delta) is None:
            yield from self.vma_expand(vma, vma.end + delta)  # vma_expandable()
            return addr
        if flags & MREMAP_MAYMOVE:
            yield s.Note("mremap: a move to a kernel-chosen address is not modelled")
        return -ENOMEM

    def vma_expand(self: Kernel, vma: VMA, end: int) -> s.KernelGen:
        """vma_merge_extend() -> vma_expand() (v6.12): the VMA grows, under i_mmap_rwsem for a
        file VMA (its interval-tree node changes)."""
        cache = vma.file
        if cache is not None:
            yield s.DownWrite(cache.i_mmap_rwsem)
        vma.end = end
        if cache is not None:
            yield s.UpWrite(cache.i_mmap_rwsem)

    def mremap_to(self: Kernel, mm: MM, addr: int, old_len: int, new_addr: int,
                  new_len: int) -> s.KernelGen:
        """mremap_to() (v6.12): unmap the destination (and the old tail when shrinking),
        then move_vma()."""
        if addr + old_len > new_addr and new_addr + new_len > addr:
            return -EINVAL  # the ranges overlap
        yield from self.do_vmi_munmap(mm, new_addr, new_addr + new_len, unlock=False)
        if old_len > new_len:
            yield from self.do_vmi_munmap(mm, addr + new_len, addr + old_len, unlock=False)
            old_len = new_len
        vma = self.vma_to_resize(mm, addr, old_len)
        if isinstance(vma, int):
            return vma
        return (yield from self.move_vma(mm, vma, addr, old_len, new_len, new_addr))

    def move_vma(self: Kernel, mm: MM, vma: VMA, old_addr: int, old_len: int, new_len: int,
                 new_addr: int) -> s.KernelGen:
        """move_vma() (v6.12): copy_vma, move_page_tables, unmap the old range."""
        new_pgoff = vma.pgoff + (old_addr - vma.start) // self.arch.page_size
        new_vma, need_rmap_locks = yield from self.copy_vma(mm, vma, old_addr, new_addr,
                                                            new_len, new_pgoff)
        yield from self.move_page_tables(mm, vma, old_addr, new_vma, new_addr, old_len,
                                         need_rmap_locks)
        new_vma.anon_vma = new_vma.anon_vma or vma.anon_vma
        yield from self.do_vmi_munmap(mm, old_addr, old_addr + old_len, unlock=False)
        return new_addr

    def copy_vma(self: Kernel, mm: MM, vma: VMA, old_addr: int, new_addr: int, new_len: int,
                 new_pgoff: int) -> s.KernelGen:
        """copy_vma() (v6.12): (the VMA at the destination, need_rmap_locks).

        A file VMA is merged into the VMA ending at new_addr where is_mergeable (need_rmap_locks
        = its pgoff <= the old one's: an rmap walk may visit it before the old
        VMA); else a new VMA linked into i_mmap after every VMA already there
        (need_rmap_locks false).
        """
        new = replace(vma, start=new_addr, end=new_addr + new_len, pgoff=new_pgoff,
                      name=f"{vma.name}>{new_addr:#x}")
        new.mm = None
        if vma.kind == "text":
            off = old_addr - vma.start
            new.image = vma.image[off: off + new_len]
        prev = mm.find_vma(new_addr - 1) if new_addr else None
        if prev is not None and prev.end == new_addr and new.file is not None \
                and self.vma_mergeable(prev, new):
            yield from self.vma_expand(prev, new.end)
            return prev, prev.pgoff <= vma.pgoff
        cache = vma.file
        if cache is not None:  # vma_link(): i_mmap_lock_write + __vma_link_file
            yield s.DownWrite(cache.i_mmap_rwsem)
        mm.insert_vma(new)
        if cache is not None:
            cache.vmas.append(new)
            yield s.UpWrite(cache.i_mmap_rwsem)
        return new, False

    # ---- the rmap locks -------------------------------------------------------------
    def take_rmap_locks(self: Kernel, vma: VMA) -> s.KernelGen:
        """take_rmap_locks() (v6.12): i_mmap_lock_write, then anon_vma_lock_write."""
        if vma.file is not None:
            yield s.DownWrite(vma.file.i_mmap_rwsem)
        if vma.anon_vma:
            yield s.DownWrite(vma.anon_vma_lock)

    def drop_rmap_locks(self: Kernel, vma: VMA) -> s.KernelGen:
        """drop_rmap_locks() (v6.12): the anon_vma lock, then i_mmap."""
        if vma.anon_vma:
            yield s.UpWrite(vma.anon_vma_lock)
        if vma.file is not None:
            yield s.UpWrite(vma.file.i_mmap_rwsem)

    # ---- move_page_tables ---------------------------------------------------------------
    def move_page_tables(self: Kernel, mm: MM, vma: VMA, old_addr: int, new_vma: VMA,
                         new_addr: int, length: int, need_rmap_locks: bool) -> s.KernelGen:
        """move_page_tables() (v6.12): per PMD extent, a huge pmd, a whole table or its ptes;
        returns the length moved."""
        a = self.arch
        pmd_size = a.pmd_size
        old_end = old_addr + length
        rng = MmuNotifierRange(mm, old_addr, old_end, MMU_NOTIFY_UNMAP, "move_page_tables")
        yield from self.mmu_notifier_invalidate_range_start(rng)
        while old_addr < old_end:
            # get_extent(NORMAL_PMD): to the next PMD boundary of either address
            extent = min(pmd_size - old_addr % pmd_size, old_end - old_addr,
                         pmd_size - new_addr % pmd_size)
            yield from self.move_pmd_extent(mm, vma, new_vma, old_addr, new_addr, extent,
                                            need_rmap_locks)
            old_addr += extent
            new_addr += extent
        yield from self.mmu_notifier_invalidate_range_end(rng)
        return length

    def move_pmd_extent(self: Kernel, mm: MM, vma: VMA, new_vma: VMA, old_addr: int,
                        new_addr: int, extent: int, need_rmap_locks: bool) -> s.KernelGen:
        """One iteration of move_page_tables()' loop (v6.12), its `again:` included."""
        a = self.arch
        old_pmd = yield from self.pmd_offset_alloc(mm, old_addr, alloc=False)  # get_old_pmd()
        if old_pmd is None:
            return
        pmdval = yield from self.read_entry("pmd", old_pmd, "get_old_pmd")
        if a.entry_none("pmd", pmdval):
            return
        new_pmd = yield from self.pmd_offset_alloc(mm, new_addr, alloc=True)  # alloc_new_pmd()
        while True:  # again:
            pmdval = yield from self.read_entry("pmd", old_pmd, "move_page_tables")
            if a.pmd_trans_huge(pmdval):
                if extent == a.pmd_size:
                    if need_rmap_locks:
                        yield from self.take_rmap_locks(vma)
                    moved = yield from self.move_huge_pmd(mm, old_addr, new_addr, old_pmd,
                                                          new_pmd)
                    if need_rmap_locks:
                        yield from self.drop_rmap_locks(vma)
                    if moved:
                        return
                yield from self.split_huge_pmd(vma, old_pmd, old_addr)
            elif a.have_move_pmd and extent == a.pmd_size:
                # move_pgt_entry(NORMAL_PMD, ..., true): the rmap locks, always
                yield from self.take_rmap_locks(vma)
                moved = yield from self.move_normal_pmd(mm, old_addr, new_addr, old_pmd, new_pmd)
                yield from self.drop_rmap_locks(vma)
                if moved:
                    return
            pmdval = yield from self.read_entry("pmd", old_pmd, "move_page_tables: pmd_none")
            if a.entry_none("pmd", pmdval):
                return
            cur = yield from self.read_entry("pmd", new_pmd, "pte_alloc")
            if a.entry_none("pmd", cur):
                yield from self.pte_alloc(mm, new_pmd, new_addr)
            err = yield from self.move_ptes(mm, vma, old_pmd, old_addr, old_addr + extent,
                                            new_pmd, new_addr, need_rmap_locks)
            if err != -EAGAIN:
                return

    def move_huge_pmd(self: Kernel, mm: MM, old_addr: int, new_addr: int, old_pmd: int,
                      new_pmd: int) -> s.KernelGen:
        """move_huge_pmd() (v6.12): under the old pmd lock (the new nested), get-and-clear the
        old pmd, move an anon THP's deposited table where it must (move_huge_pmd_deposit),
        set the new, flush the old range."""
        a = self.arch
        cur = yield from self.read_entry("pmd", new_pmd, "move_huge_pmd: new pmd")
        if not a.entry_none("pmd", cur):
            return False
        old_ptl = yield from self.pmd_lock(mm, old_pmd, old_addr)
        pmdval = yield from self.read_entry("pmd", old_pmd, "__pmd_trans_huge_lock")
        if not a.pmd_trans_huge(pmdval):
            yield s.SpinUnlock(old_ptl)
            return False
        new_ptl = self.pmd_lockptr(mm, new_pmd, new_addr)
        if new_ptl is not old_ptl:
            yield s.SpinLock(new_ptl, nested=True)
        pmdval = yield from self.get_and_clear_entry("pmd", old_pmd,
                                                     "move_huge_pmd: pmdp_huge_get_and_clear",
                                                     pmdval)
        yield from self.move_huge_pmd_deposit(mm, pmdval, old_pmd, old_addr, new_pmd, new_addr)
        yield from self.set_entry("pmd", new_pmd, pmdval, "move_huge_pmd: set_pmd_at")
        yield s.TlbFlushRange(old_addr, old_addr + a.pmd_size, mm)  # flush_pmd_tlb_range
        if new_ptl is not old_ptl:
            yield s.SpinUnlock(new_ptl)
        yield s.SpinUnlock(old_ptl)
        return True

    def move_normal_pmd(self: Kernel, mm: MM, old_addr: int, new_addr: int, old_pmd: int,
                        new_pmd: int) -> s.KernelGen:
        """move_normal_pmd() (v6.12; the recheck from 6.12, 6fa1066fc5d0): move a whole PTE table
        by its pmd. Nothing is freed; nr_ptes is unchanged."""
        a = self.arch
        cur = yield from self.read_entry("pmd", new_pmd, "move_normal_pmd: new pmd")
        if not a.entry_none("pmd", cur):
            return False  # WARN_ON_ONCE: free_pgtables() should have released it
        old_ptl = yield from self.pmd_lock(mm, old_pmd, old_addr)
        new_ptl = self.pmd_lockptr(mm, new_pmd, new_addr)
        if new_ptl is not old_ptl:
            yield s.SpinLock(new_ptl, nested=True)
        pmdval = yield from self.read_entry("pmd", old_pmd, "move_normal_pmd: *old_pmd")
        moved = False
        if self.move_normal_pmd_still_table(pmdval):  # "Racing with collapse?"
            yield from self.clear_entry("pmd", old_pmd, "move_normal_pmd: pmd_clear")
            yield from self.set_entry("pmd", new_pmd,
                                      a.mk_table_entry("pmd", a.table_pa("pmd", pmdval)),
                                      "move_normal_pmd: pmd_populate")
            yield s.TlbFlushRange(old_addr, old_addr + a.pmd_size, mm)
            moved = True
        if new_ptl is not old_ptl:
            yield s.SpinUnlock(new_ptl)
        yield s.SpinUnlock(old_ptl)
        return moved

    def move_normal_pmd_still_table(self: Kernel, pmdval: int) -> bool:
        """move_normal_pmd()'s `if (unlikely(!pmd_present(pmd) || pmd_leaf(pmd)))` bail-out,
        from 6.12 (6fa1066fc5d0); before it the old pmd is trusted as it was seen."""
        if self.version < MOVE_PMD_RECHECK:
            return True
        a = self.arch
        return a.entry_present("pmd", pmdval) and not a.entry_none("pmd", pmdval) \
            and not a.pmd_trans_huge(pmdval)

    def move_ptes(self: Kernel, mm: MM, vma: VMA, old_pmd: int, old_addr: int, old_end: int,
                  new_pmd: int, new_addr: int, need_rmap_locks: bool) -> s.KernelGen:
        """move_ptes() (v6.13; 6.6-6.12's pte_offset_map_nolock makes the same steps): 0, or
        -EAGAIN if either table is gone."""
        a = self.arch
        if need_rmap_locks:
            yield from self.take_rmap_locks(vma)
        err = 0
        r = yield from self.pte_offset_map_lock(mm, old_pmd, old_addr)
        if r is None:
            err = -EAGAIN
        else:
            old_pte0, old_ptl = r
            # no pmd_same: the new table is empty and the mmap_lock is exclusive
            rn = yield from self.pte_offset_map_rw_nolock(mm, new_pmd, new_addr)
            if rn is None:
                yield from self.pte_unmap_unlock(old_pte0, old_ptl)
                err = -EAGAIN
            else:
                new_pte0, _pmdval, new_ptl = rn
                if new_ptl is not old_ptl:
                    yield s.SpinLock(new_ptl, nested=True)
                lv = a.level("pte")
                force_flush = False
                for i in range((old_end - old_addr) // a.page_size):
                    old_pte = old_pte0 + i * lv.entry_size
                    new_pte = new_pte0 + i * lv.entry_size
                    pte = yield from self.read_entry("pte", old_pte, "move_ptes: ptep_get")
                    if a.pte_none(pte):
                        continue
                    pte = yield from self.get_and_clear_entry(
                        "pte", old_pte, "move_ptes: ptep_get_and_clear", pte)
                    force_flush |= a.pte_present(pte)
                    yield from self.set_entry("pte", new_pte, pte, "move_ptes: set_pte_at")
                yield from self.move_ptes_unlock(mm, old_addr, old_end, force_flush,
                                                 old_ptl, new_ptl)
                yield from self.pte_unmap(new_pte0)
                yield from self.pte_unmap(old_pte0)
        if need_rmap_locks:
            yield from self.drop_rmap_locks(vma)
        return err

    def move_ptes_unlock(self: Kernel, mm: MM, old_addr: int, old_end: int, force_flush: bool,
                         old_ptl: Spinlock, new_ptl: Spinlock) -> s.KernelGen:
        """move_ptes()' end (v6.12, since eb66ae030829 in 4.20): flush_tlb_range() of the old
        range while both ptls are held, then drop them."""
        if force_flush:
            yield s.TlbFlushRange(old_addr, old_end, mm)
        if new_ptl is not old_ptl:
            yield s.SpinUnlock(new_ptl)
        yield s.SpinUnlock(old_ptl)
