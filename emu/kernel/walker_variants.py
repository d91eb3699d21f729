"""Bug variants of the generic page walker's users (mincore), registered by name.

Each is a way to get seed 003's conversion of the pagewalkers wrong: a
`pmd_entry` callback that maps the PTE table itself and does not handle
`pte_offset_map_lock()` failing the way 09/32 has it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emu.kernel import steps as s
from emu.kernel.variant_registry import variant

if TYPE_CHECKING:
    from emu.kernel import Kernel
    from emu.kernel.pagewalk import MmWalk


@variant("mincore_no_action_again",
         "mincore_pte_range() returns 0 when pte_offset_map_lock() finds no table, "
         "without walk->action = ACTION_AGAIN (seed 003 09/32): walk_pmd_range() goes on, "
         "the range's result bytes are never written and the rest of the vector lands "
         "one range early")
class MincoreNoActionAgain:
    def mincore_no_table(self: Kernel, walk: MmWalk, addr: int, end: int) -> s.KernelGen:
        return 0
        yield
