"""Page faults: handle_mm_fault and the anonymous / text fault paths.

Models mm/memory.c as of v6.12 (each routine says its version):
`handle_pte_fault()` maps the PTE with `pte_offset_map_rw_nolock()` (seed
001, v6.13; v6.6-v6.12's `pte_offset_map_nolock()` makes the same steps,
the pmdval going unused) and, for a present entry, takes the
ptl and rechecks `pte_same()` before making it young/dirty; a fault that
finds no page table (the pmd changed under it) returns 0 and the guest
retries the access, as Linux does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from arch.base import Access
from emu.kernel import steps as s

if TYPE_CHECKING:
    from emu.kernel import Kernel
    from emu.kernel.folio import Folio
    from emu.kernel.mm import MM, VMA

VM_FAULT_RETRY_ACCESS = 0  # handled (or raced): re-execute the access
VM_FAULT_SIGSEGV = -14  # -EFAULT: no VMA or no permission
VM_FAULT_OOM = -12


@dataclass
class Vmf:
    """struct vm_fault, trimmed to what the model uses."""

    vma: VMA
    addr: int
    access: Access
    pmd_pa: int
    orig_pte: int = 0


class FaultMixin:
    def handle_mm_fault(self: Kernel, addr: int, access: Access,
                        mm: MM | None = None) -> s.KernelGen:
        """handle_mm_fault() (v6.12): a guest access missed: fix it up or say SIGSEGV.

        `mm` is the faulting task's (current->mm); None: the mm of the CPU
        running the routine.
        """
        if mm is None:
            mm = self.current_mm()
        yield s.DownRead(mm.mmap_lock)
        vma = mm.find_vma(addr)
        if vma is None or not vma.allows(access):
            yield s.UpRead(mm.mmap_lock)
            why = "no vma" if vma is None else f"{access.name.lower()} not allowed in {vma}"
            yield s.Note(f"fault at {addr:#x}: SIGSEGV ({why})")
            return VM_FAULT_SIGSEGV
        ret = yield from self._handle_mm_fault(mm, vma, addr, access)
        yield s.UpRead(mm.mmap_lock)
        return ret

    def _handle_mm_fault(self: Kernel, mm: MM, vma: VMA, addr: int, access: Access) -> s.KernelGen:
        """Linux's __handle_mm_fault() (v6.12): allocate the path, then the PTE fault."""
        pmd_pa = yield from self.pmd_offset_alloc(mm, addr, alloc=True)
        vmf = Vmf(vma, addr, access, pmd_pa)
        pmdval = yield from self.pmdp_get_lockless(pmd_pa)
        if self.is_pmd_migration_entry(pmdval):
            yield from self.pmd_migration_entry_wait(mm, pmd_pa, addr)
            return VM_FAULT_RETRY_ACCESS
        if self.arch.pmd_trans_huge(pmdval):
            return (yield from self.huge_pmd_fault(vmf, pmdval))
        if self.arch.entry_none("pmd", pmdval):
            ret = yield from self.create_huge_pmd(vmf)
            if ret is not None:  # not VM_FAULT_FALLBACK
                return ret
            done = yield from self.maybe_map_huge_pmd(vmf)
            if done:
                return VM_FAULT_RETRY_ACCESS
            yield from self.pte_alloc(mm, pmd_pa, addr)
        return (yield from self.handle_pte_fault(vmf))

    def huge_pmd_fault(self: Kernel, vmf: Vmf, pmdval: int) -> s.KernelGen:
        """A fault on a PMD-mapped huge page (v6.12 __handle_mm_fault). A write to a private
        file mapping's read-only huge pmd is do_huge_pmd_wp_page(): a file pmd is split by
        clearing it (__split_huge_pmd), and the retried access copies its page through the
        pte path (do_cow_fault). Otherwise huge_pmd_set_accessed (waits out a split holding
        pmd_lock), then retry.
        """
        if vmf.access == Access.WRITE and vmf.vma.private:
            yield from self.zap_huge_pmd(vmf.vma.mm, vmf.vma, vmf.pmd_pa, vmf.addr)
            return VM_FAULT_RETRY_ACCESS
        return (yield from self.huge_pmd_set_accessed(vmf, pmdval))

    def handle_pte_fault(self: Kernel, vmf: Vmf) -> s.KernelGen:
        """handle_pte_fault() (v6.13; 6.6-6.12's _nolock makes the same steps): map with
        _rw_nolock; a present pte is rechecked with pte_same under the ptl.
        """
        mm = vmf.vma.mm
        a = self.arch
        r = yield from self.pte_offset_map_rw_nolock(mm, vmf.pmd_pa, vmf.addr)
        if r is None:
            return VM_FAULT_RETRY_ACCESS
        ptep, _pmdval, ptl = r
        vmf.orig_pte = yield from self.ptep_get_lockless(ptep)
        if a.pte_none(vmf.orig_pte):
            return (yield from self.handle_pte_none(vmf, ptep))
        if not a.pte_present(vmf.orig_pte):
            return (yield from self.do_swap_page(vmf, ptep, ptl))  # emu/kernel/swapin.py
        # Present: make it young (and dirty on a write) if it is still the same
        # pte; pte_same() is what makes the _rw_nolock mapping safe here.
        yield s.SpinLock(ptl)
        cur = yield from self.read_entry("pte", ptep)
        if cur == vmf.orig_pte:
            if vmf.access == Access.WRITE and not a.pte_write(cur):
                if vmf.vma.is_cow_mapping:
                    # do_wp_page() with the ptl held: reuse or copy
                    return (yield from self.do_wp_page(vmf, ptep, ptl))
                yield from self.pte_unmap_unlock(ptep, ptl)
                return VM_FAULT_SIGSEGV
            new = a.pte_mkyoung(cur)
            if vmf.access == Access.WRITE:
                new = a.pte_mkdirty(new)
            if new != cur:
                yield from self.set_entry("pte", ptep, new, "ptep_set_access_flags")
        yield from self.pte_unmap_unlock(ptep, ptl)
        yield from self.flush_after_access_flags(vmf)
        return VM_FAULT_RETRY_ACCESS

    def handle_pte_none(self: Kernel, vmf: Vmf, ptep: int) -> s.KernelGen:
        """An empty pte: unmap it (the table may go away now) and fault the page in."""
        yield from self.pte_unmap(ptep)
        return (yield from self.do_pte_missing(vmf))

    def flush_after_access_flags(self: Kernel, vmf: Vmf) -> s.KernelGen:
        """update_mmu_cache / local flush (v6.12) so the CPU re-walks the changed entry."""
        yield s.TlbFlushRange(vmf.addr & ~(self.arch.page_size - 1),
                              (vmf.addr & ~(self.arch.page_size - 1)) + self.arch.page_size,
                              vmf.vma.mm)

    def do_pte_missing(self: Kernel, vmf: Vmf) -> s.KernelGen:
        """do_pte_missing() (v6.6+): anonymous, text or file-backed fault on an empty pte."""
        if vmf.vma.kind in ("anon", "text"):
            return (yield from self.do_anonymous_page(vmf))
        if vmf.vma.private and vmf.access == Access.WRITE:
            return (yield from self.do_cow_fault(vmf))
        return (yield from self.do_shared_fault(vmf))

    def new_private_folio(self: Kernel, vmf: Vmf) -> Folio:
        """A zeroed anon page (or, for text, a copy of the program image);
        vma_alloc_zeroed_movable_folio (v6.12).
        """
        vma = vmf.vma
        page_addr = vmf.addr - vmf.addr % self.arch.page_size
        folio = self.new_folio(vma.kind, 1, f"{vma.kind} page for {page_addr:#x}")
        folio.index = self.vma_index(vma, page_addr)  # linear_page_index(): the anon rmap's key
        if vma.kind == "text":
            chunk = vma.image[page_addr - vma.start: page_addr - vma.start + self.arch.page_size]
            if chunk:
                self.mem.write(folio.pa, chunk)
        return folio

    def do_anonymous_page(self: Kernel, vmf: Vmf) -> s.KernelGen:
        """do_anonymous_page() (v6.12): pte_alloc, new folio, pte_offset_map_lock, pte_none recheck,
        set_pte_at.
        """
        mm = vmf.vma.mm
        folio = self.new_private_folio(vmf)
        r = yield from self.pte_offset_map_lock(mm, vmf.pmd_pa, vmf.addr)
        if r is None:
            self.free_folio(folio, "unused: pmd changed under the fault")
            return VM_FAULT_RETRY_ACCESS
        ptep, ptl = r
        cur = yield from self.read_entry("pte", ptep)
        if not self.arch.pte_none(cur):
            yield from self.pte_unmap_unlock(ptep, ptl)
            self.free_folio(folio, "unused: raced with another fault")
            return VM_FAULT_RETRY_ACCESS
        folio.map()
        pte = self.arch.mk_pte(folio.pa, vmf.vma.prot)
        pte = self.arch.pte_mkyoung(pte)
        if vmf.access == Access.WRITE:
            pte = self.arch.pte_mkdirty(pte)
        if vmf.vma.kind == "anon":
            vmf.vma.anon_vma = True
            folio.anon_exclusive = True
        mm.rss[self.mm_counter_kind(folio)] += 1
        yield from self.set_entry("pte", ptep, pte, "set_pte_at (new page)")
        yield from self.pte_unmap_unlock(ptep, ptl)
        return VM_FAULT_RETRY_ACCESS
