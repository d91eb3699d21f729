"""MMU notifiers: telling secondary MMUs that a range of the page tables changes.

Models mm/mmu_notifier.c and include/linux/mmu_notifier.h as of v6.12 (v6.6
is the same for what ptemu observes): a path that changes or frees ptes
brackets the change with `mmu_notifier_invalidate_range_start()` and
`_end()` on a `struct mmu_notifier_range` (mm, start, end, event). At start
the pages are still mapped; a subscriber must drop its translations of the
range and create none until the matching end; by end the ptes may be gone
and the pages and tables freed once it returns (mm_paths_facts.md section 8).
Subscribers register on the mm (`mmu_notifier_register()`, under
mmap_write_lock); the hooks are called in registration order, each a kernel
generator so a subscriber can lock and yield like any routine.

The callers ptemu models: zap_page_range_single() (MADV_DONTNEED, truncate's
unmap_mapping_range, collapse_file's unmap), unmap_vmas() (munmap), the
empty-table reclaim of MADV_DONTNEED (6.14), retract_page_tables() (seed 002
v2: "bring back mmu_notifier calls for PMD") and collapse_pte_mapped_thp()
(seed 004: started after the step-1 check, before step 2 clears the ptes,
ended after pmdp_collapse_flush(), before the table is freed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from emu.kernel import steps as s

if TYPE_CHECKING:
    from emu.kernel import Kernel
    from emu.kernel.mm import MM

# enum mmu_notifier_event (include/linux/mmu_notifier.h)
MMU_NOTIFY_UNMAP = "unmap"
MMU_NOTIFY_CLEAR = "clear"


@dataclass(frozen=True)
class MmuNotifierRange:
    """struct mmu_notifier_range (v6.12): what changes, in which mm, and why."""

    mm: MM
    start: int
    end: int
    event: str = MMU_NOTIFY_CLEAR
    owner: str = ""  # the routine making the change, for traces

    def overlaps(self, start: int, end: int) -> bool:
        return self.start < end and start < self.end


class MmuNotifierOps(Protocol):
    """struct mmu_notifier_ops, the two hooks ptemu calls (generators)."""

    name: str

    def invalidate_range_start(self, k: Kernel, rng: MmuNotifierRange) -> s.KernelGen: ...
    def invalidate_range_end(self, k: Kernel, rng: MmuNotifierRange) -> s.KernelGen: ...


class MmuNotifierMixin:
    def mm_has_notifiers(self: Kernel, mm: MM) -> bool:
        """mm_has_notifiers() (v6.12)."""
        return bool(mm.mmu_notifiers)

    def mmu_notifier_register(self: Kernel, mm: MM, sub: MmuNotifierOps) -> s.KernelGen:
        """mmu_notifier_register() (v6.12): add a subscriber under mmap_write_lock and
        mm_take_all_locks(), so no invalidation is between its start and end meanwhile
        (rmap walkers such as retract_page_tables() hold only i_mmap_rwsem)."""
        yield s.DownWrite(mm.mmap_lock)
        locked = yield from self.mm_take_all_locks(mm)
        mm.mmu_notifiers.append(sub)
        for sem in reversed(locked):  # mm_drop_all_locks()
            yield s.UpWrite(sem)
        yield s.UpWrite(mm.mmap_lock)
        return 0

    def mm_take_all_locks(self: Kernel, mm: MM) -> s.KernelGen:
        """mm_take_all_locks() (v6.12, mm/vma.c): i_mmap_rwsem for write of every file the mm
        maps, each once, in VMA order (ptemu has no anon_vma locks); returns them."""
        locked = []
        for vma in list(mm.vmas):
            cache = vma.file
            if cache is not None and all(cache.i_mmap_rwsem is not sem for sem in locked):
                yield s.DownWrite(cache.i_mmap_rwsem)
                locked.append(cache.i_mmap_rwsem)
        return locked

    def mmu_notifier_invalidate_range_start(self: Kernel, rng: MmuNotifierRange) -> s.KernelGen:
        """mmu_notifier_invalidate_range_start() (v6.12): every subscriber, in order."""
        if not self.mm_has_notifiers(rng.mm):
            return
        yield s.Note(f"{rng.owner}: mmu_notifier_invalidate_range_start "
                     f"[{rng.start:#x}, {rng.end:#x}) {rng.event}")
        for sub in list(rng.mm.mmu_notifiers):
            yield from sub.invalidate_range_start(self, rng)

    def mmu_notifier_invalidate_range_end(self: Kernel, rng: MmuNotifierRange) -> s.KernelGen:
        """mmu_notifier_invalidate_range_end() (v6.12): every subscriber, in order."""
        if not self.mm_has_notifiers(rng.mm):
            return
        yield s.Note(f"{rng.owner}: mmu_notifier_invalidate_range_end "
                     f"[{rng.start:#x}, {rng.end:#x})")
        for sub in list(rng.mm.mmu_notifiers):
            yield from sub.invalidate_range_end(self, rng)
