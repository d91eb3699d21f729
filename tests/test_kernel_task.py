"""KernelTask's contract: while a CPU's routine advances or performs a step,
`kernel.cpu` is that CPU (frame histories and per-CPU state are charged to
it), and afterwards it is what it was (an RCU callback run between steps is
not charged to whichever CPU stepped last)."""

from __future__ import annotations

import pytest

from emu.kernel import steps as s
from emu.kernel.task import KernelTask

TOML = """
[machine]
arch = "x86-pae"
cpus = 2
memory_mib = 32

[[cpu]]
program = "touch"
args = [0x10000000, 1, 4096]
"""


def test_kernel_cpu_is_the_stepping_cpu_and_is_restored_after(machine_from):
    k = machine_from(TOML).kernel
    k.cpu = 0
    seen = []

    def routine():
        seen.append(k.cpu)
        yield s.RcuReadLock()
        seen.append(k.cpu)
        yield s.RcuReadUnlock()
        seen.append(k.cpu)

    t = KernelTask(k, 1, routine(), "t")
    assert k.cpu == 0 and seen == [1]
    t.step()
    assert k.cpu == 0 and k.cpus[1].rcu_nesting == 1 and k.cpus[0].rcu_nesting == 0
    t.step()
    assert t.done and k.cpu == 0 and seen == [1, 1, 1]


def test_a_step_is_performed_as_its_cpu_and_returned_and_remembered(machine_from):
    k = machine_from(TOML).kernel
    k.cpu = 0
    during = []
    op = s.KernelAtomic(lambda: during.append(k.cpu) or 5, "atomic")
    got = []

    def routine():
        got.append((yield op))

    t = KernelTask(k, 1, routine(), "t")
    assert t.step() is op and t.last_op is op
    assert during == [1] and got == [5] and k.cpu == 0 and t.done


def test_run_to_completion_allows_max_steps_and_stops_a_routine_past_them(machine_from):
    k = machine_from(TOML).kernel

    def steps(n):
        for _ in range(n):
            yield s.RcuReadLock()
            yield s.RcuReadUnlock()
        return "done"

    assert KernelTask(k, 0, steps(2), "t").run_to_completion(max_steps=4) == "done"
    with pytest.raises(RuntimeError, match="did not finish in 3 steps"):
        KernelTask(k, 0, steps(2), "t").run_to_completion(max_steps=3)
