"""Bug variants of userfaultfd's page-table users, registered by name.

Each is a way to get seed 003's "mm/userfaultfd: allow pte_offset_map_lock()
to fail" wrong: UFFDIO_COPY holds only mmap_read_lock (6.12: the VMA read
lock), which neither retract_page_tables() nor MADV_DONTNEED's empty-table
reclaim excludes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emu.kernel import steps as s
from emu.kernel.variant_registry import variant

if TYPE_CHECKING:
    from emu.kernel import Kernel
    from emu.kernel.mm import MM


@variant("mfill_no_pmd_recheck",
         "mfill_atomic_install_pte() maps the PTE table from the pmd it read and takes the "
         "ptl with no pmd_same() recheck (pte_offset_map_nolock + spin_lock, as if "
         "mmap_read_lock kept the table), instead of pte_offset_map_lock() with its -EAGAIN "
         "(seed 003 15/32): an empty-table reclaim in between detaches the table and the "
         "new pte is written into a table on its way to being freed")
class MfillNoPmdRecheck:
    def mfill_map_pte(self: Kernel, mm: MM, pmd_pa: int, addr: int) -> s.KernelGen:
        r = yield from self.pte_offset_map_ro_nolock(mm, pmd_pa, addr)
        if r is None:
            return None
        ptep, ptl = r
        yield s.SpinLock(ptl)
        return (ptep, ptl)


@variant("uffd_move_no_dst_pmd_same",
         "move_pages_pte() trusts pte_same() on a none destination pte without rechecking the "
         "destination pmd under the ptls, as 6.8-6.13 did (fixed with 6.14's empty-table "
         "reclaim, 'mm: userfaultfd: recheck dst_pmd entry in move_pages_pte()'): "
         "MADV_DONTNEED may have reclaimed the empty table meanwhile, and the moved page "
         "goes into a table on its way to being freed")
class UffdMoveNoDstPmdSame:
    def move_dst_pmd_same(self: Kernel, dst_pmd: int, dst_pmdval: int) -> s.KernelGen:
        return True
        yield
