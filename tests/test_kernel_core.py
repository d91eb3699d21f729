"""KernelCore's per-CPU state and the release it follows: what counts as an
RCU reader, when an IPI is taken, and the scenario's version reaching the
routines that test it."""

from __future__ import annotations

import pytest

from emu.kernel.core import CpuKernelState
from emu.kernel.sync import Spinlock
from emu.kernel.version import NEWEST

TOML = """
[machine]
arch = "x86-pae"
cpus = 1
memory_mib = 32
{kernel}
[[cpu]]
program = "touch"
args = [0x10000000, 1, 4096]
"""


@pytest.mark.parametrize("field", ["rcu_nesting", "irq_off", "lock"])
def test_each_protection_alone_makes_a_cpu_an_rcu_reader(field):
    st = CpuKernelState(0)
    assert not st.in_read_side() and st.preempt_count == 0
    if field == "lock":
        st.held.append(Spinlock("ptl"))  # a spinlock disables preemption
        assert st.preempt_count == 1
    else:
        setattr(st, field, 1)
    assert st.in_read_side()


def test_an_ipi_waits_for_irqs_on_and_an_instruction_boundary():
    st = CpuKernelState(0)
    assert st.takes_ipi()
    st.irq_off = 1
    assert not st.takes_ipi()
    st.irq_off, st.in_walk = 0, True
    assert not st.takes_ipi()


def test_a_reader_is_protected_since_its_earliest_protection():
    st = CpuKernelState(0)
    assert st.reader_since() is None
    st.irq_off_step, st.rcu_start_step = 7, 3
    assert st.reader_since() == 3


@pytest.mark.parametrize("version, want", [("", NEWEST), ('version = "6.6"', (6, 6)),
                                           ('version = "6.13"', (6, 13))])
def test_the_scenario_release_is_the_kernel_release(machine_from, version, want):
    kernel = f"[kernel]\n{version}\n" if version else ""
    assert machine_from(TOML.format(kernel=kernel)).kernel.version == want
