"""fork: a new mm copied from its parent (dup_mmap and copy_page_range).

Models kernel/fork.c's `dup_mm()` / `dup_mmap()` and mm/memory.c's
`copy_page_range()` as of v6.12, with copy_pte_range()'s source mapping as
`[kernel] version` has it (v6.13 `pte_offset_map_rw_nolock()` with a dummy
pmdval, before it `pte_offset_map_nolock()`: the same steps):

1. `mmap_write_lock(oldmm)`, then the child's, nested. For each VMA:
   `anon_vma_fork()`, a file VMA's insertion into its file's i_mmap under
   i_mmap_rwsem (write), then `copy_page_range()`.
2. `copy_page_range()` copies only when `vma_needs_copy()`; for a COW
   mapping it brackets the walk with an mmu notifier
   (MMU_NOTIFY_PROTECTION_PAGE) and `raw_write_seqcount_begin/end` of the
   parent's `write_protect_seq`, which GUP-fast's FOLL_PIN reads.
3. `copy_pte_range()`: the child's table by `pte_alloc_map_lock()`, the
   parent's mapped without its lock and then locked nested; each present
   pte copied by `copy_present_pte()`: an anon page whose pin fork must not
   share (PageAnonExclusive and `folio_needs_cow_for_dma()`) is copied now
   (`copy_present_page()`, into a page allocated with both ptls dropped:
   -EAGAIN and retry); any other anon page is shared, and a writable COW
   pte is write-protected in the parent and in the child.
4. The child's lock is dropped, the parent's TLB flushed (`flush_tlb_mm`,
   fork's only flush of the parent), the parent's lock dropped.

ptemu copies one pte per step where Linux batches folio runs (6.9+), and
has no per-VMA locks (`vma_start_write` is the mmap write lock here).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from emu.kernel import steps as s
from emu.kernel.mm import MM, VMA
from emu.kernel.mmu_notifier import MmuNotifierRange
from emu.physmem import FrameState

if TYPE_CHECKING:
    from emu.kernel import Kernel
    from emu.kernel.folio import Folio

MMU_NOTIFY_PROTECTION_PAGE = "protection_page"
EAGAIN = 11


class ForkMixin:
    # ---- the new mm --------------------------------------------------------------
    def mm_alloc(self: Kernel, name: str, lock_tag: str, cpu: int | None = None) -> MM:
        """mm_alloc() + mm_init()'s pgd_alloc() (all versions): an empty mm with its top
        table and whatever the arch allocates with it (x86-PAE's PMDs, sparc64's TSBs)."""
        a = self.arch
        pgd_tables: list[tuple[int, str]] = []

        def alloc_table(level: str, nbytes: int) -> int:
            nframes = -(-nbytes // self.frames.frame_size)
            pa = self.frames.alloc(f"{level} table", cpu, FrameState.PGTABLE, level=level,
                                   nframes=nframes)
            self.init_table(pa, level)
            pgd_tables.extend((pa + i * self.frames.frame_size, level) for i in range(nframes))
            return pa

        root = a.alloc_root(alloc_table, lambda pa, size, v: self.mem.write_int(pa, size, v,
                                                                                a.byteorder))
        return MM(root, name, lock_tag=lock_tag, pgd_tables=pgd_tables)

    def dup_mm(self: Kernel, oldmm: MM, name: str) -> s.KernelGen:
        """dup_mm() (v6.12 kernel/fork.c): allocate the child's mm, dup_mmap() into it.
        Returns the child's mm, or None (-ENOMEM is all dup_mmap can fail with here)."""
        mm = yield s.KernelAtomic(lambda: self.mm_alloc(name, name, self.cpu), f"mm_alloc({name})")
        mm.forked = True
        self.mms.append(mm)
        yield from self.dup_mmap(mm, oldmm)
        return mm

    def dup_mmap(self: Kernel, mm: MM, oldmm: MM) -> s.KernelGen:
        """dup_mmap() (v6.12): under both mmap write locks, duplicate each VMA, link it into
        its anon_vma and file, copy its page tables; flush the parent's TLB last."""
        yield s.DownWrite(oldmm.mmap_lock)  # mmap_write_lock_killable(oldmm)
        yield s.DownWrite(mm.mmap_lock)  # mmap_write_lock_nested(mm, SINGLE_DEPTH_NESTING)
        for mpnt in list(oldmm.vmas):
            tmp = self.vm_area_dup(mpnt)
            if mpnt.anon_vma:
                yield from self.anon_vma_fork(tmp, mpnt)
            mm.insert_vma(tmp)  # the child's tree: nobody walks it before fork returns
            if tmp.file is not None:
                # the file's i_mmap now holds the child's VMA: rmap walkers
                # (retract_page_tables, truncate) may find it from here on
                yield s.DownWrite(tmp.file.i_mmap_rwsem)
                tmp.file.vmas.append(tmp)
                yield s.UpWrite(tmp.file.i_mmap_rwsem)
            yield from self.copy_page_range(tmp, mpnt)
        yield s.UpWrite(mm.mmap_lock)
        yield s.TlbFlushRange(0, 1 << self.arch.va_bits, oldmm)  # flush_tlb_mm(oldmm)
        yield s.UpWrite(oldmm.mmap_lock)

    def vm_area_dup(self: Kernel, vma: VMA) -> VMA:
        """vm_area_dup() (v6.12): the same mapping for the child; the anon_vma is the
        child's own (anon_vma_fork), the file is shared."""
        return replace(vma, anon_vma=False, mm=None)

    def anon_vma_fork(self: Kernel, vma: VMA, pvma: VMA) -> s.KernelGen:
        """anon_vma_fork() (v6.12 mm/rmap.c): the child's VMA gets an anon_vma of its own,
        chained to the parent's under the parent's anon_vma lock."""
        lock = self.anon_vma_lock(pvma)
        yield s.DownWrite(lock)
        vma.anon_vma = True
        yield s.UpWrite(lock)

    # ---- copy_page_range ---------------------------------------------------------------
    def vma_needs_copy(self: Kernel, dst_vma: VMA, src_vma: VMA) -> bool:
        """vma_needs_copy() (v6.12): copy the tables only if the child could not fault the
        same pages back: uffd-wp markers, PFN maps, or anon pages (an anon_vma).

        That a file VMA without an anon_vma is never copied is also what
        lets copy_pte_range() map the parent's table with no pmd_same()
        recheck: retract_page_tables() frees tables without any mmap_lock,
        but only those of file VMAs without an anon_vma, so it never frees
        a table fork is copying (seed 001 dropped its v2 recheck for this).
        """
        return dst_vma.uffd_wp or src_vma.anon_vma

    def copy_page_range(self: Kernel, dst_vma: VMA, src_vma: VMA) -> s.KernelGen:
        """copy_page_range() (v6.12): for a COW mapping, the copy runs inside an mmu
        notifier range and with the parent's write_protect_seq odd."""
        if not self.vma_needs_copy(dst_vma, src_vma):
            return 0
        src_mm = src_vma.mm
        is_cow = src_vma.is_cow_mapping
        rng = MmuNotifierRange(src_mm, src_vma.start, src_vma.end, MMU_NOTIFY_PROTECTION_PAGE,
                               "copy_page_range")
        if is_cow:
            yield from self.mmu_notifier_invalidate_range_start(rng)
            yield from self.write_protect_seq_begin(src_mm)
        ret = 0
        a = self.arch
        addr = src_vma.start
        while addr < src_vma.end and ret == 0:
            next_pmd = min(src_vma.end, addr - addr % a.pmd_size + a.pmd_size)
            ret = yield from self.copy_pmd_range(dst_vma, src_vma, addr, next_pmd)
            addr = next_pmd
        if is_cow:
            yield from self.write_protect_seq_end(src_mm)
            yield from self.mmu_notifier_invalidate_range_end(rng)
        return ret

    def write_protect_seq_begin(self: Kernel, mm: MM) -> s.KernelGen:
        """raw_write_seqcount_begin(&src_mm->write_protect_seq) (v5.11+, 57efa1fe5957)."""
        def bump() -> None:
            mm.write_protect_seq += 1
        yield s.KernelAtomic(bump, f"raw_write_seqcount_begin({mm.name}.write_protect_seq)")

    def write_protect_seq_end(self: Kernel, mm: MM) -> s.KernelGen:
        """raw_write_seqcount_end(&src_mm->write_protect_seq)."""
        def bump() -> None:
            mm.write_protect_seq += 1
        yield s.KernelAtomic(bump, f"raw_write_seqcount_end({mm.name}.write_protect_seq)")

    def copy_pmd_range(self: Kernel, dst_vma: VMA, src_vma: VMA, addr: int,
                       end: int) -> s.KernelGen:
        """copy_pmd_range() for one pmd (v6.12): pmd_alloc in the child; a huge file pmd is
        left to the child's faults (copy_huge_pmd copies only anon THPs); none/bad skipped.

        An anon THP is split first and copied pte by pte: what Linux's
        copy_huge_pmd() does for one that may be pinned (-EAGAIN after
        __split_huge_pmd, then the fall-through to copy_pte_range). Linux shares
        an unpinned one by its pmd, write-protected; ptemu, which has no COW of
        a huge pmd (wp_huge_pmd), splits every one.
        """
        a = self.arch
        src_pmd = yield from self.pmd_offset_alloc(src_vma.mm, addr, alloc=False)
        if src_pmd is None:
            return 0
        dst_pmd = yield from self.pmd_offset_alloc(dst_vma.mm, addr, alloc=True)
        pmdval = yield from self.read_entry("pmd", src_pmd, "copy_pmd_range")
        if a.pmd_trans_huge(pmdval):
            folio = self.folio_of(a.pmd_huge_pa(pmdval))
            if folio is not None and folio.kind == "anon":
                yield from self.split_huge_pmd(src_vma, src_pmd, addr)
                pmdval = yield from self.read_entry("pmd", src_pmd, "copy_pmd_range")
        if a.pmd_trans_huge(pmdval) or a.entry_none("pmd", pmdval) \
                or a.entry_bad("pmd", pmdval) or not a.entry_present("pmd", pmdval):
            return 0
        return (yield from self.copy_pte_range(dst_vma, src_vma, dst_pmd, src_pmd, addr, end))

    def copy_src_pte_map(self: Kernel, src_mm: MM, src_pmd: int, addr: int) -> s.KernelGen:
        """copy_pte_range()'s mapping of the parent's table (v6.13 pte_offset_map_rw_nolock
        with a dummy pmdval; v6.6-v6.12 pte_offset_map_nolock): (ptep, ptl) unlocked, no
        pmd_same() recheck after the lock (vma_needs_copy says why none is owed)."""
        r = yield from self.pte_offset_map_rw_nolock(src_mm, src_pmd, addr)
        if r is None:
            return None
        ptep, _dummy_pmdval, ptl = r
        return (ptep, ptl)

    def copy_pte_range(self: Kernel, dst_vma: VMA, src_vma: VMA, dst_pmd: int, src_pmd: int,
                       addr: int, end: int) -> s.KernelGen:
        """copy_pte_range() (v6.12/v6.13): the child's table by pte_alloc_map_lock, the
        parent's mapped unlocked and then locked nested; present ptes copied one by one;
        -EAGAIN from copy_present_pte drops both ptls, preallocates, and goes again."""
        a = self.arch
        dst_mm, src_mm = dst_vma.mm, src_vma.mm
        lv = a.level("pte")
        ps = a.page_size
        prealloc: Folio | None = None
        rss: dict[str, int] = {}
        while True:
            # pte_alloc_map_lock(): pte_alloc() if the pmd is none, then pte_offset_map_lock()
            dpmd = yield from self.read_entry("pmd", dst_pmd, "pte_alloc: pmd_none")
            if a.entry_none("pmd", dpmd):
                yield from self.pte_alloc(dst_mm, dst_pmd, addr)
            r = yield from self.pte_offset_map_lock(dst_mm, dst_pmd, addr)
            if r is None:
                ret = -12  # -ENOMEM
                break
            dst_pte0, dst_ptl = r
            src = yield from self.copy_src_pte_map(src_mm, src_pmd, addr)
            if src is None:
                yield from self.pte_unmap_unlock(dst_pte0, dst_ptl)
                ret = 0
                break
            src_pte0, src_ptl = src
            yield s.SpinLock(src_ptl, nested=True)
            ret = 0
            start = addr
            while addr < end:
                off = (lv.index(addr) - lv.index(start)) * lv.entry_size
                ptent = yield from self.read_entry("pte", src_pte0 + off, "copy_pte_range: ptep_get")
                if not a.pte_none(ptent) and a.pte_present(ptent):
                    ret, prealloc = yield from self.copy_present_pte(
                        dst_vma, src_vma, dst_pte0 + off, src_pte0 + off, ptent, addr, rss,
                        prealloc)
                    if ret == -EAGAIN:
                        break
                elif a.is_swap_pte(ptent):
                    yield from self.copy_nonpresent_pte(dst_vma.mm, dst_pte0 + off, ptent, rss)
                addr += ps
            yield s.SpinUnlock(src_ptl)
            yield from self.pte_unmap(src_pte0)
            yield from self.pte_unmap_unlock(dst_pte0, dst_ptl)
            if ret == -EAGAIN:
                # folio_prealloc() with no lock held, then `goto again`
                prealloc = self.new_folio("anon", 1, f"fork prealloc for {addr:#x}")
                continue
            break
        for kind, n in rss.items():  # add_mm_rss_vec()
            dst_mm.rss[kind] += n
        if prealloc is not None:
            self.free_folio(prealloc, "fork prealloc unused")
        return ret if ret != -EAGAIN else 0

    def copy_present_pte(self: Kernel, dst_vma: VMA, src_vma: VMA, dst_ptep: int,
                         src_ptep: int, pte: int, addr: int, rss: dict[str, int],
                         prealloc: Folio | None) -> s.KernelGen:
        """copy_present_ptes() for one pte (v6.12): (ret, prealloc left).

        An anon page: folio_try_dup_anon_rmap_pte() refuses a PageAnonExclusive
        page that may be pinned for DMA (folio_needs_cow_for_dma) and the
        child gets a copy now (copy_present_page; -EAGAIN without a
        preallocated page); otherwise the page is shared and loses its
        exclusivity. A file page is shared. A COW mapping's writable pte is
        write-protected in the parent (wrprotect_ptes, no flush: dup_mmap
        flushes at the end) and in the child.
        """
        a = self.arch
        folio = self.folio_of(a.pte_pa(pte))
        if folio is not None and folio.kind == "anon":
            if folio.anon_exclusive and self.folio_needs_cow_for_dma(src_vma, folio):
                if prealloc is None:
                    return -EAGAIN, None
                yield from self.copy_present_page(dst_vma, dst_ptep, pte, addr, prealloc)
                rss["anon"] = rss.get("anon", 0) + 1
                return 0, None
            folio.map()  # folio_get + the dup'd rmap
            folio.anon_exclusive = False
            rss["anon"] = rss.get("anon", 0) + 1
        elif folio is not None:
            folio.map()  # folio_get + folio_dup_file_rmap_pte
            kind = self.mm_counter_kind(folio)
            rss[kind] = rss.get(kind, 0) + 1
        if src_vma.is_cow_mapping and a.pte_write(pte):
            yield from self.copy_wrprotect_src(src_ptep, pte)
            pte = a.pte_wrprotect(pte)
        yield from self.set_entry("pte", dst_ptep, pte, "copy_present_pte: set_ptes (child)")
        return 0, prealloc

    def copy_wrprotect_src(self: Kernel, src_ptep: int, pte: int) -> s.KernelGen:
        """wrprotect_ptes(src_mm, addr, src_pte, 1) (v6.12 ptep_set_wrprotect): the parent's
        pte becomes read-only, so its next write faults and copies. (Linux clears the
        write bit atomically; ptemu stores the value read under the ptl, which loses
        only a racing hardware dirty bit of an anon page the write fault sets again.)"""
        yield from self.set_entry("pte", src_ptep, self.arch.pte_wrprotect(pte),
                                  "copy_present_pte: ptep_set_wrprotect (parent)")

    def folio_needs_cow_for_dma(self: Kernel, vma: VMA, folio: Folio) -> bool:
        """folio_needs_cow_for_dma() (v6.12): a COW mapping of an mm that has pinned, and a
        folio that may be pinned."""
        return vma.is_cow_mapping and vma.mm.has_pinned and folio.maybe_dma_pinned

    def copy_present_page(self: Kernel, dst_vma: VMA, dst_ptep: int, pte: int, addr: int,
                          new: Folio) -> s.KernelGen:
        """copy_present_page() (v6.12): the child gets its own copy of a page the parent may
        have pinned; the parent's pte stays as it was (writable, exclusive)."""
        a = self.arch
        yield from self.copy_user_highpage(new.pa, a.pte_pa(pte))
        new.map()
        new.anon_exclusive = True
        child = a.pte_mkdirty(a.pte_mkyoung(a.mk_pte(new.pa, dst_vma.prot)))
        yield from self.set_entry("pte", dst_ptep, child, "copy_present_page: set_pte_at (child)")
