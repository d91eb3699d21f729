"""The built-in bug variants: each a mixin overriding one correct routine.

Every variant is a way to get the seed series wrong that the series, its
review threads or its follow-ups name. Select them per scenario with
`[kernel] variants = ["name", ...]`; correct code is the default.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from emu.kernel import steps as s
from emu.kernel.pgtable import entry_reads_tear
from emu.kernel.variant_registry import variant

if TYPE_CHECKING:
    from arch.base import Arch
    from emu.kernel import Kernel
    from emu.kernel.fault import Vmf
    from emu.kernel.mm import MM


def _two_load_reads(arch: Arch) -> str | None:
    return None if entry_reads_tear(arch) else \
        f"{arch.name} reads a pmd in one load: nothing to tear or to sync"


def _collapses(arch: Arch) -> str | None:
    return None if arch.supports_huge_pmd() else \
        f"{arch.name} has no PMD-sized pages: khugepaged and MADV_COLLAPSE never collapse " \
        "or retract a table there"


def _rechecks_pmd_same(arch: Arch) -> str | None:
    """Where a pte_offset_map_rw_nolock() caller rechecks pmd_same() before writing:
    collapse_pte_mapped_thp() (arches with PMD-sized pages) and arm's adjust_pte()
    when the alias's table has its own split ptl."""
    if arch.supports_huge_pmd():
        return None
    if arch.vivt_cache_aliasing and arch.split_pte_ptlocks:
        return None
    return (f"{arch.name} has no PMD-sized pages (no collapse_pte_mapped_thp) and its "
            "adjust_pte() runs under the fault's own ptl (no split PTE locks with aliasing "
            "caches): no pte_offset_map_rw_nolock() caller there rechecks pmd_same()")


def _frees_tables_after_flush(arch: Arch) -> str | None:
    return None if not arch.rcu_table_free else \
        f"{arch.name} frees unlinked tables after a grace period (MMU_GATHER_RCU_TABLE_FREE)"


def _table_policy(name: str) -> Callable[[Arch], str | None]:
    def check(arch: Arch) -> str | None:
        return None if arch.pgtable_policy == name else \
            f"{arch.name} allocates tables by the {arch.pgtable_policy!r} policy, not {name!r}"
    return check


@variant("pte_free_immediate",
         "retract/collapse free the detached PTE table with pte_free() instead of "
         "pte_free_defer(): lockless walkers (hardware, GUP-fast, pte_offset_map users) "
         "may still be reading it (seed 004's reason for pte_free_defer)",
         applies=_collapses)
class PteFreeImmediate:
    def pte_free_defer(self: Kernel, mm: MM, pa: int) -> s.KernelGen:
        yield from self.pte_free(mm, pa)


@variant("no_pmd_same_recheck",
         "a pte_offset_map_rw_nolock() caller takes the ptl but skips the pmd_same() "
         "recheck, so it may write to a table retract_page_tables() detached "
         "(seed 001 v3: 'also perform a pmd_same() check')",
         applies=_rechecks_pmd_same)
class NoPmdSameRecheck:
    def rw_nolock_pmd_same(self: Kernel, pmd_pa: int, pmdval: int) -> s.KernelGen:
        return True
        yield


@variant("missing_pte_unmap",
         "handle_pte_fault() maps the PTE with pte_offset_map_rw_nolock() and, finding "
         "it none, forgets pte_unmap(): the rcu_read_lock() taken by __pte_offset_map() "
         "is never dropped (seed 000: callers that never called pte_unmap())")
class MissingPteUnmap:
    def handle_pte_none(self: Kernel, vmf: Vmf, ptep: int) -> s.KernelGen:
        return (yield from self.do_pte_missing(vmf))


@variant("no_lockless_sync",
         "on x86-PAE, retract/collapse skip pmdp_get_lockless_sync() after "
         "pmdp_collapse_flush(): an IRQs-off pmdp_get_lockless() reader may pair a "
         "stale half with a new one and walk into the freed table (seed 002/004)",
         applies=_two_load_reads)
class NoLocklessSync:
    def pmdp_get_lockless_sync(self: Kernel) -> s.KernelGen:
        return
        yield


@variant("collapse_no_clear",
         "collapse_pte_mapped_thp() step 2 removes the rmap but leaves the PTEs, as "
         "before seed 004 when i_mmap_lock_write kept truncate out: a racing truncate "
         "finds them and removes them again (double put)",
         applies=_collapses)
class CollapseNoClear:
    def collapse_clear_pte(self: Kernel, ptep: int) -> s.KernelGen:
        return
        yield


@variant("free_before_flush",
         "munmap (or empty-table reclaim) frees a detached PTE table before the TLB "
         "flush has reached the other CPUs: on arches that free tables right after "
         "the flush (arm 2-level), a walk still in flight reads the freed table "
         "(the ordering tlb_finish_mmu() exists for)",
         applies=_frees_tables_after_flush)
