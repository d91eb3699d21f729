"""PCT: probabilistic concurrency testing (Burckhardt et al., ASPLOS 2010).

Each task gets a random priority when it is first seen; the highest-priority
runnable task always runs. `depth - 1` priority-change points are drawn
uniformly among the first `k` steps (`k` an estimate of the run length);
when the run reaches the i-th of them, the task about to run drops to
priority i, below every initial priority. A bug of depth d (d ordering
constraints) is then found with probability at least 1/(n k^(d-1)) per run.

All randomness comes from one `random.Random` seeded per execution, so a
seed names one schedule.
"""

from __future__ import annotations

import random


class PCTStrategy:
    name = "pct"

    def __init__(self, seed: int, depth: int = 2, k: int = 1000) -> None:
        if depth < 1:
            raise ValueError(f"PCT depth must be at least 1, got {depth}")
        self.seed = seed
        self.depth = depth
        self.k = max(1, k)
        self.new_execution()

    def new_execution(self) -> None:
        self.rng = random.Random(self.seed)
        # change point step -> the low priority it assigns (1 .. depth-1)
        points = sorted(self.rng.sample(range(self.k), min(self.depth - 1, self.k)))
        self.change_at = {step: i + 1 for i, step in enumerate(points)}
        self.priority: dict[int, float] = {}

    def _prio(self, task: int) -> float:
        p = self.priority.get(task)
        if p is None:
            # initial priorities lie above every change-point priority; a float
            # draw keeps them distinct without knowing the task count up front
            p = self.priority[task] = self.depth + self.rng.random()
        return p

    def choose(self, runnable: list[int], step: int) -> int:
        best = max(runnable, key=self._prio)
        low = self.change_at.get(step)
        if low is not None:
            self.priority[best] = low
            best = max(runnable, key=self._prio)
        return best
