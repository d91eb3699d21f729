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


def _perform_at(k, step, cpu, op):
    k.step = step
    return k.perform(cpu, op)


@pytest.mark.parametrize("enter, leave, field", [
    ("RcuReadLock", "RcuReadUnlock", "rcu_start_step"),
    ("IrqDisable", "IrqEnable", "irq_off_step"),
])
def test_the_outermost_protection_step_is_kept_until_the_last_exit(machine_from, enter, leave,
                                                                   field):
    """reader_since() (the use-after-free report's "protected since step N")
    is the step of the outermost rcu_read_lock / local_irq_save, through nesting."""
    from emu.kernel import steps as s
    k = machine_from(TOML.format(kernel="")).kernel
    st = k.cpus[0]
    _perform_at(k, 5, 0, getattr(s, enter)())
    _perform_at(k, 9, 0, getattr(s, enter)())  # nested: the section still began at 5
    assert getattr(st, field) == 5 and st.reader_since() == 5
    _perform_at(k, 11, 0, getattr(s, leave)())
    assert getattr(st, field) == 5 and st.in_read_side()
    _perform_at(k, 12, 0, getattr(s, leave)())
    assert getattr(st, field) is None and st.reader_since() is None and not st.in_read_side()
    _perform_at(k, 20, 0, getattr(s, enter)())  # a new section: a new start
    assert st.reader_since() == 20


@pytest.mark.parametrize("op", ["RcuReadUnlock", "IrqEnable"])
def test_leaving_a_protection_never_entered_is_a_kernel_bug(machine_from, op):
    from emu.kernel import steps as s
    from emu.kernel.core import KernelBug
    k = machine_from(TOML.format(kernel="")).kernel
    with pytest.raises(KernelBug):
        _perform_at(k, 1, 0, getattr(s, op)())
    st = k.cpus[0]
    assert st.rcu_nesting == 0 and st.irq_off == 0


class _Recorder:
    def __init__(self):
        self.events = []

    def on_kernel_load(self, cpu, op, value):
        self.events.append(("load", cpu, op.pa, value))

    def on_kernel_store(self, cpu, pa, size, value, what):
        self.events.append(("store", cpu, pa, value))


def test_atomics_return_what_they_found_store_only_on_success_and_tell_the_hooks(machine_from):
    """Cmpxchg stores only when it finds `old`; Xchg always; both report the
    load, and the store they make, to the checkers."""
    from emu.kernel import steps as s
    m = machine_from(TOML.format(kernel=""))
    k = m.kernel
    pa = m.frames.alloc("atomics", 0)
    rec = _Recorder()
    k.hooks = rec
    bo = m.arch.byteorder
    m.mem.write_int(pa, 8, 5, bo)
    assert _perform_at(k, 1, 0, s.Cmpxchg(pa, 8, 4, 9, "miss")) == 5
    assert m.mem.read_int(pa, 8, bo) == 5 and rec.events == [("load", 0, pa, 5)]
    rec.events.clear()
    assert _perform_at(k, 2, 0, s.Cmpxchg(pa, 8, 5, 9, "hit")) == 5
    assert m.mem.read_int(pa, 8, bo) == 9
    assert rec.events == [("load", 0, pa, 5), ("store", 0, pa, 9)]
    rec.events.clear()
    assert _perform_at(k, 3, 0, s.Xchg(pa, 8, 3, "xchg")) == 9
    assert m.mem.read_int(pa, 8, bo) == 3
    assert rec.events == [("load", 0, pa, 9), ("store", 0, pa, 3)]
    rec.events.clear()
    assert _perform_at(k, 4, 0, s.Store(pa, 8, 7, "store")) is None
    assert m.mem.read_int(pa, 8, bo) == 7 and rec.events == [("store", 0, pa, 7)]


TWO = """
[machine]
arch = "{arch}"
cpus = 2
memory_mib = 32
[[cpu]]
program = "touch"
args = [0x10000000, 1, 4096]
[[cpu]]
program = "touch"
args = [0x10000000, 1, 4096]
"""


def test_synchronize_rcu_waits_for_the_grace_period_it_requested(machine_from):
    from emu.kernel import steps as s
    k = machine_from(TWO.format(arch="x86-pae")).kernel
    assert k.ready(0, s.SynchronizeRcu())
    wait = _perform_at(k, 1, 0, s.SynchronizeRcu())
    assert wait.target == k.rcu.current == 1 and k.rcu.gp_in_progress()
    assert not k.ready(0, wait)
    assert k.blocked_on(0, wait) == "synchronize_rcu waiting for grace period 1"
    k.rcu.quiescent(0, 2, k.online_cpus())
    assert not k.ready(0, wait)  # cpu1 has not passed a quiescent state yet
    k.rcu.quiescent(1, 3, k.online_cpus())
    assert k.rcu.completed == 1 and k.ready(0, wait)
    assert _perform_at(k, 4, 0, wait) is None


def test_rcu_barrier_waits_for_every_queued_callback(machine_from):
    from emu.kernel import steps as s
    k = machine_from(TWO.format(arch="x86-pae")).kernel
    ran = []
    assert k.ready(0, s.RcuBarrier())
    _perform_at(k, 1, 1, s.CallRcu(lambda: ran.append(1), "cb"))
    assert not k.ready(0, s.RcuBarrier())
    assert k.blocked_on(0, s.RcuBarrier()) == "rcu_barrier waiting for 1 callbacks"
    assert k.run_one_rcu_callback() is None  # its grace period has not ended
    for cpu in (0, 1):
        k.rcu.quiescent(cpu, 2, k.online_cpus())
    assert k.run_one_rcu_callback() == "cb" and ran == [1]
    assert k.ready(0, s.RcuBarrier()) and _perform_at(k, 3, 0, s.RcuBarrier()) is None


def test_an_ipi_flush_waits_for_online_cpus_with_irqs_off_but_not_for_its_sender(machine_from):
    from emu.kernel import steps as s
    k = machine_from(TWO.format(arch="sparc64")).kernel  # flush_tlb_range() by IPI
    flush = s.TlbFlushRange(0, 4096)
    k.cpus[0].irq_off = 1  # the sender's own IRQs do not matter
    assert k.ready(0, flush) and k.ready(0, s.TlbRemoveTableSyncOne())
    k.cpus[1].irq_off = 1
    assert not k.ready(0, flush) and not k.ready(0, s.TlbRemoveTableSyncOne())
    assert k.blocked_on(0, flush) == "TlbFlushRange IPI waiting for IRQs on at cpu1"
    k.cpus[1].online = False  # an offline CPU takes no IPI and is not waited for
    assert k.ready(0, flush)
    k.cpus[1].online, k.cpus[1].irq_off = True, 0
    assert k.ready(0, flush)


def test_a_flush_by_broadcast_never_waits(machine_from):
    from emu.kernel import steps as s
    k = machine_from(TWO.format(arch="s390")).kernel
    k.cpus[1].irq_off = 1
    assert k.ready(0, s.TlbFlushRange(0, 4096))
    assert not k.ready(0, s.TlbRemoveTableSyncOne())  # the IPI still waits
