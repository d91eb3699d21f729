"""Guided replay: a schedule given as switch points, completed deterministically.

Schedule minimisation needs to run *partial* schedules: some context
switches of a failing run removed, the rest kept meaning the same thing.
A switch point here is (task, n): "run `task` until it has made `n` steps
in total". That is measured in the task's own progress, so removing an
unrelated switch point elsewhere does not shift what a kept one means.

Rules, all deterministic:
- the current point's task runs while it is runnable and short of its `n`;
- a point whose task has reached `n`, or cannot run now, is left behind;
- once the points are used up (or the current task cannot run), the last
  task keeps running while it can; otherwise the lowest-numbered runnable
  task takes over and keeps running ("stick with the current task").

`switch_points(choices)` turns any recorded choice sequence into points that
reproduce it exactly.
"""

from __future__ import annotations


def switch_points(choices: list[int]) -> list[tuple[int, int]]:
    """The (task, steps-so-far) points that reproduce `choices` exactly."""
    points: list[tuple[int, int]] = []
    made: dict[int, int] = {}
    i = 0
    n = len(choices)
    while i < n:
        t = choices[i]
        j = i
        while j < n and choices[j] == t:
            j += 1
        made[t] = made.get(t, 0) + (j - i)
        points.append((t, made[t]))
        i = j
    return points


class GuidedReplay:
    name = "guided"

    def __init__(self, points: list[tuple[int, int]]) -> None:
        self.points = list(points)
        self.new_execution()

    def new_execution(self) -> None:
        self.pos = 0
        self.made: dict[int, int] = {}
        self.current: int | None = None

    def choose(self, runnable: list[int], step: int) -> int:
        while self.pos < len(self.points):
            task, upto = self.points[self.pos]
            if self.made.get(task, 0) < upto and task in runnable:
                return self._run(task)
            self.pos += 1
        if self.current in runnable:
            return self._run(self.current)
        return self._run(runnable[0])

    def _run(self, task: int) -> int:
        self.current = task
        self.made[task] = self.made.get(task, 0) + 1
        return task
