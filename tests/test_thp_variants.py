"""The anon THP variants: each caught on its shipped scenario, which is clean on the correct model.

Budgets here are small (the acceptance runs, 2,000 PCT schedules at depth 2 and
3, are in docs/variants.md); the first hits are where PCT's seed 0 finds them.
"""

from __future__ import annotations

import pytest

from arch import get_arch
from emu.explore import ExploreConfig, explore
from emu.kernel.variants import known_variants

CAUGHT = [
    ("thp_collapse_gup", "s390", "collapse_no_gup_fast_sync", 350),
    ("thp_collapse_gup", "x86-pae", "zap_huge_pmd_no_withdraw", 5),
    ("thp_collapse_gup", "sparc64", "zap_huge_pmd_no_withdraw", 5),
    ("thp_split_walker", "s390", "split_populate_before_ptes", 50),
    ("thp_split_walker", "powerpc", "split_populate_before_ptes", 100),
    ("thp_mremap", "x86-pae", "move_huge_pmd_no_deposit_move", 5),
    ("thp_mremap_hash", None, "move_huge_pmd_no_deposit_move", 5),
]


@pytest.mark.parametrize(("scenario", "arch", "variant", "budget"), CAUGHT,
                         ids=[f"{v}@{s}@{a}" for s, a, v, _b in CAUGHT])
def test_variant_is_caught(scenario, arch, variant, budget):
    res = explore(ExploreConfig(scenario, arch=arch, strategy="pct", depth=3, schedules=budget,
                                variants=(variant,), minimize=False))
    assert res.report is not None, f"{variant} not caught on {scenario}@{arch} in {budget}"


@pytest.mark.parametrize("scenario", ["thp_collapse_gup", "thp_split_walker", "thp_mremap"])
@pytest.mark.parametrize("arch", ["x86-pae", "s390"])
def test_shipped_thp_scenarios_are_clean(scenario, arch):
    res = explore(ExploreConfig(scenario, arch=arch, strategy="pct", depth=3, schedules=25))
    assert res.report is None, res.report and res.report.message


def test_where_the_gup_sync_variant_cannot_show():
    """ppc hash's pmdp_collapse_flush IPIs by itself and sparc64's flush is an IPI: the
    missing sync changes nothing there; arm has no THP at all."""
    v = known_variants()["collapse_no_gup_fast_sync"]
    assert v.not_applicable(get_arch("x86-pae")) is None
    assert v.not_applicable(get_arch("s390")) is None
    assert "IPI" in v.not_applicable(get_arch("sparc64"))
    assert "serialize" in v.not_applicable(get_arch("powerpc", mmu="hash"))
    assert "no THP" in v.not_applicable(get_arch("arm"))


def test_mremap_on_hash_is_clean():
    res = explore(ExploreConfig("thp_mremap_hash", strategy="pct", depth=3, schedules=15))
    assert res.report is None, res.report and res.report.message


def test_collapse_huge_page_may_sync_after_dropping_the_pmd_lock():
    """Regression: lockless-sync reported the correct model on thp_collapse_gup (x86-pae,
    PCT depth 2, schedule #224): collapse_huge_page() drops pmd_lock before its
    tlb_remove_table_sync_one(), as Linux does; under mmap_write_lock nobody else can
    install into the cleared pmd, so the sync is due before collapse's own set_pmd_at."""
    from emu.api import replay
    out = replay("thp_collapse_gup", "pt1:b98a637", arch="x86-pae")
    assert out.report is None, out.report and out.report.message
