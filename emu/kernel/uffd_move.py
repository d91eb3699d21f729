"""UFFDIO_MOVE: move anon pages between ptes of one mm without copying.

Models mm/userfaultfd.c `move_pages()` / `move_pages_pte()` (v6.8+; seed
001's `pte_offset_map_rw_nolock()` from v6.13, `pte_offset_map_nolock()`
before, the same steps): under mmap_read_lock (6.12's per-VMA locks hold
off nothing more that ptemu models), each page maps both tables without
their ptls, reads each pte under its own ptl, pins and locks the source
folio and its anon_vma (a failed trylock unmaps, sleeps on the lock and
retries), then `move_present_pte()` / `move_swap_pte()` take both ptls
(`double_pt_lock`, lower address first) and recheck `pte_same()` on both
before clearing the source and setting the destination. Since a none
destination pte proves nothing about its table, v6.14 ("mm: userfaultfd:
recheck dst_pmd entry in move_pages_pte()", with MADV_DONTNEED's empty-table
reclaim) also rechecks `pmd_same()` of the destination pmd under the ptls;
`move_pages()` retries -EAGAIN itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emu.kernel import steps as s
from emu.kernel.mmu_notifier import MMU_NOTIFY_CLEAR, MmuNotifierRange
from emu.kernel.version import PT_RECLAIM

if TYPE_CHECKING:
    from emu.kernel import Kernel
    from emu.kernel.folio import Folio
    from emu.kernel.mm import MM, VMA
    from emu.kernel.sync import Spinlock

EAGAIN, EBUSY, EEXIST, ENOENT, EINVAL, EFAULT = 11, 16, 17, 2, 22, 14


class UffdMoveMixin:
    def move_pages(self: Kernel, mm: MM, dst: int, src: int, length: int) -> s.KernelGen:
        """move_pages() (v6.8+, mode 0): bytes moved, or -errno if none."""
        ps = self.arch.page_size
        yield s.DownRead(mm.mmap_lock)
        dvma, svma = mm.find_vma(dst), mm.find_vma(src)
        if dvma is None or svma is None or dst + length > dvma.end or src + length > svma.end:
            yield s.UpRead(mm.mmap_lock)
            return -ENOENT
        if dvma.kind != "anon" or svma.kind != "anon" or not (dvma.uffd_missing or dvma.uffd_wp) \
                or (dst < src + length and src < dst + length):
            yield s.UpRead(mm.mmap_lock)
            return -EINVAL
        moved = 0
        err = 0
        while moved < length:
            err = yield from self.move_one_page(mm, dvma, svma, dst + moved, src + moved)
            if err == -EAGAIN:
                continue
            if err:
                break
            moved += ps
        yield s.UpRead(mm.mmap_lock)
        if err:
            yield s.Note(f"UFFDIO_MOVE {src + moved:#x} -> {dst + moved:#x}: {err}")
        return moved if moved else err

    def move_one_page(self: Kernel, mm: MM, dvma: VMA, svma: VMA, dst: int,
                      src: int) -> s.KernelGen:
        """move_pages()' per-page body (v6.8+): the pmds, then move_pages_pte()."""
        a = self.arch
        src_pmd = yield from self.pmd_offset_alloc(mm, src, alloc=False)  # mm_find_pmd()
        if src_pmd is None:
            return -ENOENT
        spv = yield from self.pmdp_get_lockless(src_pmd)
        if a.entry_none("pmd", spv):
            return -ENOENT
        if a.pmd_trans_huge(spv):
            return -EBUSY  # move_pages_huge_pmd(): anon THP is not moved here
        dst_pmd = yield from self.pmd_offset_alloc(mm, dst, alloc=True)  # mm_alloc_pmd()
        dpv = yield from self.pmdp_get_lockless(dst_pmd)
        if a.pmd_trans_huge(dpv):
            return -EEXIST
        if a.entry_none("pmd", dpv):
            yield from self.pte_alloc(mm, dst_pmd, dst)
        return (yield from self.move_pages_pte(mm, dvma, svma, dst_pmd, src_pmd, dst, src))

    def move_pages_pte(self: Kernel, mm: MM, dvma: VMA, svma: VMA, dst_pmd: int, src_pmd: int,
                       dst: int, src: int) -> s.KernelGen:
        """move_pages_pte() (v6.13 _rw_nolock, 6.14's dst pmd_same; see the module)."""
        a = self.arch
        ps = a.page_size
        rng = MmuNotifierRange(mm, src, src + ps, MMU_NOTIFY_CLEAR, "move_pages_pte")
        yield from self.mmu_notifier_invalidate_range_start(rng)
        folio: Folio | None = None
        anon_lock = None
        err = 0
        while True:  # retry:
            d = yield from self.pte_offset_map_rw_nolock(mm, dst_pmd, dst)
            if d is None:
                err = -EAGAIN
                break
            dst_pte, dst_pmdval, dst_ptl = d
            sr = yield from self.pte_offset_map_rw_nolock(mm, src_pmd, src)
            if sr is None:
                yield from self.pte_unmap(dst_pte)
                err = -EAGAIN
                break
            src_pte, _src_pmdval, src_ptl = sr
            yield s.SpinLock(dst_ptl)
            orig_dst = yield from self.read_entry("pte", dst_pte, "move_pages_pte: dst pte")
            yield s.SpinUnlock(dst_ptl)
            yield s.SpinLock(src_ptl)
            orig_src = yield from self.read_entry("pte", src_pte, "move_pages_pte: src pte")
            yield s.SpinUnlock(src_ptl)
            if not a.pte_none(orig_dst):
                err = -EEXIST
            elif a.pte_none(orig_src):
                err = -ENOENT
            elif a.pte_present(orig_src):
                if folio is None:
                    yield s.SpinLock(src_ptl)
                    cur = yield from self.read_entry("pte", src_pte, "move_pages_pte: pin")
                    folio = self.folio_of(a.pte_pa(cur)) if cur == orig_src else None
                    if cur != orig_src:
                        err = -EAGAIN
                    elif folio is None or folio.kind != "anon" or folio.mapcount != 1:
                        err, folio = -EBUSY, None  # !PageAnonExclusive
                    else:
                        folio.get()
                    yield s.SpinUnlock(src_ptl)
                    if folio is not None:
                        locked = yield from self.folio_trylock(folio)
                        if not locked:
                            yield from self.pte_unmap(src_pte)
                            yield from self.pte_unmap(dst_pte)
                            yield s.DownWrite(folio.lock)  # now we can block and wait
                            continue
                if not err and anon_lock is None:
                    anon_lock = self.anon_vma_lock_of(mm)
                    yield s.DownWrite(anon_lock)
                if not err:
                    err = yield from self.move_present_pte(
                        mm, dvma, dst, src, dst_pte, src_pte, orig_dst, orig_src, dst_ptl,
                        src_ptl, folio, dst_pmd, dst_pmdval)
            else:
                pfn = self.migration_pte_pfn(orig_src)
                if pfn is not None:
                    yield from self.pte_unmap(src_pte)
                    yield from self.pte_unmap(dst_pte)
                    yield from self.migration_entry_wait(mm, src_pmd, src)
                    err = -EAGAIN
                    break
                swp_type, offset = self.pte_to_swp_entry(orig_src)
                if swp_type != 0 or self.swap.count(offset) != 1:
                    err = -EBUSY  # !pte_swp_exclusive
                else:
                    err = yield from self.move_swap_pte(mm, dst, src, dst_pte, src_pte, orig_dst,
                                                        orig_src, dst_ptl, src_ptl, dst_pmd,
                                                        dst_pmdval)
            yield from self.pte_unmap(src_pte)
            yield from self.pte_unmap(dst_pte)
            break
        if anon_lock is not None:
            yield s.UpWrite(anon_lock)
        if folio is not None:
            yield s.UpWrite(folio.lock)
            self.put_folio(folio)
        yield from self.mmu_notifier_invalidate_range_end(rng)
        return err

    def double_pt_lock(self: Kernel, ptl1: Spinlock, ptl2: Spinlock) -> s.KernelGen:
        """double_pt_lock() (v6.8+): the lower-addressed lock first; one lock if shared."""
        first, second = sorted((ptl1, ptl2), key=lambda lock: lock.page or 0)
        yield s.SpinLock(first)
        if second is not first:
            yield s.SpinLock(second, nested=True)

    def double_pt_unlock(self: Kernel, ptl1: Spinlock, ptl2: Spinlock) -> s.KernelGen:
        """double_pt_unlock() (v6.8+)."""
        yield s.SpinUnlock(ptl1)
        if ptl2 is not ptl1:
            yield s.SpinUnlock(ptl2)

    def move_dst_pmd_same(self: Kernel, dst_pmd: int, dst_pmdval: int) -> s.KernelGen:
        """The destination pmd_same() recheck under both ptls (v6.14, with PT_RECLAIM: a none
        dst pte is no proof its table is still attached); none before."""
        if self.version < PT_RECLAIM:
            return True
        now = yield from self.pmdp_get_lockless(dst_pmd)
        return now == dst_pmdval

    def move_lock_recheck(self: Kernel, dst_pte: int, src_pte: int, orig_dst: int, orig_src: int,
                          dst_ptl: Spinlock, src_ptl: Spinlock, dst_pmd: int,
                          dst_pmdval: int) -> s.KernelGen:
        """move_{present,swap}_pte()'s start (v6.8+; v6.14 the dst pmd_same): double_pt_lock,
        then pte_same on both ptes; (0 or -EAGAIN, the source pte now)."""
        yield from self.double_pt_lock(dst_ptl, src_ptl)
        same = yield from self.move_dst_pmd_same(dst_pmd, dst_pmdval)
        cur_src = yield from self.read_entry("pte", src_pte, "move: src pte_same")
        cur_dst = yield from self.read_entry("pte", dst_pte, "move: dst pte_same")
        ok = same and cur_src == orig_src and cur_dst == orig_dst
        return (0 if ok else -EAGAIN), cur_src

    def move_present_pte(self: Kernel, mm: MM, dvma: VMA, dst: int, src: int, dst_pte: int,
                         src_pte: int, orig_dst: int, orig_src: int, dst_ptl: Spinlock,
                         src_ptl: Spinlock, folio: Folio, dst_pmd: int,
                         dst_pmdval: int) -> s.KernelGen:
        """move_present_pte() (v6.8+): under both ptls, pte_same on both, then the source pte
        is cleared and flushed and the destination maps the folio, dirty and writable."""
        a = self.arch
        ps = a.page_size
        err, cur_src = yield from self.move_lock_recheck(dst_pte, src_pte, orig_dst, orig_src,
                                                         dst_ptl, src_ptl, dst_pmd, dst_pmdval)
        if err:
            pass
        elif folio.refcount > 2 or folio.mapcount != 1:
            # folio_maybe_dma_pinned() (a reference beyond the mapping's and ours: a
            # pin is one reference in ptemu) or no longer exclusive
            err = -EBUSY
        else:
            old = yield from self.get_and_clear_entry("pte", src_pte,
                                                      "move_present_pte: ptep_clear_flush", cur_src)
            yield s.TlbFlushRange(src - src % ps, src - src % ps + ps, mm)
            folio.index = self.vma_index(dvma, dst)  # folio_move_anon_rmap()
            pte = a.pte_mkdirty(a.pte_mkyoung(a.mk_pte(a.pte_pa(old), dvma.prot)))
            dvma.anon_vma = True
            yield from self.set_entry("pte", dst_pte, pte, "move_present_pte: set_pte_at")
        yield from self.double_pt_unlock(dst_ptl, src_ptl)
        return err

    def move_swap_pte(self: Kernel, mm: MM, dst: int, src: int, dst_pte: int, src_pte: int,
                      orig_dst: int, orig_src: int, dst_ptl: Spinlock, src_ptl: Spinlock,
                      dst_pmd: int, dst_pmdval: int) -> s.KernelGen:
        """move_swap_pte() (v6.8+): under both ptls, pte_same on both, the swap entry moves."""
        err, cur_src = yield from self.move_lock_recheck(dst_pte, src_pte, orig_dst, orig_src,
                                                         dst_ptl, src_ptl, dst_pmd, dst_pmdval)
        if not err:
            old = yield from self.get_and_clear_entry("pte", src_pte,
                                                      "move_swap_pte: ptep_get_and_clear", cur_src)
            yield from self.set_entry("pte", dst_pte, old, "move_swap_pte: set_pte_at")
        yield from self.double_pt_unlock(dst_ptl, src_ptl)
        return err
