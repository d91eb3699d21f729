"""Bug variants of mremap's page-table moves, registered by name.

Each is a way mm/mremap.c has actually been wrong:

- `move_normal_pmd_no_recheck`: the code before 6fa1066fc5d0 (Jann Horn,
  Oct 2024, "mm/mremap: fix move_normal_pmd/retract_page_tables race"):
  move_page_tables() decides to move a whole table from a pmd it read
  before taking the rmap locks, and move_normal_pmd() trusts that read;
  retract_page_tables() (i_mmap_rwsem read, no mmap lock) may take the
  table in between, and pmd_populate() then makes the new pmd from an empty
  one: a table pointer to physical page 0. ptemu's correct model is this
  code below 6.12 too (`[kernel] version`); the variant is it at any version.
- `move_ptes_flush_after_unlock`: move_ptes() as it was before eb66ae030829
  (Linus Torvalds, Oct 2018, "mremap: properly flush TLB before releasing
  the page", CVE-2018-18281): no flush under the ptls, one flush of the
  whole old range at the end of move_page_tables(). An rmap walker (truncate) can then zap the new pte, flush only
  the new range and free the page while another CPU still reaches it
  through its TLB entry for the old address.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emu.kernel import steps as s
from emu.kernel.variant_registry import variant

if TYPE_CHECKING:
    from emu.kernel import Kernel
    from emu.kernel.mm import MM, VMA
    from emu.kernel.sync import Spinlock


def _needs_move_pmd(arch: object) -> str | None:
    if getattr(arch, "have_move_pmd", False):
        return None
    return "no HAVE_MOVE_PMD here: mremap moves ptes one by one, never a whole table"


@variant("move_normal_pmd_no_recheck",
         "move_normal_pmd() does not re-read the old pmd under the pmd locks (before "
         "6fa1066fc5d0, v6.12): a table retract_page_tables() took after "
         "move_page_tables() looked leaves a new pmd made from an empty one",
         applies=_needs_move_pmd)
class MoveNormalPmdNoRecheck:
    def move_normal_pmd_still_table(self: Kernel, pmdval: int) -> bool:
        return True


@variant("move_ptes_flush_after_unlock",
         "move_ptes() drops both ptls with the old range still in other CPUs' TLBs, and "
         "move_page_tables() flushes it once, after its loop (before eb66ae030829, "
         "CVE-2018-18281): truncate zaps the moved pte and frees the page while another "
         "CPU still maps it through its old-address TLB entry")
class MovePtesFlushAfterUnlock:
    def move_ptes_unlock(self: Kernel, mm: MM, old_addr: int, old_end: int, force_flush: bool,
                         old_ptl: Spinlock, new_ptl: Spinlock) -> s.KernelGen:
        if new_ptl is not old_ptl:
            yield s.SpinUnlock(new_ptl)
        yield s.SpinUnlock(old_ptl)

    def move_page_tables(self: Kernel, mm: MM, vma: VMA, old_addr: int, new_vma: VMA,
                         new_addr: int, length: int, need_rmap_locks: bool) -> s.KernelGen:
        moved = yield from super().move_page_tables(mm, vma, old_addr, new_vma, new_addr,
                                                    length, need_rmap_locks)
        yield s.TlbFlushRange(old_addr, old_addr + length, mm)  # 4.19: after the loop
        return moved
