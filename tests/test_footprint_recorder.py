"""FootprintRecorder's keys, step by step: what each memory access, kernel step
and CPU mode change puts in a step's footprint (emu/sched/footprint.py's
table), checked directly on a machine without running a search."""

from __future__ import annotations

import textwrap

import pytest

from emu import scenario
from emu.cpu import Mode
from emu.explore_machine import ExploreMachine
from emu.kernel import steps as s
from emu.kernel.sync import RwSem, Spinlock
from emu.sched.footprint import ALL, FootprintRecorder
from emu.sched.schedule import RCU_TASK

TEXT = """
[machine]
arch = "x86-pae"
cpus = 2
memory_mib = 32
[[cpu]]
program = "touch"
args = [0x10000000, 1, 4096]
[[cpu]]
program = "touch"
args = [0x10000000, 1, 4096]
"""


def recorder(mode: str = "frames") -> tuple[ExploreMachine, FootprintRecorder]:
    m = ExploreMachine(scenario.parse(textwrap.dedent(TEXT), "<fp>"), trace=False, checkers=[])
    rec = FootprintRecorder(mode)
    rec.attach(m)
    return m, rec


def kernel_step(m, rec, cpu=0, ops=(), log=()):
    """The footprint of one step of cpu's kernel routine making `ops` and `log`."""
    m.cpus[cpu].mode = Mode.KERNEL
    rec.begin(cpu)
    for op in ops:
        rec.on_kernel_step(cpu, op)
    rec.log.extend(log)
    return rec.take()


FS = 12  # x86-PAE frames are 4 KiB


@pytest.mark.parametrize("log, want", [
    ([("r", 0x5008, 8)], {("e", 0x5008 >> 3): "r", ("f", 5): "r"}),
    ([("w", 0x5008, 8)], {("e", 0x5008 >> 3): "w", ("f", 5): "r", ("fw", 5): "c"}),
    ([("r", 0x5004, 8)], {("e", 0x5000 >> 3): "r", ("e", 0x5008 >> 3): "r", ("f", 5): "r"}),
    ([("r", 0x5ffc, 8)], {("e", 0x5ff8 >> 3): "r", ("e", 0x6000 >> 3): "r", ("f", 5): "r",
                          ("f", 6): "r"}),
    ([("r", 0x5ff8, 8)], {("e", 0x5ff8 >> 3): "r", ("f", 5): "r"}),  # ends at the frame's end
    ([("r", 0x6000, 1)], {("e", 0x6000 >> 3): "r", ("f", 6): "r"}),
    ([("r", 0x5fc0, 65)], {("f", 5): "r", ("fw", 5): "r", ("f", 6): "r", ("fw", 6): "r"}),
    ([("r", 0x5000, 64)], {**{("e", (0x5000 >> 3) + i): "r" for i in range(8)}, ("f", 5): "r"}),
    ([("r", 0x5000, 65)], {("f", 5): "r", ("fw", 5): "r"}),
    ([("r", 0x5000, 4096)], {("f", 5): "r", ("fw", 5): "r"}),
    ([("w", 0x5000, 8192)], {("f", 5): "w", ("f", 6): "w"}),
    ([("meta", 7, 0)], {("f", 7): "r"}),
    ([("alloc", 7, 2)], {("f", 7): "w", ("fw", 7): "w", ("f", 8): "w", ("fw", 8): "w",
                         ("alloc",): "w"}),
    ([("free", 7, 1)], {("f", 7): "w", ("fw", 7): "w"}),
    ([("r", 0x5008, 8), ("w", 0x5008, 8)], {("e", 0x5008 >> 3): "w", ("f", 5): "r",
                                            ("fw", 5): "c"}),
])
def test_memory_accesses_become_word_and_frame_keys(log, want):
    m, rec = recorder()
    assert m.mem.frame_shift == FS
    assert kernel_step(m, rec, log=log) == want


@pytest.mark.parametrize("op, want", [
    (s.SpinLock(Spinlock("ptl")), {("lock", "ptl"): "w"}),
    (s.SpinUnlock(Spinlock("ptl")), {}),
    (s.DownRead(RwSem("mmap")), {("sem", "mmap"): "c"}),
    (s.DownWrite(RwSem("mmap")), {("sem", "mmap"): "w"}),
    (s.UpRead(RwSem("mmap")), {}),
    (s.IrqDisable(), {("irq", 0): "w"}),
    (s.IrqEnable(), {}),
    (s.RcuReadLock(), {("rcur", 0): "w"}),
    (s.RcuReadUnlock(), {("rcur", 0): "w"}),
    (s.TlbFlushRange(0, 4096), {("irq", 1): "r", ("tlb", 0): "w", ("tlb", 1): "w"}),
    (s.TlbRemoveTableSyncOne(), {("irq", 1): "r"}),
    (s.Load(0x5000, 8, "x"), {}),
    (s.CallRcu(lambda: None, "cb"), {("rcu",): "w", ("kpy",): "w"}),
])
def test_kernel_steps_become_lock_irq_rcu_and_tlb_keys(op, want):
    m, rec = recorder()
    assert kernel_step(m, rec, ops=[op]) == want


