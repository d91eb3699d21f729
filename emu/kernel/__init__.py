"""The Linux-mm model: one `Kernel` class assembled from per-topic mixins.

Each mixin module models one part of Linux (allocation, the
pte_offset_map family, faults, ...) with Linux's names. A variant (a named
way to get it wrong, or a user's own override) is a small subclass mixin
put in front of these by `emu.kernel.variants.build_kernel_class`.
"""

from __future__ import annotations

from emu.kernel.core import KernelCore
from emu.kernel.fault import FaultMixin
from emu.kernel.pgalloc import POLICIES, PgAllocMixin
from emu.kernel.pgtable import PgtableMixin


class Kernel(FaultMixin, PgtableMixin, PgAllocMixin, KernelCore):
    """The correct model of the seed series' Linux."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.policy = POLICIES[self.arch.pgtable_policy]()


__all__ = ["Kernel"]
