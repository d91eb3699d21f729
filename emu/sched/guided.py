"""Guided replay: a schedule given as switch points, completed deterministically.

Schedule minimisation needs to run *partial* schedules: some context
switches of a failing run removed, the rest kept meaning the same thing.
A switch point says "run `task` until ...", measured in the task's own
progress so that removing an unrelated point elsewhere does not shift what
a kept one means:

- (task, n): until the task has made `n` steps in total;
- (task, n, anchor, k): until the task is about to make a step described
  as `anchor` for the k-th time (descriptions come from the `describe`
  callback: the kernel step it has pending, the entry its walker reads
  next, its guest PC). Anchors survive a task taking more or fewer steps to
  get there (a fault taken or not, a table another task allocated first);
  `n` stays as a cap at 4n + 1000 steps.

Rules, all deterministic:
- the current point's task runs while it is runnable and not there yet;
- a point whose task got there, or cannot run now, is left behind;
- once the points are used up, the tasks are ranked by how recently they
  ran (the current one first, then the one it interrupted, ..., then the
  ones that never ran, lowest number first) and the best-ranked runnable
  task runs: the current task keeps running while it can, and when it
  blocks, whoever stands in for it yields back as soon as it can go on.

`switch_points(choices)` turns a recorded choice sequence into count points
that reproduce it exactly; `AnchorRecorder` replays one and adds anchors.
"""

from __future__ import annotations

from collections.abc import Callable

from emu.sched.strategies import Replay

Point = tuple  # (task, n) or (task, n, anchor, k)


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

    def __init__(self, points: list[Point], describe: Callable[[int], str] | None = None) -> None:
        self.points = list(points)
        self.describe = describe
        self.new_execution()

    def new_execution(self) -> None:
        self.pos = 0
        self.made: dict[int, int] = {}
        self.seen: dict[tuple[int, str], int] = {}  # (task, description) -> times made
        self.current: int | None = None
        self.recent: list[int] = []  # tasks by when they last ran, most recent last
        self.rank: list[int] | None = None  # completion order, frozen when points run out

    def _there(self, point: Point) -> bool:
        task, n = point[0], point[1]
        made = self.made.get(task, 0)
        if len(point) == 2 or self.describe is None:
            return made >= n
        if made >= 4 * n + 1000:
            return True
        anchor, k = point[2], point[3]
        return self.describe(task) == anchor and self.seen.get((task, anchor), 0) + 1 >= k

    def choose(self, runnable: list[int], step: int) -> int:
        while self.pos < len(self.points):
            point = self.points[self.pos]
            if point[0] in runnable and not self._there(point):
                return self._run(point[0])
            self.pos += 1
        if self.rank is None:
            self.rank = list(reversed(self.recent))
        for task in runnable:
            if task not in self.rank:
                self.rank.append(task)  # never ran: after every task that did
        for task in self.rank:
            if task in runnable:
                return self._run(task)
        raise AssertionError("no runnable task")

    def _run(self, task: int) -> int:
        if task != self.current:
            if task in self.recent:
                self.recent.remove(task)
            self.recent.append(task)
        self.current = task
        self.made[task] = self.made.get(task, 0) + 1
        if self.describe is not None:
            key = (task, self.describe(task))
            self.seen[key] = self.seen.get(key, 0) + 1
        return task


class AnchorRecorder(Replay):
    """Replays `choices` exactly and records, at each switch, where the task left was."""

    def __init__(self, choices: list[int], describe: Callable[[int], str]) -> None:
        self.describe = describe
        super().__init__(choices)

    def new_execution(self) -> None:
        super().new_execution()
        self.seen: dict[tuple[int, str], int] = {}
        self.made: dict[int, int] = {}
        self.points: list[Point] = []
        self.prev: int | None = None

    def choose(self, runnable: list[int], step: int) -> int:
        t = super().choose(runnable, step)
        prev = self.prev
        if prev is not None and t != prev:
            self._close(prev, runnable)
        self.prev = t
        self.made[t] = self.made.get(t, 0) + 1
        key = (t, self.describe(t))
        self.seen[key] = self.seen.get(key, 0) + 1
        return t

    def _close(self, task: int, runnable: list[int]) -> None:
        n = self.made.get(task, 0)
        if task in runnable:
            anchor = self.describe(task)
            self.points.append((task, n, anchor, self.seen.get((task, anchor), 0) + 1))
        else:
            self.points.append((task, n))  # blocked or finished: the count says it

    def finish(self) -> list[Point]:
        """The points of the whole replay (call after the run)."""
        if self.prev is not None:
            self.points.append((self.prev, self.made[self.prev]))
            self.prev = None
        return self.points
