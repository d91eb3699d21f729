"""A deadlock found by exploration and reported, with a test-local hypercall.

Service 200 (registered here, test-only) takes two spinlocks in the order
its argument says. Two vCPUs taking them in opposite orders (ABBA) deadlock
under some schedules; taking them in the same order never does.
"""

from __future__ import annotations

import textwrap

from emu.explore import ExploreConfig, explore
from emu.hypercall import HYPERCALLS, hypercall
from emu.kernel import steps as s

NR = 200


def _abba(m, cpu, order: int):  # noqa: ANN001
    """test_abba(order): take test locks A and B, in that order if 0, else B then A."""
    k = m.kernel
    # lock_for() keeps the locks in kernel state, which reset() restores
    a, b = k.lock_for(-1, "test lock A"), k.lock_for(-2, "test lock B")
    first, second = (a, b) if order == 0 else (b, a)

    def routine():
        yield s.SpinLock(first)
        yield s.SpinLock(second)
        yield s.SpinUnlock(second)
        yield s.SpinUnlock(first)
        return 0
    return routine()


if NR not in HYPERCALLS:
    hypercall(NR, "test_abba", 1)(_abba)


def scenario(tmp_path, orders) -> str:
    cpus = "".join(f"""
    [[cpu]]
    program = "hypercall"
    args = [{NR}, {o}]
    """ for o in orders)
    text = f"""
    [machine]
    arch = "x86-pae"
    cpus = 2
    memory_mib = 8
    {cpus}
    """
    path = tmp_path / f"abba{''.join(map(str, orders))}.toml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_abba_deadlock_is_found_reported_and_minimised(tmp_path):
    res = explore(ExploreConfig(scenario(tmp_path, (0, 1)), strategy="random", schedules=200))
    rep = res.report
    assert rep is not None and rep.kind == "deadlock"
    assert "test lock A" in rep.message and "test lock B" in rep.message
    assert "held by cpu" in rep.message
    assert rep.context_switches <= 3
    assert any("spin_lock(test lock" in line for line in rep.lanes["cpu0"])


def test_same_order_never_deadlocks(tmp_path):
    res = explore(ExploreConfig(scenario(tmp_path, (0, 0)), strategy="exhaustive",
                                schedules=10_000))
    assert res.report is None and res.stats.exhausted
    assert res.stats.interleavings >= 2
