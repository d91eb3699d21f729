"""A run's schedule as a compact, printable, versioned string.

`pt1:` then run-length encoded task letters: CPUs are `a`..`p` (cpu0 =
`a`), the RCU callback task is `z`; a letter is followed by its repeat
count when that is more than one. `pt1:a12b3a` = cpu0 for 12 steps, cpu1
for 3, cpu0 for 1. The string is the choice sequence, so replaying it
reproduces the run exactly.

`decode` keeps the runs as (task, count) pairs and expands them only as
they are read (`Choices`), so `pt1:a30000000` costs a few bytes, not half a
gigabyte; the total length is capped at `MAX_SCHEDULE_STEPS`.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterator, Sequence

PREFIX = "pt1:"
RCU_TASK = 25  # task id of the RCU callback task ("z")
MAX_CPUS = 16
# far beyond any run's step limit, and small enough that the length of a
# decoded schedule is an ordinary int: a longer string is a typo or an attack
MAX_SCHEDULE_STEPS = 1 << 32

_TOKEN = re.compile(r"([a-z])(\d*)")


class ScheduleError(ValueError):
    pass


def task_letter(task: int) -> str:
    return chr(ord("a") + task)


def task_name(task: int) -> str:
    return "rcu" if task == RCU_TASK else f"cpu{task}"


def encode(choices: list[int]) -> str:
    out = [PREFIX]
    i = 0
    n = len(choices)
    while i < n:
        j = i
        while j < n and choices[j] == choices[i]:
            j += 1
        out.append(task_letter(choices[i]))
        if j - i > 1:
            out.append(str(j - i))
        i = j
    return "".join(out)


class Choices(Sequence[int]):
    """A decoded schedule: the task of every step, stored as runs, expanded on read."""

    def __init__(self, runs: list[tuple[int, int]]) -> None:
        self.runs = runs
        self.starts: list[int] = []  # step index at which each run begins
        n = 0
        for _, count in runs:
            self.starts.append(n)
            n += count
        self.length = n
        self._hint = 0  # the run of the last lookup: replay reads in order

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i):  # noqa: ANN001, ANN204 - int or slice, as Sequence
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(self.length))]
        if i < 0:
            i += self.length
        if not 0 <= i < self.length:
            raise IndexError(i)
        h = self._hint
        if not (self.starts[h] <= i < self.starts[h] + self.runs[h][1]):
            h = bisect_right(self.starts, i) - 1
            self._hint = h
        return self.runs[h][0]

    def __iter__(self) -> Iterator[int]:
        for task, count in self.runs:
            for _ in range(count):
                yield task

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Choices):
            return self.runs == other.runs
        if isinstance(other, Sequence):
            return len(other) == self.length and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment] - mutable-looking, like a list

    def __repr__(self) -> str:
        return f"Choices({encode_runs(self.runs)!r})"


def encode_runs(runs: list[tuple[int, int]]) -> str:
    return PREFIX + "".join(task_letter(t) + (str(c) if c > 1 else "") for t, c in runs)


def decode(text: str) -> Choices:
    if not isinstance(text, str):
        raise ScheduleError(f"a schedule is a string pt1:..., got {type(text).__name__}")
    text = text.strip()
    if not text.startswith(PREFIX):
        raise ScheduleError(f"schedule must start with {PREFIX!r} (got {text[:12]!r})")
    body = text[len(PREFIX):]
    runs: list[tuple[int, int]] = []
    total = 0
    pos = 0
    for m in _TOKEN.finditer(body):
        if m.start() != pos:
            raise ScheduleError(f"bad schedule text at offset {pos + len(PREFIX)}: {body[pos:pos + 10]!r}")
        pos = m.end()
        task = ord(m.group(1)) - ord("a")
        if task >= MAX_CPUS and task != RCU_TASK:
            raise ScheduleError(f"unknown task letter {m.group(1)!r} in schedule")
        digits = m.group(2)
        if len(digits) > len(str(MAX_SCHEDULE_STEPS)):
            raise ScheduleError(f"repeat count {digits[:12]}... at offset {m.start(2) + len(PREFIX)} "
                                f"is beyond the cap of {MAX_SCHEDULE_STEPS} steps")
        count = int(digits) if digits else 1
        if count < 1:
            raise ScheduleError("repeat count 0 in schedule")
        total += count
        if total > MAX_SCHEDULE_STEPS:
            raise ScheduleError(f"schedule is longer than the cap of {MAX_SCHEDULE_STEPS} steps")
        if runs and runs[-1][0] == task:
            runs[-1] = (task, runs[-1][1] + count)
        else:
            runs.append((task, count))
    if pos != len(body):
        raise ScheduleError(f"bad schedule text at offset {pos + len(PREFIX)}: {body[pos:pos + 10]!r}")
    return Choices(runs)


def context_switches(choices: Sequence[int]) -> int:
    if isinstance(choices, Choices):
        return max(0, len(choices.runs) - 1)
    return sum(1 for a, b in zip(choices, choices[1:], strict=False) if a != b)
