"""The one radix walk loop: x86-PAE, arm, s390 and powerpc radix all run it.

Owns the part of a hardware page walk that is the same on every radix
MMU (Spike's `walk()` over a `vm_info`, gem5's `stepWalk`): index the
table with the level's VA bits, read the entry (one `PteRead`, one
scheduling point), hand it to the arch's decoder, and either descend to
the next table, stop with a fault, or finish with a translation. What
differs per arch lives in a `Geometry` record (levels, index bits, entry
sizes, table names) and in the arch's `decode` step; nothing here knows a
bit layout.

A decoder is a generator, so it can itself yield the walker's A/D
updates (`PteSetBits`) in the order the hardware makes them; it returns
`Descend(table)` to go on, or the walk's `Translation` / `Fault`. The
index width of the next level normally comes from the geometry, but a
decoder may say it (`Descend(table, bits)`: powerpc radix's NLS).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from arch.base import Access, Fault, PteRead, Translation, WalkStep


@dataclass(frozen=True)
class RadixLevel:
    """One level as the MMU sees it: its name, the VA bits that index it, entry size."""

    name: str
    shift: int  # lowest VA bit of the index
    bits: int  # index width (the table has 1 << bits entries)
    entry_size: int

    def index(self, va: int) -> int:
        return (va >> self.shift) & ((1 << self.bits) - 1)


@dataclass(frozen=True)
class Geometry:
    """Spike's vm_info: what drives the loop for one translation mode."""

    levels: tuple[RadixLevel, ...]

    def level_at(self, depth: int, shift: int, bits: int) -> RadixLevel:
        """The level at `depth` (a decoder-sized one past the end is named L<depth>)."""
        if depth < len(self.levels):
            lv = self.levels[depth]
            if lv.shift == shift and lv.bits == bits:
                return lv
            return RadixLevel(lv.name, shift, bits, lv.entry_size)
        return RadixLevel(f"L{depth}", shift, bits, self.levels[-1].entry_size)


@dataclass(frozen=True)
class Descend:
    """The entry points to a next-level table (`bits`: its index width, if the entry says)."""

    table: int
    bits: int | None = None


@dataclass
class WalkState:
    """What one walk carries from level to level (arch decoders add their own)."""

    va: int
    access: Access
    user: bool
    tables: list[int]
    depth: int = 0
    level: RadixLevel | None = None
    acc: dict[str, Any] = field(default_factory=dict)  # rights gathered on the way down

    def fault(self, reason: str, level: str | None = None) -> Fault:
        return Fault(self.va, self.access, level or (self.level.name if self.level else "?"),
                     reason)

    def translation(self, pa_base: int, size: int, perms: int, leaf_pa: int) -> Translation:
        return Translation(self.va & ~(size - 1), pa_base, size, perms, tuple(self.tables), leaf_pa)


Step = Descend | Translation | Fault
Decoder = Callable[[WalkState, int, int], Generator[WalkStep, int, Step]]


def radix_walk(geo: Geometry, table: int, st: WalkState, decode: Decoder, first: int = 0,
               latched: int | None = None,
               storage: int | None = None) -> Generator[WalkStep, int, Translation | Fault]:
    """Walk from `table` (a table of level `first`) down to a result.

    `latched`: the value of the first entry, when the CPU holds it in a
    register instead of reading it from memory (x86-PAE's PDPTE registers).
    `storage`: where the CPU's storage ends, if a table entry beyond it is
    an exception of its own (s390's addressing exception) rather than a
    read of whatever the bus returns.
    """
    depth = first
    lv = geo.levels[first]
    shift, bits = lv.shift, lv.bits
    st.tables.append(table)
    while True:
        lv = geo.level_at(depth, shift, bits)
        st.depth, st.level = depth, lv
        epa = table + lv.index(st.va) * lv.entry_size
        if latched is not None and depth == first:
            e = latched
        elif storage is not None and epa + lv.entry_size > storage:
            return st.fault("outside-ram")
        else:
            e = yield PteRead(epa, lv.entry_size, lv.name)
        step = yield from decode(st, e, epa)
        if not isinstance(step, Descend):
            return step
        table = step.table
        st.tables.append(table)
        depth += 1
        if step.bits is not None:
            bits = step.bits
            shift -= bits
        elif depth < len(geo.levels):
            shift, bits = geo.levels[depth].shift, geo.levels[depth].bits
        else:
            return st.fault("bad-entry")  # a table below the last level
