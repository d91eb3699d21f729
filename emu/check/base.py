"""The checker interface and the violation it raises.

A checker is a small class that watches machine events (walker and kernel
accesses, frees, TLB uses, ends of service calls and of the run) and
raises `Violation` the moment an invariant breaks. Every method is
optional; the machine calls each of them on every enabled checker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from arch.base import Arch
    from emu.kernel import Kernel
    from emu.physmem import FrameAllocator, PhysMem


class CheckedMachine(Protocol):
    """What a checker reads of the machine it watches.

    emu.machine.Machine is the implementation; checkers name only this, so
    this package never imports the machine that imports it.
    """

    arch: Arch
    mem: PhysMem
    frames: FrameAllocator
    kernel: Kernel
    step: int

    def drain_rcu(self, max_callbacks: int = ...) -> bool: ...


@dataclass
class Violation(Exception):
    checker: str
    message: str
    step: int = -1
    cpu: int | None = None
    frame: int | None = None  # physical address of the frame concerned
    details: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"[{self.checker}] {self.message}"


class Checker:
    name = "checker"

    def attach(self, m: CheckedMachine) -> None:
        self.m = m

    def fail(self, message: str, cpu: int | None = None, frame: int | None = None,
             **details: Any) -> Violation:
        return Violation(self.name, message, self.m.step, cpu, frame, details)

    # events ---------------------------------------------------------------
    def on_walker_read(self, cpu: int, pa: int, size: int, value: int, level: str) -> None: ...
    def on_walker_write(self, cpu: int, pa: int, size: int, value: int, level: str) -> None: ...
    def on_kernel_load(self, cpu: int, pa: int, size: int, value: int, what: str) -> None: ...
    def on_kernel_store(self, cpu: int, pa: int, size: int, value: int, what: str) -> None: ...
    def on_table_free(self, cpu: int | None, pa: int, size: int, deferred: bool) -> None: ...
    def on_tlb_use(self, cpu: int, entry: Any, va: int, access: Any) -> None: ...
    def on_kernel_step(self, cpu: int, op: Any) -> None: ...
    def on_lockless_value(self, cpu: int, pa: int, size: int, value: int, what: str) -> None: ...
    # a walker or kernel read of [pa, pa+size) that is not RAM (`who` says which reader)
    def on_outside_ram(self, cpu: int, pa: int, size: int, who: str) -> None: ...
    def on_service_end(self, cpu: int, kind: str) -> None: ...
    def on_run_end(self) -> None: ...
