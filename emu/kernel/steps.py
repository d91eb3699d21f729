"""Every object a kernel routine may yield is defined here.

A kernel routine is a generator. Each `yield` hands one of these messages to
the executor (`emu/kernel/task.py`) and is one scheduling point: the
scheduler may run any other vCPU, walker or RCU callback between two of
them. Plain Python between two yields is atomic, so a routine must yield at
every shared-memory access and every synchronisation operation it models.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

# ---- memory ---------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    """Read `size` bytes at physical `pa` (one access: atomic for its size)."""

    pa: int
    size: int
    what: str = ""


@dataclass(frozen=True)
class Store:
    pa: int
    size: int
    value: int
    what: str = ""


@dataclass(frozen=True)
class Cmpxchg:
    """Atomic compare-and-exchange; the result is the value found."""

    pa: int
    size: int
    old: int
    new: int
    what: str = ""


@dataclass(frozen=True)
class Xchg:
    """Atomic exchange; the result is the old value."""

    pa: int
    size: int
    new: int
    what: str = ""


@dataclass(frozen=True)
class KernelAtomic:
    """An atomic read-modify-write of kernel data that is not in guest memory.

    Models an atomic op on a `struct page` field (s390's _refcount
    allocation bits): `fn()` runs as this one step and its result is the
    step's value. `fn` must look state up when called (through the kernel
    it captures), not hold objects a machine snapshot would copy.
    """

    fn: Callable[[], Any]
    what: str


# ---- locks ------------------------------------------------------------------


@dataclass(frozen=True)
class SpinLock:
    lock: Any  # emu.kernel.sync.Spinlock
    nested: bool = False  # spin_lock_nested(): a second lock of the same class


@dataclass(frozen=True)
class SpinUnlock:
    lock: Any


@dataclass(frozen=True)
class DownRead:
    sem: Any  # emu.kernel.sync.RwSem


@dataclass(frozen=True)
class UpRead:
    sem: Any


@dataclass(frozen=True)
class DownWrite:
    sem: Any


@dataclass(frozen=True)
class UpWrite:
    sem: Any


@dataclass(frozen=True)
class DowngradeWrite:
    """downgrade_write(): the writer becomes a reader without letting go."""

    sem: Any


# ---- RCU, IRQs, IPIs, TLB ---------------------------------------------------


@dataclass(frozen=True)
class RcuReadLock:
    pass


@dataclass(frozen=True)
class RcuReadUnlock:
    pass


@dataclass(frozen=True)
class IrqDisable:
    """local_irq_save(): also an RCU read-side section for the IPI sync."""


@dataclass(frozen=True)
class IrqEnable:
    pass


@dataclass(frozen=True)
class CallRcu:
    """Queue `fn()` to run after a grace period that starts after this step.

    `head` names the rcu_head used (e.g. the table page's physical address):
    queueing a head that is already queued corrupts RCU's callback list, and
    is reported as a kernel bug (what CONFIG_DEBUG_OBJECTS_RCU_HEAD catches).
    """

    fn: Callable[[], None]
    what: str
    head: int | None = None


@dataclass(frozen=True)
class SynchronizeRcu:
    """Block until a full grace period has elapsed."""


@dataclass(frozen=True)
class RcuBarrier:
    """rcu_barrier(): wait until every callback queued so far has run."""


@dataclass(frozen=True)
class TlbFlushRange:
    """flush_tlb_range(): the CPUs running `mm` drop translations in [start, end).

    Delivered by IPI to mm_cpumask(mm), so it waits for each of those CPUs
    to have IRQs enabled (unless the arch's invalidation is a hardware
    broadcast). `mm` None: every CPU (callers that do not say whose range).
    """

    start: int
    end: int
    mm: Any = field(default=None, compare=False)


@dataclass(frozen=True)
class TlbRemoveTableSyncOne:
    """tlb_remove_table_sync_one(): an empty IPI to every CPU, waited for."""


@dataclass(frozen=True)
class Note:
    """A trace line, not a step of its own (it costs no scheduling point)."""

    text: str = field(default="")


@dataclass(frozen=True)
class Observed:
    """A multi-load lockless read has produced `value` for the entry at `pa`.

    Not a step: it tells checkers what a reader concluded, so a value that was
    never in memory (a torn read) can be recognised.
    """

    pa: int
    size: int
    value: int
    what: str = ""


@dataclass(frozen=True)
class SecondaryLoad:
    """A read by a secondary MMU (emu/kernel/secondary_mmu.py) through what it cached.

    `pa` was reached through a translation (or a cached PTE table, `table`)
    that the device's walk filled at step `filled`, for the address `va`.
    The secondary-mmu checker judges it; the value is the memory's.
    """

    pa: int
    size: int
    va: int
    filled: int
    table: int | None = None
    what: str = ""


KernelGen = Generator[Any, Any, Any]
