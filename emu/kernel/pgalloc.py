"""Page-table allocation and freeing: pte_alloc_one, pte_free, pte_free_defer.

Owns the generic entry points the rest of the model calls (pte_alloc_one,
pte_free, pte_free_defer, the table-frame checks); the allocation
*policies* (Linux's algorithms for handing out table memory) are
emu.kernel.table_policy's and, per arch, pgalloc_frag's and pgalloc_s390's. The
default policy is Linux's generic one: one table per page, freed at once
(`pte_free`) or after an RCU grace period (`pte_free_defer`, 6.6 "mm/pgtable:
add pte_free_defer() for pgtable as page"). Arches that share a page between
tables select another policy by name (`Arch.pgtable_policy`); policies
register themselves in `POLICIES`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

# The policies defined in their own modules register themselves on import.
import emu.kernel.pgalloc_frag  # noqa: F401
import emu.kernel.pgalloc_s390  # noqa: F401
from emu.kernel import steps as s
from emu.kernel.table_policy import POLICIES, TablePolicy, register_policy
from emu.physmem import FrameState

__all__ = ["POLICIES", "PgAllocMixin", "TablePolicy", "register_policy"]

if TYPE_CHECKING:
    from emu.kernel import Kernel
    from emu.kernel.mm import MM


class PgAllocMixin:
    """Allocation entry points with Linux's names."""

    def check_table_frame(self: Kernel, pa: int, level: str) -> None:
        """Freeing something that is not a live table is a bug Linux would report
        ("Bad page state"): a double free or a table pointer read from a cleared entry."""
        from emu.kernel.core import KernelBug
        try:
            fi = self.frames.info(pa)
        except Exception:
            raise KernelBug(f"freeing a {level} table at {pa:#x}, outside RAM") from None
        if fi.state is not FrameState.PGTABLE:
            raise KernelBug(f"freeing a {level} table at {pa:#x} whose frame is "
                            f"{fi.state.value}: a double free or a stale table pointer")

    def release_table_frame(self: Kernel, pa: int, level: str, deferred: bool) -> None:
        """Give a whole table frame back to the allocator (no scheduling point)."""
        self.hooks.on_table_free(self.cpu, pa, self.frames.frame_size, deferred)
        self.frames.free(pa, self.cpu, f"{level} table freed" + (" after RCU grace period" if deferred else ""))

    def init_table(self: Kernel, pa: int, level: str) -> None:
        """Fill a new (private) table with the arch's empty entries."""
        init = self.arch.table_init(level)
        if init is not None:
            self.mem.write(pa, init)

    def alloc_table(self: Kernel, mm: MM, level: str) -> s.KernelGen:
        """Allocate a table of `level` through the policy (pte_alloc_one/pmd_alloc_one, all
        versions).
        """
        pa = yield from self.policy.alloc(self, mm, level)
        return pa

    def pte_alloc_one(self: Kernel, mm: MM) -> s.KernelGen:
        """pte_alloc_one() (all versions)."""
        return (yield from self.alloc_table(mm, "pte"))

    def pte_free(self: Kernel, mm: MM, pa: int) -> s.KernelGen:
        """pte_free() (all versions): at once."""
        yield from self.policy.free(self, mm, pa, "pte")

    def pte_free_defer(self: Kernel, mm: MM, pa: int) -> s.KernelGen:
        """pte_free_defer() (v6.6+, seed 004's series): after an RCU grace period, the policy's way.
        """
        yield from self.policy.free_defer(self, mm, pa, "pte")

    def mm_inc_nr_ptes(self: Kernel, mm: MM) -> None:
        """mm_inc_nr_ptes() (all versions)."""
        mm.nr_ptes += 1

    def mm_dec_nr_ptes(self: Kernel, mm: MM) -> None:
        """mm_dec_nr_ptes() (all versions)."""
        mm.nr_ptes -= 1

