"""Runs one kernel routine on one CPU, one step message at a time.

A `KernelTask` wraps a routine's generator. `runnable()` says whether the
step it is waiting to make can proceed now (a held lock or an IPI to an
IRQs-off CPU blocks it); `step()` performs that one step and advances the
generator to its next step message. `Note`s are traced, not scheduled.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from emu.kernel import steps as s
from emu.kernel.core import KernelCore
from emu.kernel.steps import KernelGen

_NOTHING = object()


class KernelTask:
    def __init__(self, kernel: KernelCore, cpu: int, gen: KernelGen, name: str,
                 performed: Callable[[Any], None] | None = None) -> None:
        self.kernel = kernel
        self.cpu = cpu
        self.gen = gen
        self.name = name
        # called with each step message right after it is performed, before the
        # routine runs on to its next step (so traces keep causal order)
        self.performed = performed
        self.pending: Any = _NOTHING
        self.done = False
        self.result: Any = None
        self.last_op: Any = None
        self._advance(None)

    def _advance(self, value: Any) -> None:
        k = self.kernel
        saved = k.cpu
        k.cpu = self.cpu
        try:
            while True:
                try:
                    op = self.gen.send(value)
                except StopIteration as stop:
                    self.done = True
                    self.result = stop.value
                    self.pending = _NOTHING
                    return
                if type(op) is s.Note:
                    k.hooks.on_note(self.cpu, op.text)
                    value = None
                    continue
                if type(op) is s.Observed:
                    k.hooks.on_observed(self.cpu, op)
                    value = None
                    continue
                self.pending = op
                return
        finally:
            k.cpu = saved

    def runnable(self) -> bool:
        return not self.done and self.kernel.ready(self.cpu, self.pending)

    def blocked_on(self) -> str:
        return self.kernel.blocked_on(self.cpu, self.pending)

    def step(self) -> Any:
        """Perform the pending step; returns the step message performed."""
        op = self.pending
        self.last_op = op
        k = self.kernel
        saved = k.cpu
        k.cpu = self.cpu
        try:
            result = k.perform(self.cpu, op)
        finally:
            k.cpu = saved
        if self.performed is not None:
            self.performed(op)
        self._advance(result)
        return op

    def run_to_completion(self, max_steps: int = 1_000_000) -> Any:
        """Run without interleaving (setup time only)."""
        n = 0
        while not self.done:
            if not self.runnable():
                raise RuntimeError(f"{self.name} blocked during setup: {self.blocked_on()}")
            self.step()
            n += 1
            if n > max_steps:
                raise RuntimeError(f"{self.name} did not finish in {max_steps} steps")
        return self.result