def test_coarse_mode_orders_every_kernel_step_and_none_mode_everything():
    m, rec = recorder("coarse")
    assert kernel_step(m, rec) == {("kpy",): "w"}
    m, rec = recorder("none")
    assert kernel_step(m, rec, log=[("r", 0x5000, 8)]) == ALL


def test_coarse_mode_writes_kernel_state_on_entry_return_and_traps():
    m, rec = recorder("coarse")
    cpu = m.cpus[0]
    cpu.mode = Mode.GUEST
    rec.begin(0)
    cpu.mode = Mode.KERNEL  # a hypercall entered the kernel
    cpu.task = object()
    assert rec.take()[("kpy",)] == "w"
    m, rec = recorder("coarse")
    m.cpus[0].mode = Mode.GUEST
    rec.begin(0)
    m.trapped = True
    assert rec.take()[("kpy",)] == "w"
    m, rec = recorder("coarse")  # a user instruction that stays in user mode: no kernel state
    m.cpus[0].mode = Mode.GUEST
    rec.begin(0)
    assert rec.take() == {("tlb", 0): "r", ("rcu",): "c"}
    m, rec = recorder("frames")  # the default mode trusts the model's contract
    m.cpus[0].mode = Mode.GUEST
    rec.begin(0)
    m.cpus[0].mode = Mode.KERNEL
    assert ("kpy",) not in rec.take()


def test_guest_and_walk_steps_touch_the_tlb_irq_and_rcu_keys():
    m, rec = recorder()
    cpu = m.cpus[1]
    cpu.mode = Mode.GUEST
    rec.begin(1)
    assert rec.take() == {("tlb", 1): "r", ("rcu",): "c"}  # a user instruction: a QS
    rec.begin(1)
    m.trapped = True
    assert rec.take() == {("tlb", 1): "r"}  # trapped: no quiescent state
    rec.begin(1)
    cpu.mode = Mode.WALK  # a walk started: IPIs wait for it
    assert rec.take() == {("tlb", 1): "r", ("irq", 1): "w"}
    rec.begin(1)
    cpu.mode = Mode.GUEST  # the walk ended (filling the TLB)
    assert rec.take() == {("tlb", 1): "w"}
    rec.begin(1)
    cpu.mode = Mode.DONE  # offline: a quiescent state for good
    assert rec.take() == {("tlb", 1): "r", ("rcu",): "c"}


def test_a_grace_period_change_is_an_rcu_update_and_the_rcu_task_writes_rcu_and_kernel_state():
    m, rec = recorder()
    rec.begin(RCU_TASK)
    assert rec.take() == {("kpy",): "w", ("rcu",): "w"}
    m.cpus[0].mode = Mode.KERNEL
    rec.begin(0)
    m.kernel.rcu.completed += 1  # a grace period ended during the step
    assert rec.take() == {("rcu",): "c"}


def test_begin_starts_a_fresh_footprint_and_the_run_end_footprint_is_kept():
    m, rec = recorder()
    assert kernel_step(m, rec, ops=[s.IrqDisable()]) == {("irq", 0): "w"}
    assert kernel_step(m, rec, ops=[s.RcuReadLock()]) == {("rcur", 0): "w"}
    assert m.mem.log is rec.log
    rec.begin(0)
    rec.on_kernel_step(0, s.SpinLock(Spinlock("ptl")))
    rec.on_run_end()  # closes the last step before end-of-run checkers read memory
    assert m.mem.log is None
    rec.log.append(("r", 0x5000, 8))  # what an audit reads afterwards is not the step's
    assert rec.take() == {("lock", "ptl"): "w"}
    rec.begin(0)
    assert rec.take() == {}
    rec.detach()
    assert m.mem.log is None


def test_a_guest_step_makes_unicorn_forget_its_cached_translations():
    m, rec = recorder()
    cpu = m.cpus[0]
    cpu.mode = Mode.GUEST
    flushed = []
    cpu.flush_uc_tlb = lambda: flushed.append(True)
    rec.begin(0)
    assert flushed == [True]
    cpu.mode = Mode.KERNEL
    rec.begin(0)
    assert flushed == [True]
