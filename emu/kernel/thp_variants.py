"""Bug variants of the anon THP paths (collapse_huge_page, split, zap), registered by name.

Each undoes one thing mm/khugepaged.c or mm/huge_memory.c does for a reason
Linux's history or comments give; guest/scenarios/thp_collapse_gup.toml and
thp_split_walker.toml catch them, and are clean on the correct model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emu.kernel import steps as s
from emu.kernel.variant_registry import variant

if TYPE_CHECKING:
    from emu.kernel import Kernel
    from emu.kernel.mm import MM


def _needs_gup_sync(arch) -> str | None:  # noqa: ANN001
    if not arch.supports_huge_pmd():
        return f"{arch.name} has no THP"
    if arch.collapse_flush_serializes:
        return "pmdp_collapse_flush() itself IPIs every CPU here (serialize_against_pte_lookup)"
    if arch.tlb_flush_kind == "ipi":
        return ("the TLB flush of pmdp_collapse_flush() is an IPI that waits for IRQs-off "
                "GUP-fast already")
    return None


@variant("collapse_no_gup_fast_sync",
         "collapse_huge_page() without the tlb_remove_table_sync_one() after "
         "pmdp_collapse_flush(), as before 2ba99c5e0881 (\"mm/khugepaged: fix GUP-fast "
         "interaction by sending IPI\", Jann Horn, v6.2 and stable): where the TLB flush is no "
         "IPI (paravirt x86, s390 IDTE, powerpc radix tlbie), an IRQs-off GUP-fast walk that "
         "read the pmd before the flush is still in the old table when it is deposited and "
         "then freed at once by zap_deposited_table()'s pte_free()",
         applies=_needs_gup_sync)
class CollapseNoGupFastSync:
    def collapse_gup_fast_sync(self: Kernel) -> s.KernelGen:
        return
        yield


def _has_thp(arch) -> str | None:  # noqa: ANN001
    return None if arch.supports_huge_pmd() else f"{arch.name} has no THP"


@variant("zap_huge_pmd_no_withdraw",
         "zap_huge_pmd() of an anon THP without zap_deposited_table(): the PTE table "
         "deposited at the fault or collapse is never withdrawn, freed or uncounted (the leak "
         "zap_deposited_table() exists to avoid; Linux reports it as \"BUG: non-zero "
         "pgtables_bytes on freeing mm\" at exit)",
         applies=_has_thp)
class ZapHugePmdNoWithdraw:
    def zap_anon_deposit(self: Kernel, mm: MM, pmd_pa: int, addr: int) -> s.KernelGen:
        return
        yield


def _split_race_visible(arch) -> str | None:  # noqa: ANN001
    if not arch.supports_huge_pmd():
        return f"{arch.name} has no THP"
    if not arch.split_pte_ptlocks:
        return ("a fault on the half-filled table needs its ptl, which is the "
                "page_table_lock the split holds")
    return None


@variant("split_populate_before_ptes",
         "__split_huge_pmd_locked() makes the withdrawn table live (pmd_populate of the real "
         "pmd) before filling it, instead of filling it through the stack pmd and only then "
         "\"smp_wmb(); /* make pte visible before pmd */ pmd_populate()\": a walker on another "
         "CPU finds none ptes, its fault installs a new page under the table's ptl (the split "
         "holds only the pmd lock), and the split's set_ptes then overwrites that mapping",
         applies=_split_race_visible)
class SplitPopulateBeforePtes:
    def split_install(self: Kernel, mm: MM, pmd_pa: int, pgtable: int,
                      ptes: list[int]) -> s.KernelGen:
        yield from self.split_populate(mm, pmd_pa, pgtable)
        yield from self.split_set_ptes(pgtable, ptes)


def _deposit_moves(arch) -> str | None:  # noqa: ANN001
    if not arch.supports_huge_pmd():
        return f"{arch.name} has no THP"
    if arch.thp_deposit != "slot" and not arch.split_pmd_ptlocks:
        return "the deposit hangs off the mm (no split pmd locks): it never has to move"
    return None


@variant("move_huge_pmd_no_deposit_move",
         "move_huge_pmd() (mremap) moves an anon huge pmd but leaves its deposited PTE table "
         "with the old pmd, where pmd_move_must_withdraw() says it must follow: the bug of "
         "b3084f4db3ae (\"powerpc/thp: Fix crash on mremap\", 2014; hash keeps the deposit "
         "in a slot beside the pmd), and on every arch with split pmd locks once the new pmd "
         "is in another pmd table: the zap of the moved THP withdraws nothing (Linux crashed "
         "in pgtable_trans_huge_withdraw)",
         applies=_deposit_moves)
class MoveHugePmdNoDepositMove:
    def move_huge_pmd_deposit(self: Kernel, mm: MM, pmdval: int, old_pmd: int, old_addr: int,
                              new_pmd: int, new_addr: int) -> s.KernelGen:
        return
        yield