class FreeBeforeFlush:
    def flush_and_free_table(self: Kernel, mm: MM, addr: int, table: int,
                             rcu: bool = False) -> s.KernelGen:
        if rcu:
            yield from self.policy.free_defer(self, mm, table, "pte")
        else:
            yield from self.tlb_remove_table(mm, table)
        yield s.TlbFlushRange(addr, addr + self.arch.pmd_size, mm)


@variant("unlink_after_free",
         "free_pgtables() frees a VMA's page tables before unlink_file_vma() has taken "
         "it out of i_mmap (\"Hide vma from rmap and truncate_pagecache before freeing "
         "pgtables\", mm/memory.c): retract_page_tables or truncate, holding i_mmap_rwsem "
         "for read, still finds the VMA and walks its freed tables")
class UnlinkAfterFree:
    def free_pgtables(self: Kernel, mm: MM, vma) -> s.KernelGen:  # noqa: ANN001
        yield from self.free_pgd_range(mm, vma)
        yield from self.unlink_file_vma(vma)


@variant("plain_two_load_read",
         "a lockless reader of a 64-bit entry on a 32-bit CPU (x86-PAE) reads it with "
         "two 32-bit loads and no re-read of the low half, as before "
         "pmdp_get_lockless(): it can combine halves of two different values",
         applies=_two_load_reads)
class PlainTwoLoadRead:
    def entry_get_lockless(self: Kernel, level: str, pa: int) -> s.KernelGen:
        if not self.split_entry_reads():
            return (yield s.Load(pa, self.entry_size(level), f"{level} read"))
        lo_pa, hi_pa = self._halves(pa)
        w = self.arch.word_size
        low = yield s.Load(lo_pa, w, f"{level} read low")
        high = yield s.Load(hi_pa, w, f"{level} read high")
        value = (high << (8 * w)) | low
        yield s.Observed(pa, self.entry_size(level), value, f"{level} two-load read")
        return value


@variant("frag_shared_rcu_head",
         "powerpc: pte_free_defer() queues the fragment page's one rcu_head for every "
         "deferred fragment, as v1 of the series did; two fragments of one page "
         "deferred within a grace period queue it twice and corrupt RCU's list "
         "(fixed in v2 by deferring only the last free, 32cc0b7c9d50)",
         applies=_table_policy("fragments"))
class FragSharedRcuHead:
    def make_policy(self: Kernel):  # noqa: ANN201
        from emu.kernel.pgalloc_frag import FragmentPolicy
        from emu.kernel.variant_registry import VariantError

        base = super().make_policy()
        if not isinstance(base, FragmentPolicy):
            raise VariantError("frag_shared_rcu_head needs a fragment policy (arch powerpc)")

        class SharedHeadFragments(type(base)):
            def free_defer(self, k: Kernel, mm: MM, pa: int, level: str) -> s.KernelGen:
                from emu.kernel.pgalloc_frag import FRAGMENTED_LEVELS, LIVE, PENDING
                if level not in FRAGMENTED_LEVELS:
                    yield from super().free_defer(k, mm, pa, level)
                    return
                frame = k.frames.frame_base(pa)
                self._release_fragment(k, pa, level, LIVE, PENDING)

                def put_after_gp() -> None:
                    from emu.kernel.pgalloc_frag import FREED
                    self._release_fragment(k, pa, level, PENDING, FREED)
                    if self._drop_ref(k, pa, level):
                        self.pte_free_now(k, frame, deferred=True)

                yield s.CallRcu(put_after_gp, f"pte_free_defer (v1): put fragment {pa:#x}",
                                head=frame)

        return SharedHeadFragments()


@variant("s390_free_page_early",
         "s390 with two 2 KiB tables per 4 KiB page: freeing one half frees the whole "
         "page at once, ignoring that the other half is still allocated or its free "
         "still pending (what the AA/PP bits of pgalloc.c exist to prevent)",
         applies=_table_policy("halves"))
class S390FreePageEarly:
    def make_policy(self: Kernel):  # noqa: ANN201
        from emu.kernel.pgalloc_s390 import HalvesPolicy
        from emu.kernel.variant_registry import VariantError

        base = super().make_policy()
        if not isinstance(base, HalvesPolicy):
            raise VariantError("s390_free_page_early needs s390 with [arch_options] pgtable = \"halves\"")

        class EarlyFreeHalves(type(base)):
            def page_table_free(self, k: Kernel, mm: MM, pa: int, deferred: bool) -> s.KernelGen:
                lock, lst = self.context(mm)
                frame, _bit = self.half_of(k, pa)
                yield s.SpinLock(lock)
                self.list_del_init(lst, frame)
                yield s.SpinUnlock(lock)
                if deferred:
                    yield self.call_rcu_free(k, frame)
                else:
                    self.pte_free_now(k, frame, deferred=False)

        return EarlyFreeHalves()
