"""Process exit: exit_mmap and the freeing of a whole address space.

Models the teardown of kernel/fork.c's `__mmput()` and mm/mmap.c's
`exit_mmap()` as of v6.12 (each routine says its version):

1. `mmu_notifier_release()`.
2. Under `mmap_read_lock`: `arch_exit_mmap()` (powerpc drops its fragment
   caches there: `destroy_pagetable_cache()`, whose last reference frees
   the page at once, with no grace period and no look at PG_active), then
   `unmap_vmas()`: every VMA zapped as `zap_page_range` does.
3. Under `mmap_write_lock`: `free_pgtables()`, which unlinks each file VMA
   from its i_mmap under i_mmap_rwsem (write) before `free_pgd_range()`
   frees its tables (`pte_free_tlb` / `pmd_free_tlb` / `pud_free_tlb`:
   `tlb_remove_table`, by RCU or after the flush as the arch frees
   tables); `tlb_finish_mmu()`; `remove_vma()`.
4. `__mmdrop()`: `mm_free_pgd()` (`pgd_free`: the top table and what
   `pgd_alloc` allocated with it, x86-PAE's four PMDs, sparc64's TSBs)
   and `destroy_context()`.

Linux batches the file unlinks from v6.10 and frees the tables of several
VMAs in one pass; ptemu unlinks and frees one VMA at a time (v6.6's
order), which makes the same steps in the same order per VMA.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emu.kernel import steps as s

if TYPE_CHECKING:
    from emu.kernel import Kernel
    from emu.kernel.mm import MM


class ExitMixin:
    def mmput(self: Kernel, mm: MM) -> s.KernelGen:
        """mmput() -> __mmput() (v6.12) of the last user: khugepaged_exit(), exit_mmap(),
        mmdrop()."""
        yield s.Note(f"__mmput({mm.name}): khugepaged_exit")
        yield from self.exit_mmap(mm)
        yield from self.mmdrop(mm)
        return 0

    def exit_mmap(self: Kernel, mm: MM) -> s.KernelGen:
        """exit_mmap() (v6.12 mm/mmap.c): unmap every VMA under the read lock, then free the
        tables under the write lock."""
        yield s.Note("exit_mmap: mmu_notifier_release")
        yield s.DownRead(mm.mmap_lock)
        yield from self.arch_exit_mmap(mm)
        vmas = list(mm.vmas)
        # tlb_gather_mmu_fullmm() + unmap_vmas()
        for vma in vmas:
            yield from self.zap_page_range(mm, vma, vma.start, vma.end)
        yield s.UpRead(mm.mmap_lock)
        yield s.DownWrite(mm.mmap_lock)
        # free_pgtables(mm_wr_locked=true): the VMAs leave the tree (nothing
        # else may share their tables any more), then each is unlinked from
        # its file and its tables freed
        mm.vmas.clear()
        for vma in vmas:
            yield from self.free_pgtables(mm, vma)
        yield from self.free_upper_tables(mm)
        yield s.UpWrite(mm.mmap_lock)  # remove_vma() of each, then the unlock

    def arch_exit_mmap(self: Kernel, mm: MM) -> s.KernelGen:
        """arch_exit_mmap() (v6.12): the arch policy's teardown of its per-mm table caches
        (powerpc: destroy_pagetable_cache(); nothing elsewhere)."""
        yield from self.policy.exit_mmap(self, mm)

    def free_upper_tables(self: Kernel, mm: MM) -> s.KernelGen:
        """free_pgd_range()'s upper half (v6.12 free_pmd_range / free_pud_range /
        free_p4d_range): with floor 0 and ceiling USER_PGTABLES_CEILING, every table below
        the pgd goes by pud_clear/pmd_free_tlb (p4d_clear/pud_free_tlb), after the
        tlb_finish_mmu() flush. Tables pgd_alloc() made with the pgd are pgd_free()'s."""
        a = self.arch
        names = [lv.name for lv in a.levels]
        owned = {pa for pa, _ in mm.pgd_tables}
        doomed: list[tuple[int, int, str]] = []  # (entry pa, table pa, level), leaves first

        def collect(depth: int, table: int) -> None:
            name = names[depth]
            child = names[depth + 1]
            if child == "pte":
                return
            lv = a.level(name)
            for i in range(lv.entries):
                epa = table + i * lv.entry_size
                val = self.read_entry_now(epa, lv.entry_size)
                if a.entry_none(name, val) or not a.entry_present(name, val):
                    continue
                sub = a.table_pa(name, val)
                collect(depth + 1, sub)
                doomed.append((epa, sub, child))

        collect(0, mm.root)
        if not doomed:
            return
        yield s.TlbFlushRange(0, 1 << a.va_bits, mm)  # tlb_finish_mmu(): the fullmm flush
        for epa, table, level in doomed:
            if table in owned:
                continue
            parent = names[names.index(level) - 1]
            yield from self.clear_entry(parent, epa, f"free_pgd_range: {parent}_clear")
            yield from self.policy.tlb_remove_table(self, mm, table, level)

    def mmdrop(self: Kernel, mm: MM) -> s.KernelGen:
        """__mmdrop() (v6.12): mm_free_pgd() -> pgd_free(), then destroy_context().

        pgd_free() gives back the top table and everything pgd_alloc()
        allocated with it (x86-PAE's preallocated PMDs, sparc64's TSBs,
        s390's and arm's multi-page tables) at once: no CPU can walk an mm
        with no users.
        """
        yield s.KernelAtomic(lambda: self._pgd_free(mm), f"pgd_free({mm.name})")
        mm.dead = True

    def _pgd_free(self: Kernel, mm: MM) -> None:
        for pa, level in mm.pgd_tables:
            self.check_table_frame(pa, level)
        for pa, level in mm.pgd_tables:
            self.release_table_frame(pa, level, deferred=False)
        mm.pgd_tables = []
