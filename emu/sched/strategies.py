"""Basic scheduling strategies: round-robin, seeded random, replay.

A strategy answers one question, modelled on shuttle's Scheduler trait:
given the runnable tasks (ordered by task id), which one takes the next
step? All randomness comes from the strategy's own `random.Random`, seeded
explicitly, so a seed decides the whole run.
"""

from __future__ import annotations

import random
from typing import Protocol


class Strategy(Protocol):
    name: str

    def new_execution(self) -> None: ...

    def choose(self, runnable: list[int], step: int) -> int: ...


class RoundRobin:
    """Each runnable task in turn, `quantum` steps at a time."""

    name = "rr"

    def __init__(self, quantum: int = 1) -> None:
        self.quantum = max(1, quantum)
        self.new_execution()

    def new_execution(self) -> None:
        self.current = -1
        self.left = 0

    def choose(self, runnable: list[int], step: int) -> int:
        if self.current in runnable and self.left > 0:
            self.left -= 1
            return self.current
        later = [t for t in runnable if t > self.current]
        self.current = later[0] if later else runnable[0]
        self.left = self.quantum - 1
        return self.current


class RandomStrategy:
    """Uniformly random among runnable tasks at every step."""

    name = "random"

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.new_execution()

    def new_execution(self) -> None:
        self.rng = random.Random(self.seed)

    def choose(self, runnable: list[int], step: int) -> int:
        if len(runnable) == 1:
            return runnable[0]
        return runnable[self.rng.randrange(len(runnable))]


class ReplayDivergence(RuntimeError):
    """The run did not offer the choice the schedule string names."""


class Replay:
    """Follows a recorded choice sequence exactly; then round-robin, if asked."""

    name = "replay"

    def __init__(self, choices: list[int], strict_end: bool = False) -> None:
        self.choices = choices
        self.strict_end = strict_end
        self.new_execution()

    def new_execution(self) -> None:
        self.pos = 0
        self.tail = RoundRobin()

    def choose(self, runnable: list[int], step: int) -> int:
        if self.pos < len(self.choices):
            want = self.choices[self.pos]
            self.pos += 1
            if want not in runnable:
                from emu.sched.schedule import task_name
                raise ReplayDivergence(
                    f"schedule step {self.pos - 1} wants {task_name(want)}, "
                    f"but only {', '.join(task_name(t) for t in runnable)} can run")
            return want
        if self.strict_end:
            raise ReplayDivergence(f"schedule ended after {len(self.choices)} steps; run had not")
        return self.tail.choose(runnable, step)
