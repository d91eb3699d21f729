"""Scheduling: the only source of nondeterminism in a run.

`schedule` holds the printable schedule format; `strategies` the ways of
choosing the next task. The machine asks `Strategy.choose()` once per step.
"""

from emu.sched.schedule import RCU_TASK, ScheduleError, decode, encode, task_name
from emu.sched.strategies import RandomStrategy, Replay, ReplayDivergence, RoundRobin, Strategy

__all__ = ["RCU_TASK", "RandomStrategy", "Replay", "ReplayDivergence", "RoundRobin",
           "ScheduleError", "Strategy", "decode", "encode", "task_name"]
