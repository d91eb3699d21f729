"""mprotect: changing a range's protection, VMAs and ptes.

Models mm/mprotect.c as of v6.12 (each routine says its version):

- `do_mprotect_pkey()`: under `mmap_write_lock`, one mmu_gather over the
  range; per VMA `mprotect_fixup()`: split (or merge) the VMA to the range
  (emu.kernel.vma_split), set its protection, `change_protection()`; then
  `tlb_finish_mmu()` makes the one flush. A hole in the range is -ENOMEM
  after the VMAs before it were changed, as Linux leaves them.
- `change_pmd_range()`: per pmd, a huge pmd goes to `change_huge_pmd()`
  (pmd_lock, re-checked huge, invalidated, `set_pmd_at` of the modified
  entry); a table to `change_pte_range()`, whose `pte_offset_map_lock()` may
  fail (v6.5+, "mm/mprotect: delete pmd_none_or_clear_bad_unless_trans_huge()":
  -EAGAIN, and change_pmd_range re-reads the pmd and tries again).
- `change_pte_range()`: each present pte `ptep_modify_prot_start()` (get and
  clear) / `ptep_modify_prot_commit()` (set) under the ptl, and the flush
  deferred to the gather: between the unlock and tlb_finish_mmu another CPU
  may still write through its old TLB entry, as in Linux, while mprotect has
  not returned.
- The mmu notifier (MMU_NOTIFY_PROTECTION_VMA) starts at the first
  populated pmd (v6.6's placement; 6.12 starts it at the pud level, the same
  steps where a pud maps one pmd table).

A write to a VMA without PROT_WRITE then faults and handle_mm_fault says
SIGSEGV (access_error()), as Linux does.

PROT_NONE is not modelled (Prot has no read permission): -EINVAL.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from arch.base import Prot
from emu.kernel import steps as s
from emu.kernel.mmu_notifier import MmuNotifierRange

if TYPE_CHECKING:
    from emu.kernel import Kernel
    from emu.kernel.mm import MM, VMA

PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4  # include/uapi/asm-generic/mman-common.h
MMU_NOTIFY_PROTECTION_VMA = "protection_vma"
ENOMEM = 12
EAGAIN = 11


def prot_of(bits: int) -> Prot:
    """calc_vm_prot_bits() for the modelled protections (PROT_WRITE implies read)."""
    return Prot(write=bool(bits & PROT_WRITE), exec=bool(bits & PROT_EXEC))


class MprotectMixin:
    def do_mprotect(self: Kernel, mm: MM, start: int, end: int, prot: Prot) -> s.KernelGen:
        """do_mprotect_pkey() (v6.12): 0, or -ENOMEM for a range not all mapped."""
        yield s.DownWrite(mm.mmap_lock)
        vma = mm.find_vma(start)
        ret = 0
        if vma is None:
            ret = -ENOMEM
        flushed = False
        addr = start
        while ret == 0 and addr < end:
            vma = mm.find_vma(addr)
            if vma is None:
                ret = -ENOMEM  # a hole: what came before stays changed
                break
            hi = min(end, vma.end)
            vma, changed = yield from self.mprotect_fixup(mm, vma, addr, hi, prot)
            flushed |= changed
            addr = hi
        if flushed:
            yield s.TlbFlushRange(start, addr, mm)  # tlb_finish_mmu()
        yield s.UpWrite(mm.mmap_lock)
        return ret

    def mprotect_fixup(self: Kernel, mm: MM, vma: VMA, start: int, end: int,
                       prot: Prot) -> s.KernelGen:
        """mprotect_fixup() (v6.12): (the VMA now covering [start, end), whether it changed)."""
        if vma.prot == prot:
            return vma, False
        vmas = yield from self.split_range(mm, start, end)
        (vma,) = vmas
        vma.prot = prot  # vm_flags_reset() + vma_set_page_prot()
        vma = yield from self.vma_merge_neighbours(mm, vma)
        yield from self.change_protection(mm, vma, start, end)
        return vma, True

    def change_protection(self: Kernel, mm: MM, vma: VMA, start: int, end: int) -> s.KernelGen:
        """change_protection() -> change_pmd_range() (v6.12): every pmd of [start, end)."""
        a = self.arch
        rng: MmuNotifierRange | None = None
        addr = start
        while addr < end:
            nxt = min(end, addr - addr % a.pmd_size + a.pmd_size)
            pmd_pa = yield from self.pmd_offset_alloc(mm, addr, alloc=False)
            while pmd_pa is not None:  # change_pmd_range()'s `again:`
                pmdval = yield from self.pmdp_get_lockless(pmd_pa)
                if a.entry_none("pmd", pmdval):
                    break
                if rng is None:
                    rng = MmuNotifierRange(mm, addr, end, MMU_NOTIFY_PROTECTION_VMA,
                                           "change_protection")
                    yield from self.mmu_notifier_invalidate_range_start(rng)
                if a.pmd_trans_huge(pmdval):
                    if nxt - addr == a.pmd_size:
                        done = yield from self.change_huge_pmd(mm, vma, pmd_pa, addr)
                        if done:
                            break
                    else:
                        yield from self.split_huge_pmd(vma, pmd_pa, addr)
                        continue
                ret = yield from self.change_pte_range(mm, vma, pmd_pa, addr, nxt)
                if not self.change_pte_range_retry(ret):
                    break
            addr = nxt
        if rng is not None:
            yield from self.mmu_notifier_invalidate_range_end(rng)

    def change_pte_range_retry(self: Kernel, ret: int) -> bool:
        """change_pmd_range() (v6.5+): `if (ret < 0) goto again;` -- a pte_offset_map_lock()
        that failed is retried from the pmd read."""
        return ret == -EAGAIN

    def change_huge_pmd(self: Kernel, mm: MM, vma: VMA, pmd_pa: int, addr: int) -> s.KernelGen:
        """change_huge_pmd() (v6.12): under __pmd_trans_huge_lock, pmdp_invalidate_ad and
        set_pmd_at of the entry under the new protection; False if it is no longer huge."""
        a = self.arch
        ptl = yield from self.pmd_lock(mm, pmd_pa, addr)
        cur = yield from self.read_entry("pmd", pmd_pa, "__pmd_trans_huge_lock")
        if not a.pmd_trans_huge(cur):
            yield s.SpinUnlock(ptl)
            return False
        old = yield from self.get_and_clear_entry("pmd", pmd_pa,
                                                  "change_huge_pmd: pmdp_invalidate_ad", cur)
        prot = self.change_pte_prot(vma, addr, old, huge=True)
        yield from self.set_entry("pmd", pmd_pa, a.mk_pmd_huge(a.pmd_huge_pa(old), prot),
                                  "change_huge_pmd: set_pmd_at")
        yield s.SpinUnlock(ptl)
        return True

    def change_pte_range(self: Kernel, mm: MM, vma: VMA, pmd_pa: int, start: int,
                         end: int) -> s.KernelGen:
        """change_pte_range() (v6.5+): -EAGAIN if pte_offset_map_lock() fails, else the
        number of ptes changed; each present pte is rewritten under the ptl with the
        VMA's new protection, the flush left to the caller's gather."""
        a = self.arch
        r = yield from self.pte_offset_map_lock(mm, pmd_pa, start)
        if r is None:
            return -EAGAIN
        ptep0, ptl = r
        lv = a.level("pte")
        pages = 0
        for addr in range(start, end, a.page_size):
            ptep = ptep0 + (lv.index(addr) - lv.index(start)) * lv.entry_size
            old = yield from self.read_entry("pte", ptep, "change_pte_range: ptep_get")
            if a.pte_none(old) or not a.pte_present(old):
                continue
            old = yield from self.get_and_clear_entry(
                "pte", ptep, "change_pte_range: ptep_modify_prot_start", old)
            new = a.pte_modify(old, self.change_pte_prot(vma, addr, old))
            yield from self.set_entry("pte", ptep, new, "change_pte_range: ptep_modify_prot_commit")
            pages += 1
        yield from self.pte_unmap_unlock(ptep0, ptl)
        return pages

    def change_pte_prot(self: Kernel, vma: VMA, addr: int, pte: int, huge: bool = False) -> Prot:
        """The protection a present pte (or huge pmd) gets (v6.12 pte_modify(vm_page_prot),
        then MM_CP_TRY_CHANGE_WRITABLE's can_change_pte_writable()): in a writable COW
        mapping only an exclusive anon page may be writable (its write fault would
        reuse it under the ptl anyway); a page still shared since fork, or a private
        file mapping's page cache page, stays read-only for do_wp_page() to copy."""
        if not vma.prot.write or not vma.is_cow_mapping:
            return vma.page_prot
        a = self.arch
        pa = a.pmd_huge_pa(pte) if huge else a.pte_pa(pte)
        folio = self.folio_of(pa)
        if folio is not None and folio.kind == "anon" and folio.anon_exclusive:
            return vma.prot
        return replace(vma.prot, write=False)
