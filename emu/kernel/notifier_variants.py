"""Bug variants of the mmu notifier calls, registered by name.

Each is a path that changes or frees ptes and gets the notifier contract
wrong (include/linux/mmu_notifier.h: start before the change, no new
secondary mapping until end, end only once the change is made): a
secondary MMU then keeps a translation to a page or table that is freed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emu.kernel import steps as s
from emu.kernel.variant_registry import variant

if TYPE_CHECKING:
    from emu.kernel import Kernel
    from emu.kernel.mmu_notifier import MmuNotifierRange


@variant("zap_no_notifier",
         "zap_page_range_single() (MADV_DONTNEED, truncate, collapse_file()'s unmap, "
         "munmap) clears ptes and frees their pages without "
         "mmu_notifier_invalidate_range_start/end(): a secondary MMU keeps reading a page "
         "after it is freed")
class ZapNoNotifier:
    def zap_notifier_start(self: Kernel, rng: MmuNotifierRange) -> s.KernelGen:
        return
        yield

    def zap_notifier_end(self: Kernel, rng: MmuNotifierRange) -> s.KernelGen:
        return
        yield


@variant("collapse_no_notifier",
         "collapse_pte_mapped_thp() clears the ptes (step 2) and detaches and frees the "
         "PTE table (step 4) with no mmu_notifier_invalidate_range_start/end() around them, "
         "where seed 004 has one from after step 1 to before the free: a secondary MMU that "
         "cached the table keeps walking it after pte_free_defer()")
class CollapseNoNotifier:
    def collapse_notifier_start(self: Kernel, rng: MmuNotifierRange) -> s.KernelGen:
        return
        yield

    def collapse_notifier_end(self: Kernel, rng: MmuNotifierRange) -> s.KernelGen:
        return
        yield
