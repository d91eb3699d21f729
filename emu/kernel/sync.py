"""Synchronisation objects of the kernel model: spinlocks, rwsems, RCU.

These hold state only; the executor (`emu/kernel/task.py`) decides whether a
step that wants one can proceed, so blocking is the scheduler's business.

RCU follows the classic grace-period rule: a grace period that starts at
step s ends once every CPU has passed a quiescent state after s; a callback
queued at step t waits for a grace period that started after t. Which CPUs
pass quiescent states when is decided by which CPU the scheduler runs, so a
grace period can be made arbitrarily long.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


class Spinlock:
    """A non-recursive spinlock owned by one CPU at a time."""

    def __init__(self, name: str, page: int | None = None) -> None:
        self.name = name
        self.owner: int | None = None
        # split ptlocks live in the table page's ptdesc: the page they protect
        self.page = page

    def __repr__(self) -> str:
        return f"<{self.name}>"


class RwSem:
    """mmap_lock-style reader/writer semaphore (writers not starved out)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.readers: list[int] = []
        self.writer: int | None = None
        self.waiting_writers: list[int] = []

    def can_read(self, cpu: int) -> bool:
        return self.writer is None and not self.waiting_writers

    def can_write(self, cpu: int) -> bool:
        return self.writer is None and not self.readers

    def is_locked(self) -> bool:
        return self.writer is not None or bool(self.readers)

    def __repr__(self) -> str:
        return f"<{self.name}>"


@dataclass
class RcuCallback:
    target_gp: int
    fn: Callable[[], None]
    what: str
    queued_step: int
    cpu: int | None
    head: int | None = None  # the rcu_head's identity (its page), if the caller named it


@dataclass
class Rcu:
    """Grace-period bookkeeping shared by all CPUs."""

    ncpus: int
    completed: int = 0  # last grace period that has ended
    current: int = 0  # grace period in progress (== completed when idle)
    gp_start_step: int = 0
    need_qs: set[int] = field(default_factory=set)
    callbacks: list[RcuCallback] = field(default_factory=list)

    def gp_in_progress(self) -> bool:
        return self.current != self.completed

    def _start_gp(self, step: int, online: list[int]) -> None:
        self.current += 1
        self.gp_start_step = step
        self.need_qs = set(online)

    def request_gp(self, step: int, online: list[int]) -> int:
        """The grace period a request made now must wait for."""
        if self.gp_in_progress():
            return self.current + 1
        self._start_gp(step, online)
        self._maybe_end_gp(step, online)
        return self.current

    def queue(self, cb: RcuCallback) -> None:
        self.callbacks.append(cb)

    def quiescent(self, cpu: int, step: int, online: list[int]) -> None:
        if cpu in self.need_qs:
            self.need_qs.discard(cpu)
            self._maybe_end_gp(step, online)

    def offline(self, cpu: int, step: int, online: list[int]) -> None:
        self.quiescent(cpu, step, online)

    def _maybe_end_gp(self, step: int, online: list[int]) -> None:
        while self.gp_in_progress() and not self.need_qs:
            self.completed = self.current
            if any(cb.target_gp > self.completed for cb in self.callbacks) or self._waiters:
                self._start_gp(step, online)
            else:
                break

    # synchronize_rcu() callers waiting for a target grace period
    _waiters: int = 0

    def ready_callbacks(self) -> list[RcuCallback]:
        return [cb for cb in self.callbacks if cb.target_gp <= self.completed]
