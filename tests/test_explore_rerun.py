"""A schedule gives the same trace whenever an exploring machine runs it.

`--jobs` hands each worker its own ExploreMachine and its own share of the
schedule indices, so a schedule may be a worker's first run after
snapshot() or its hundredth: its trace and memory must not depend on which.
"""

from __future__ import annotations

import pytest

from emu.explore import ExploreConfig, build_machine, pct_k, strategy_for

SCENARIOS = ["torn_pae", "retract_x86", "torn_pmd_highpte", "retract_two_procs",
             "secondary_collapse", "frag_defer_powerpc", "s390_halves"]


@pytest.mark.parametrize("name", SCENARIOS)
def test_a_schedule_run_first_and_run_again_gives_the_same_trace(name):
    cfg = ExploreConfig(name)
    k = pct_k(cfg, build_machine(cfg))  # on another machine: run(3) below is m's first
    m = build_machine(cfg, trace=True)
    m.digests = True

    def run(i: int) -> tuple[str, str, str, int]:
        m.reset()
        r = m.run(strategy_for(cfg, i, k), max_steps=cfg.max_steps)
        return r.schedule, r.trace_digest, r.memory_digest, r.steps

    first = run(3)
    for i in range(4):
        run(i)
    assert run(3) == first
