"""The page-table allocation policy interface and the registry of policies.

Owns `TablePolicy` (Linux's generic allocator: one table per page, freed at
once by `pte_free()` or after a grace period by `pte_free_defer()`, 6.6
"mm/pgtable: add pte_free_defer() for pgtable as page"; unchanged through
6.14), `POLICIES` and `@register_policy`. Arches that share a page between
tables (powerpc fragments, s390 halves) subclass it in their own modules;
a porter subclasses it to try their own pte_free_defer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emu.kernel import steps as s
from emu.physmem import FrameState

if TYPE_CHECKING:
    from emu.kernel import Kernel
    from emu.kernel.mm import MM


class TablePolicy:
    """One table per frame: Linux's generic page-table allocator."""

    name = "page"

    def alloc(self, k: Kernel, mm: MM, level: str) -> s.KernelGen:
        pa = k.frames.alloc(f"{level} table", k.cpu, FrameState.PGTABLE, level=level)
        k.init_table(pa, level)
        return pa
        yield  # a generator with no step: page allocation is not a shared access

    def free(self, k: Kernel, mm: MM, pa: int, level: str) -> s.KernelGen:
        k.check_table_frame(pa, level)
        k.release_table_frame(pa, level, deferred=False)
        return
        yield

    def free_defer(self, k: Kernel, mm: MM, pa: int, level: str) -> s.KernelGen:
        k.check_table_frame(pa, level)
        frame = k.frames.frame_base(pa)
        k.frames.set_state(frame, FrameState.RCU_PENDING, k.cpu, f"{level} table pte_free_defer")
        yield s.CallRcu(lambda: k.release_table_frame(frame, level, deferred=True),
                        f"pte_free_defer callback: free {level} table {frame:#x}", head=frame)

    def tlb_remove_table(self, k: Kernel, mm: MM, pa: int, level: str) -> s.KernelGen:
        """mmu_gather's free of a detached table: after a grace period where
        the arch selects MMU_GATHER_RCU_TABLE_FREE, else at once (after the flush)."""
        if k.arch.rcu_table_free:
            yield from self.free_defer(k, mm, pa, level)
        else:
            yield from self.free(k, mm, pa, level)

    def ptlock_key(self, k: Kernel, table_pa: int) -> int:
        """What a split page-table lock is keyed by: the table (one table per page)."""
        return table_pa

    def exit_mmap(self, k: Kernel, mm: MM) -> s.KernelGen:
        """arch_exit_mmap()'s teardown of the mm's table caches: none for one table per page."""
        return
        yield


POLICIES: dict[str, type[TablePolicy]] = {"page": TablePolicy}


def register_policy(cls: type[TablePolicy]) -> type[TablePolicy]:
    """Class decorator: make a policy selectable by its `name`."""
    POLICIES[cls.name] = cls
    return cls
