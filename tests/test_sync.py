"""The kernel model's synchronisation rules: spinlocks and RCU grace periods.

Spinlocks: a lock another CPU holds makes the taker wait; a CPU taking a
lock it already holds is a kernel bug (Linux spinlocks are not recursive:
it would spin forever). RCU: a callback queued while a grace period is in
progress must wait for the *next* one, since a reader may have begun after
the current one started (the classic rule in emu/kernel/sync.py).
"""

from __future__ import annotations

import pytest
from test_kernel_contracts import BASE, machine, pmd_of

from emu.kernel import steps as s
from emu.kernel.core import KernelBug
from emu.kernel.sync import Rcu, RcuCallback
from emu.testing import Interleaving


def test_a_spinlock_held_by_another_cpu_makes_the_taker_wait():
    m = machine()
    k = m.kernel
    lock = k.pmd_lockptr(m.mm, pmd_of(m), BASE)

    def hold():
        yield s.SpinLock(lock)
        yield s.SpinUnlock(lock)

    il = Interleaving(m)
    il.start(0, hold())
    il.run_until(0, lambda op: isinstance(op, s.SpinUnlock))
    il.start(1, hold())
    il.run_while_runnable(1)
    assert not il.tasks[1].done and "held by cpu0" in il.tasks[1].blocked_on()
    il.step(0)  # cpu0 unlocks: cpu1 may take it
    assert il.tasks[1].runnable()
    il.finish()
    assert lock.owner is None and not k.cpus[0].held and not k.cpus[1].held


def test_a_cpu_taking_a_spinlock_it_already_holds_is_a_kernel_bug():
    m = machine()
    k = m.kernel
    lock = k.pmd_lockptr(m.mm, pmd_of(m), BASE)

    def twice():
        yield s.SpinLock(lock)
        yield s.SpinLock(lock)

    il = Interleaving(m)
    il.start(0, twice())
    with pytest.raises(KernelBug, match="recursive spinlock"):
        il.finish()


def test_unlocking_a_spinlock_another_cpu_holds_is_a_kernel_bug():
    m = machine()
    k = m.kernel
    lock = k.pmd_lockptr(m.mm, pmd_of(m), BASE)
    il = Interleaving(m)

    def take():
        yield s.SpinLock(lock)
    il.start(0, take())
    il.finish()

    def unlock():
        yield s.SpinUnlock(lock)
    il.start(1, unlock())
    with pytest.raises(KernelBug, match="owned by cpu0"):
        il.finish()


def cb(rcu: Rcu, target: int, what: str, ran: list[str]) -> RcuCallback:
    return RcuCallback(target, lambda: ran.append(what), what, 0, 1)


def test_a_callback_queued_mid_grace_period_waits_for_the_next_one():
    """cpu1 queues A (grace period 1 starts); cpu0 passes a quiescent state
    and then enters a read-side section; cpu1 queues B. When cpu1's
    quiescent state ends grace period 1, A may run but B may not: cpu0's
    reader began before B was queued and has not finished."""
    online = [0, 1]
    rcu = Rcu(2)
    ran: list[str] = []
    g1 = rcu.request_gp(0, online)
    rcu.queue(cb(rcu, g1, "A", ran))
    assert rcu.gp_in_progress()
    rcu.quiescent(0, 1, online)  # cpu0 then starts a reader
    g2 = rcu.request_gp(2, online)
    assert g2 == g1 + 1, "a request made mid-grace-period waits for the next one"
    rcu.queue(cb(rcu, g2, "B", ran))
    rcu.quiescent(1, 3, online)  # grace period 1 ends; grace period 2 starts
    assert [c.what for c in rcu.ready_callbacks()] == ["A"]
    assert rcu.gp_in_progress(), "B's grace period starts on its own"
    rcu.quiescent(1, 4, online)  # cpu0 is still in its reader: no quiescent state
    assert [c.what for c in rcu.ready_callbacks()] == ["A"]
    rcu.quiescent(0, 5, online)  # the reader finished
    assert [c.what for c in rcu.ready_callbacks()] == ["A", "B"]
    assert not rcu.gp_in_progress()


def test_a_grace_period_with_nothing_waiting_ends_without_starting_another():
    online = [0, 1]
    rcu = Rcu(2)
    g = rcu.request_gp(0, online)
    rcu.quiescent(0, 1, online)
    assert rcu.gp_in_progress()
    rcu.quiescent(0, 2, online)  # a second quiescent state of the same CPU counts once
    assert rcu.gp_in_progress()
    rcu.quiescent(1, 3, online)
    assert not rcu.gp_in_progress() and rcu.completed == g


def test_a_grace_period_requested_by_the_only_online_cpu_ends_at_once_for_offline_ones():
    rcu = Rcu(2)
    g = rcu.request_gp(0, [0])
    assert rcu.gp_in_progress()
    rcu.offline(0, 1, [])
    assert rcu.completed == g


def test_an_rwsem_reader_waits_for_the_writer_and_says_who_holds_it():
    m = machine()
    sem = m.mm.mmap_lock

    def write_then_release():
        yield s.DownWrite(sem)
        yield s.UpWrite(sem)

    def read():
        yield s.DownRead(sem)
        yield s.UpRead(sem)

    il = Interleaving(m)
    il.start(0, write_then_release())
    il.step(0)  # cpu0 holds it for write
    assert sem.is_locked()
    il.start(1, read())
    il.run_while_runnable(1)
    assert not il.tasks[1].done
    assert "held by writer cpu0" in il.tasks[1].blocked_on()
    il.finish()
    assert not sem.is_locked()


def test_an_rwsem_writer_waits_for_readers_and_names_them():
    m = machine()
    sem = m.mm.mmap_lock

    def read_then_release():
        yield s.DownRead(sem)
        yield s.UpRead(sem)

    def write():
        yield s.DownWrite(sem)
        yield s.UpWrite(sem)

    il = Interleaving(m)
    il.start(0, read_then_release())
    il.step(0)
    assert sem.is_locked()  # by a reader alone
    il.start(1, write())
    il.run_while_runnable(1)
    assert "readers ['cpu0']" in il.tasks[1].blocked_on()
    il.finish()
    assert not sem.is_locked()


def test_a_spin_lock_step_says_whether_it_is_nested():
    from emu.kernel.sync import Spinlock
    from emu.trace import describe_op
    lock = Spinlock("ptl")
    assert describe_op(s.SpinLock(lock)) == "spin_lock(ptl)"
    assert describe_op(s.SpinLock(lock, nested=True)) == "spin_lock_nested(ptl)"


def test_a_grace_period_requested_with_no_cpu_online_ends_at_once():
    """Every vCPU has finished (offline): no CPU is left to pass a quiescent
    state, so a callback queued now (by an RCU callback, or at run end) must
    not wait forever."""
    from emu.kernel.sync import Rcu
    rcu = Rcu(2)
    target = rcu.request_gp(5, [])
    assert rcu.completed == target == 1 and not rcu.gp_in_progress()
