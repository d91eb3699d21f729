"""The Linux-mm model: one `Kernel` class assembled from per-topic mixins.

Each mixin module models one part of Linux (allocation, the
pte_offset_map family, faults, ...) with Linux's names. A variant (a named
way to get it wrong, or a user's own override) is a small subclass mixin
put in front of these by `emu.kernel.variants.build_kernel_class`.
"""

from __future__ import annotations

from emu.kernel.core import KernelCore
from emu.kernel.cow import CowMixin
from emu.kernel.exit import ExitMixin
from emu.kernel.fault import FaultMixin
from emu.kernel.fault_armv import FaultArmvMixin
from emu.kernel.filemap import FilemapMixin
from emu.kernel.folio import Folio
from emu.kernel.fork import ForkMixin
from emu.kernel.gup import GupMixin
from emu.kernel.gup_pin import GupPinMixin
from emu.kernel.huge_memory import HugeMemoryMixin
from emu.kernel.khugepaged import KhugepagedMixin
from emu.kernel.khugepaged_anon import KhugepagedAnonMixin
from emu.kernel.memory import MemoryMixin
from emu.kernel.migrate import MigrateMixin
from emu.kernel.mincore import MincoreMixin
from emu.kernel.mmu_notifier import MmuNotifierMixin
from emu.kernel.mprotect import MprotectMixin
from emu.kernel.mremap import MremapMixin
from emu.kernel.pagewalk import PageWalkMixin
from emu.kernel.pgalloc import POLICIES, PgAllocMixin, TablePolicy
from emu.kernel.pgtable import PgtableMixin
from emu.kernel.pt_reclaim import PtReclaimMixin
from emu.kernel.rmap import RmapMixin
from emu.kernel.secondary_mmu import SecondaryMmuMixin
from emu.kernel.swap import SwapDevice, SwapMixin
from emu.kernel.swapin import SwapinMixin
from emu.kernel.uffd_move import UffdMoveMixin
from emu.kernel.userfaultfd import UserfaultfdMixin
from emu.kernel.vma_split import VmaSplitMixin
from emu.kernel.vmscan import VmscanMixin


class Kernel(ForkMixin, CowMixin, MremapMixin, MprotectMixin, VmaSplitMixin, ExitMixin,
             UserfaultfdMixin, SecondaryMmuMixin, MmuNotifierMixin, MincoreMixin, PageWalkMixin,
             KhugepagedAnonMixin, KhugepagedMixin, PtReclaimMixin, HugeMemoryMixin, GupPinMixin,
             GupMixin, FaultArmvMixin, FilemapMixin, MemoryMixin, FaultMixin, PgtableMixin,
             PgAllocMixin, UffdMoveMixin, MigrateMixin, VmscanMixin, RmapMixin, SwapinMixin,
             SwapMixin, KernelCore):
    """The correct model of the seed series' Linux."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.folios: dict[int, Folio] = {}  # page pa -> folio holding it
        self.pins: dict[int, list] = {}  # vCPU -> the gup_pin.Pin records it holds
        self.policy = self.make_policy()
        self.swap_device = SwapDevice()  # emu/kernel/swap.py

    def make_policy(self) -> TablePolicy:
        """The arch's page-table allocation policy (variants may substitute one)."""
        return POLICIES[self.arch.pgtable_policy]()


__all__ = ["Kernel"]
