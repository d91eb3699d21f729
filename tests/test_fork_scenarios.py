"""The shipped fork / COW scenarios: clean with the correct model, each variant caught.

Bounded runs (the 2,000-schedule figures are in docs/variants.md and the README's
results table): PCT with the scenario's seed 0, which finds each variant well
inside the budgets below.
"""

from __future__ import annotations

import pytest

from emu.explore import ExploreConfig, explore


@pytest.mark.parametrize("name,arch", [("fork_cow_retract", "s390"), ("fork_pin", "s390"),
                                       ("retract_uffd_private", "x86-pae")])
def test_shipped_fork_scenarios_are_clean(name, arch):
    res = explore(ExploreConfig(name, arch=arch, strategy="pct", depth=3, schedules=25,
                                minimize=False))
    assert res.report is None, res.report and res.report.message


@pytest.mark.parametrize("name,arch,variant,kind", [
    ("fork_pin", "s390", "fork_no_write_protect_seq", "gup-pin"),
    ("fork_pin", "x86-pae", "fork_shares_pinned_pages", "gup-pin"),
    ("retract_uffd_private", "x86-pae", "retract_no_anon_vma_recheck", "accounting"),
])
def test_shipped_fork_variants_are_caught(name, arch, variant, kind):
    res = explore(ExploreConfig(name, arch=arch, strategy="pct", depth=2, schedules=200,
                                variants=(variant,), minimize=False))
    assert res.report is not None and res.report.kind == kind, res.report
