"""Copy-on-write: private file mappings and write faults on shared anon pages.

Models mm/memory.c and mm/rmap.c as of v6.12 (each routine says its
version; v6.6 makes the same steps, v6.13 maps the pte of
`handle_pte_fault` with `_rw_nolock`, see emu.kernel.fault):

- a read fault in a MAP_PRIVATE shmem/file VMA maps the page cache's page
  read-only (`do_read_fault` with the VMA's COW vm_page_prot);
- a write fault on an empty pte there is `do_cow_fault`: `vmf_anon_prepare`
  (the VMA's first anon page gives it an anon_vma: `__anon_vma_prepare`
  under the anon_vma lock and page_table_lock), a new anon folio, the page
  cache page copied into it, mapped writable by `finish_fault`;
- a write fault on a present read-only pte of a COW mapping is
  `do_wp_page`: an anon page that is PageAnonExclusive, or whose only
  reference is this mapping (`wp_can_reuse_anon_folio`), is reused
  (`wp_page_reuse`); anything else is copied (`wp_page_copy`), which
  rechecks `pte_same` under the ptl before it replaces the pte.

The anon_vma is what `retract_page_tables` and fork's `vma_needs_copy`
look at: a VMA with one has anon pages in its tables that only it owns.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from arch.base import Access
from emu.kernel import steps as s
from emu.kernel.fault import VM_FAULT_RETRY_ACCESS, VM_FAULT_SIGSEGV, Vmf
from emu.kernel.mmu_notifier import MMU_NOTIFY_CLEAR, MmuNotifierRange

if TYPE_CHECKING:
    from emu.kernel import Kernel
    from emu.kernel.folio import Folio
    from emu.kernel.mm import VMA
    from emu.kernel.sync import Spinlock


class CowMixin:
    def anon_vma_lock(self: Kernel, vma: VMA) -> object:
        """The anon_vma's rwsem (one per VMA here: ptemu's VMAs never merge, and fork's
        anon_vma_fork() gives the child's VMA its own, chained to the parent's)."""
        return self.rwsem(f"anon_vma[{vma.mm.name if vma.mm else ''}@{vma.start:#x}]")

    def anon_vma_prepare(self: Kernel, vma: VMA) -> s.KernelGen:
        """__anon_vma_prepare() (v6.12 mm/rmap.c): anon_vma_lock_write, then page_table_lock,
        recheck vma->anon_vma and set it.

        page_table_lock is what retract_page_tables()'s recheck under the
        ptl is ordered against: the anon_vma is set before the first anon
        pte is written under that table's ptl.
        """
        if vma.anon_vma:
            return
        lock = self.anon_vma_lock(vma)
        yield s.DownWrite(lock)
        yield s.SpinLock(vma.mm.page_table_lock)
        if not vma.anon_vma:
            vma.anon_vma = True
        yield s.SpinUnlock(vma.mm.page_table_lock)
        yield s.UpWrite(lock)

    def vmf_anon_prepare(self: Kernel, vmf: Vmf) -> s.KernelGen:
        """vmf_anon_prepare() (v6.12): the fault holds mmap_read_lock (ptemu takes no VMA lock),
        so anon_vma_prepare() directly."""
        yield from self.anon_vma_prepare(vmf.vma)

    def copy_user_highpage(self: Kernel, dst: int, src: int) -> s.KernelGen:
        """copy_user_highpage(): one page of data, read and written as one step."""
        ps = self.arch.page_size
        yield s.KernelAtomic(lambda: self.mem.write(dst, self.mem.read(src, ps)),
                             f"copy_user_highpage {src:#x} -> {dst:#x}")

    def anon_pte(self: Kernel, vmf: Vmf, folio: Folio) -> int:
        """The pte of a new private anon page: young, and writable and dirty on a write
        fault (mk_pte + pte_sw_mkyoung + maybe_mkwrite(pte_mkdirty()), v6.12)."""
        a = self.arch
        pte = a.pte_mkyoung(a.mk_pte(folio.pa, vmf.vma.prot))
        if vmf.access == Access.WRITE:
            pte = a.pte_mkdirty(pte)
        else:
            pte = a.pte_wrprotect(pte)
        return pte

    def folio_add_new_anon_rmap(self: Kernel, vmf: Vmf, folio: Folio) -> None:
        """folio_add_new_anon_rmap() (v6.12): mapped once, exclusively; MM_ANONPAGES."""
        folio.map()
        folio.anon_exclusive = True
        vmf.vma.anon_vma = True
        vmf.vma.mm.rss["anon"] += 1

    # ---- do_cow_fault --------------------------------------------------------------
    def do_cow_fault(self: Kernel, vmf: Vmf) -> s.KernelGen:
        """do_cow_fault() (v6.12): anon_vma, a new page, the file's page copied into it,
        finish_fault() maps the copy writable."""
        yield from self.vmf_anon_prepare(vmf)
        got = yield from self.do_fault_folio(vmf)
        if got is None:
            return VM_FAULT_SIGSEGV
        folio, index = got
        ret = VM_FAULT_RETRY_ACCESS
        if folio.in_cache:
            page = folio.pa + (index - folio.index) * self.arch.page_size
            new = self.new_folio("anon", 1, f"cow page for {vmf.addr - vmf.addr % self.arch.page_size:#x}")
            yield from self.copy_user_highpage(new.pa, page)
            ret = yield from self.finish_fault_anon(vmf, new)
        yield s.UpWrite(folio.lock)
        self.put_folio(folio)
        return ret

    def finish_fault_anon(self: Kernel, vmf: Vmf, new: Folio) -> s.KernelGen:
        """finish_fault() (v6.12) with vmf->cow_page: pte_offset_map_lock, pte_none recheck,
        set_pte_range of the anon page."""
        r = yield from self.pte_offset_map_lock(vmf.vma.mm, vmf.pmd_pa, vmf.addr)
        if r is None:
            self.free_folio(new, "unused cow page: no page table now")
            return VM_FAULT_RETRY_ACCESS
        ptep, ptl = r
        cur = yield from self.read_entry("pte", ptep)
        if self.arch.pte_none(cur):
            self.folio_add_new_anon_rmap(vmf, new)
            yield from self.set_entry("pte", ptep, self.anon_pte(vmf, new),
                                      "set_pte_range (cow page)")
        else:
            self.free_folio(new, "unused cow page: raced with another fault")
        yield from self.pte_unmap_unlock(ptep, ptl)
        return VM_FAULT_RETRY_ACCESS

    # ---- do_wp_page ----------------------------------------------------------------
    def wp_can_reuse_anon_folio(self: Kernel, folio: Folio) -> bool:
        """wp_can_reuse_anon_folio() (v6.12, small folio): no reference but this
        mapping's (a GUP pin, the other process's mapping after fork, keep it shared)."""
        return folio.refcount == 1 and folio.mapcount == 1

    def do_wp_page(self: Kernel, vmf: Vmf, ptep: int, ptl: Spinlock) -> s.KernelGen:
        """do_wp_page() (v6.12), entered with the ptl held and orig_pte rechecked: reuse an
        exclusive anon page, else drop the ptl and copy."""
        a = self.arch
        folio = self.folio_of(a.pte_pa(vmf.orig_pte))
        if folio is not None and folio.kind == "anon" and \
                (folio.anon_exclusive or self.wp_can_reuse_anon_folio(folio)):
            folio.anon_exclusive = True
            return (yield from self.wp_page_reuse(vmf, ptep, ptl))
        if folio is not None:
            folio.get()  # the copy's reference on the old page
        yield from self.pte_unmap_unlock(ptep, ptl)
        return (yield from self.wp_page_copy(vmf, folio))

    def wp_page_reuse(self: Kernel, vmf: Vmf, ptep: int, ptl: Spinlock) -> s.KernelGen:
        """wp_page_reuse() (v6.12): make the same pte young, dirty and writable under the ptl."""
        a = self.arch
        new = a.pte_mkwrite(a.pte_mkdirty(a.pte_mkyoung(vmf.orig_pte)))
        yield from self.set_entry("pte", ptep, new, "wp_page_reuse: ptep_set_access_flags")
        yield from self.pte_unmap_unlock(ptep, ptl)
        yield from self.flush_after_access_flags(vmf)
        return VM_FAULT_RETRY_ACCESS

    def wp_page_copy(self: Kernel, vmf: Vmf, old: Folio | None) -> s.KernelGen:
        """wp_page_copy() (v6.12): anon_vma, a new page copied from the old, then under the
        ptl and only if the pte is still orig_pte: ptep_clear_flush, the new anon rmap,
        set_pte_at, the old page's rmap removed. `old` carries do_wp_page's reference."""
        a = self.arch
        mm = vmf.vma.mm
        ps = a.page_size
        haddr = vmf.addr - vmf.addr % ps
        yield from self.vmf_anon_prepare(vmf)
        new = self.new_folio("anon", 1, f"cow page for {haddr:#x}")
        if old is not None:
            yield from self.copy_user_highpage(new.pa, a.pte_pa(vmf.orig_pte))
        rng = MmuNotifierRange(mm, haddr, haddr + ps, MMU_NOTIFY_CLEAR, "wp_page_copy")
        yield from self.mmu_notifier_invalidate_range_start(rng)
        r = yield from self.pte_offset_map_lock(mm, vmf.pmd_pa, vmf.addr)
        put = new
        if r is not None:
            ptep, ptl = r
            cur = yield from self.read_entry("pte", ptep, "wp_page_copy: pte_same")
            if cur == vmf.orig_pte:
                if old is not None and old.kind != "anon":
                    mm.rss[self.mm_counter_kind(old)] -= 1  # the file page's mapping goes
                elif old is not None:
                    mm.rss["anon"] -= 1
                yield from self.get_and_clear_entry("pte", ptep, "wp_page_copy: ptep_clear_flush",
                                                    cur)
                yield s.TlbFlushRange(haddr, haddr + ps, mm)
                self.folio_add_new_anon_rmap(vmf, new)
                yield from self.set_entry("pte", ptep, self.anon_pte(vmf, new),
                                          "wp_page_copy: set_pte_at")
                if old is not None:
                    old.unmap()  # folio_remove_rmap_pte(): its mapping's reference is put below
                    self.put_folio(old)
                put = None
            yield from self.pte_unmap_unlock(ptep, ptl)
        yield from self.mmu_notifier_invalidate_range_end(rng)
        if put is not None:
            self.free_folio(put, "unused cow page: the pte changed")
        if old is not None:
            self.put_folio(old)  # do_wp_page()'s reference
        return VM_FAULT_RETRY_ACCESS
