"""The issue's acceptance runs (slow: `pytest -m slow tests/test_explore_slow.py`)."""

from __future__ import annotations

import pytest
from test_explore import BUG, WALKER

from emu.explore import ExploreConfig, explore, replay_report
from emu.sched import decode

pytestmark = pytest.mark.slow

# These runs found a model gap, since fixed: a fault racing zap_pte_range()'s
# PAE clear read low=0/high=NX and returned SIGSEGV instead of rechecking under
# the ptl (pte_unmap_same()); see tests/test_kernel_contracts.py.


@pytest.fixture(scope="module")
def walker(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("sc") / "walker_retract.toml"
    path.write_text(WALKER)
    return str(path)


def test_walker_use_after_free_found_by_pct_replayed_and_minimised(walker):
    res = explore(ExploreConfig(walker, variants=BUG, strategy="pct", schedules=1000))
    rep = res.report
    assert rep is not None and rep.kind == "use-after-free" and res.stats.schedules <= 1000
    assert rep.context_switches <= 4
    again = replay_report(res.config, decode(rep.schedule))
    assert (again.kind, again.step, again.message, again.lanes) == \
        (rep.kind, rep.step, rep.message, rep.lanes)


def test_walker_correct_code_clean_over_5000(walker):
    clean = explore(ExploreConfig(walker, strategy="pct", schedules=5000, jobs=2))
    assert clean.report is None and clean.stats.schedules == 5000


def test_retract_x86_pte_free_immediate_found_and_minimised():
    res = explore(ExploreConfig("retract_x86", variants=("pte_free_immediate",),
                                strategy="pct", schedules=1000))
    assert res.report is not None and res.report.kind == "use-after-free"
    assert res.report.context_switches <= 4


def test_retract_x86_correct_code_clean():
    clean = explore(ExploreConfig("retract_x86", strategy="pct", schedules=1000, jobs=2))
    assert clean.report is None


def test_exhaustive_torn_pae_counts_interleavings_finds_the_tear_and_proves_the_fix():
    bad = explore(ExploreConfig("torn_pae", variants=("plain_two_load_read",),
                                strategy="exhaustive", schedules=100_000))
    assert bad.report is not None and bad.report.kind == "torn-read"
    assert bad.stats.exhausted and bad.stats.failures > 0
    good = explore(ExploreConfig("torn_pae", strategy="exhaustive", schedules=100_000))
    assert good.report is None and good.stats.exhausted and good.stats.interleavings > 1000


def test_jobs_give_the_same_first_failure_on_a_longer_run(walker):
    cfgs = [ExploreConfig(walker, variants=BUG, strategy="random", seed=3, schedules=600,
                          minimize=False, jobs=j) for j in (1, 2)]
    one, two = (explore(c) for c in cfgs)
    assert one.failure == two.failure and one.stats.schedules == two.stats.schedules
