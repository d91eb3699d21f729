"""Bug variants of fork and copy-on-write, registered by name.

Each is a way Linux's history got fork, GUP pins or COW against
retract_page_tables wrong: fork write-protecting anon ptes while GUP-fast
pins them (before 57efa1fe5957), fork sharing a pinned page with the
child (before 70e806e4e645), retract_page_tables trusting an anon_vma
check made without the ptl (before 023f47a8250c and seed 004's recheck).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emu.kernel import steps as s
from emu.kernel.known_variants import _collapses
from emu.kernel.variant_registry import variant

if TYPE_CHECKING:
    from emu.kernel import Kernel
    from emu.kernel.folio import Folio
    from emu.kernel.mm import MM, VMA


@variant("fork_no_write_protect_seq",
         "copy_page_range() write-protects the parent's anon ptes without bumping "
         "mm->write_protect_seq (before 57efa1fe5957 \"mm/gup: prevent gup_fast from racing "
         "with COW during fork\"): a pin_user_pages_fast() that read a pte still writable and "
         "grabbed the page after fork checked folio_maybe_dma_pinned() keeps its pin on a page "
         "fork then shares with the child write-protected; the parent's next write copies it "
         "away from the pin")
class ForkNoWriteProtectSeq:
    def write_protect_seq_begin(self: Kernel, mm: MM) -> s.KernelGen:
        return
        yield

    def write_protect_seq_end(self: Kernel, mm: MM) -> s.KernelGen:
        return
        yield


@variant("fork_shares_pinned_pages",
         "copy_present_pte() shares even an anon page the parent has pinned for DMA with "
         "the child, write-protected (fork before 70e806e4e645 \"mm: Do early cow for pinned "
         "pages during fork() for ptes\", v5.9): the parent's next write to it copies it, and "
         "its mapping no longer is the pinned page")
class ForkSharesPinnedPages:
    def folio_needs_cow_for_dma(self: Kernel, vma: VMA, folio: Folio) -> bool:
        return False


@variant("retract_no_anon_vma_recheck",
         "retract_page_tables() trusts its first, lockless look at vma->anon_vma and does "
         "not repeat it under pmd_lock + ptl (before 023f47a8250c \"mm/khugepaged: fix "
         "->anon_vma race\" and seed 004's rechecks): a UFFDIO_COPY into a MAP_PRIVATE file "
         "mapping that gave the VMA its anon_vma and mapped an anon page meanwhile has that "
         "page's PTE table freed under it",
         applies=_collapses)
class RetractNoAnonVmaRecheck:
    def retract_recheck_under_ptl(self: Kernel, vma: VMA) -> bool:
        return not vma.uffd_wp
