"""A run's schedule as a compact, printable, versioned string.

`pt1:` then run-length encoded task letters: CPUs are `a`..`p` (cpu0 =
`a`), the RCU callback task is `z`; a letter is followed by its repeat
count when that is more than one. `pt1:a12b3a` = cpu0 for 12 steps, cpu1
for 3, cpu0 for 1. The string is the choice sequence, so replaying it
reproduces the run exactly.
"""

from __future__ import annotations

import re

PREFIX = "pt1:"
RCU_TASK = 25  # task id of the RCU callback task ("z")
MAX_CPUS = 16

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


def decode(text: str) -> list[int]:
    text = text.strip()
    if not text.startswith(PREFIX):
        raise ScheduleError(f"schedule must start with {PREFIX!r} (got {text[:12]!r})")
    body = text[len(PREFIX):]
    choices: list[int] = []
    pos = 0
    for m in _TOKEN.finditer(body):
        if m.start() != pos:
            raise ScheduleError(f"bad schedule text at offset {pos + len(PREFIX)}: {body[pos:pos + 10]!r}")
        pos = m.end()
        task = ord(m.group(1)) - ord("a")
        if task >= MAX_CPUS and task != RCU_TASK:
            raise ScheduleError(f"unknown task letter {m.group(1)!r} in schedule")
        count = int(m.group(2)) if m.group(2) else 1
        if count < 1:
            raise ScheduleError("repeat count 0 in schedule")
        choices.extend([task] * count)
    if pos != len(body):
        raise ScheduleError(f"bad schedule text at offset {pos + len(PREFIX)}: {body[pos:pos + 10]!r}")
    return choices


def context_switches(choices: list[int]) -> int:
    return sum(1 for a, b in zip(choices, choices[1:], strict=False) if a != b)
