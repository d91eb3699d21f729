"""Bug variants of the swap, reclaim and migration paths, registered by name.

Each is a way the Linux history or review threads name of getting a
non-present entry wrong: `__pte_offset_map()` taking a PMD migration entry
for a bad pmd (the reason for its is_pmd_migration_entry() test, 6.5's
"mm/pgtable: allow pte_offset_map[_lock]() to fail" keeping the
pmd_trans_unstable() rule that a migration entry is no corruption), and
do_swap_page() decoding a lockless pte without `pte_unmap_same()` (Hugh
Dickins' 2005 fix for 32-bit PAE, where the pte is two words).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emu.kernel import steps as s
from emu.kernel.variant_registry import variant

if TYPE_CHECKING:
    from arch.base import Arch
    from emu.kernel import Kernel
    from emu.kernel.fault import Vmf
    from emu.kernel.sync import Spinlock


def _thp_migration(arch: Arch) -> str | None:
    return None if arch.thp_migration() else \
        f"{arch.name} has no THP migration (no PMD migration entries)"


def _torn_ptes(arch: Arch) -> str | None:
    from emu.kernel.pgtable import entry_reads_tear
    return None if entry_reads_tear(arch) else \
        f"{arch.name}'s ptes are one word: a lockless read cannot tear, pte_unmap_same only unmaps"


@variant("pmd_migration_clear_bad",
         "__pte_offset_map() tests only pmd_none and pmd_trans_huge before pmd_bad(), so a "
         "PMD migration entry (non-present, so 'bad') is cleared by pmd_clear_bad(): "
         "remove_migration_pmd() then finds nothing and the THP's mapping is lost while "
         "rss still counts it", _thp_migration)
class PmdMigrationClearBad:
    def pte_offset_map_nomap(self: Kernel, pmdval: int) -> bool:
        a = self.arch
        return a.entry_none("pmd", pmdval) or a.pmd_trans_huge(pmdval)


@variant("swap_no_pte_unmap_same",
         "do_swap_page() decodes the pte handle_pte_fault() read locklessly without "
         "pte_unmap_same()'s recheck under the ptl: on x86-PAE a racing swap-in's set_pte "
         "(high word, then low) can be read as its high half with the swap entry's low "
         "half, and that torn value is taken for a swap entry ('Bad swap file entry')",
         _torn_ptes)
class SwapNoPteUnmapSame:
    def pte_unmap_same(self: Kernel, vmf: Vmf, ptep: int, ptl: Spinlock) -> s.KernelGen:
        yield from self.pte_unmap(ptep)
        return True
