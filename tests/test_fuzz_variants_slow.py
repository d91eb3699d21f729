"""Issue 9 s1 acceptance as a test (slow: `pytest -m slow tests/test_fuzz_variants_slow.py`).

`ptemu fuzz --variant V --arch A` finds every built-in variant on every fuzz
target the registry says it applies to, within the budget the README quotes
(50 workloads x 100 schedules, seed 1), and where it does not apply says so.
The figures of these runs are README's "Fuzzing: variants found" table
(`python tools/variant_hits.py`).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from emu.fuzz import FuzzConfig, fuzz, not_applicable
from emu.fuzz_gen import TARGETS, targets_for
from emu.kernel.variants import known_variants

pytestmark = pytest.mark.slow

WORKLOADS, SCHEDULES, SEED = 50, 100, 1

# one run per (variant, arch): `--arch powerpc` is radix and hash in turn, `--arch
# s390` halves and full-page, each target getting WORKLOADS of its own
RUNS: dict[tuple[str, str], list[str]] = {}
for _v in sorted(known_variants()):
    for _t in TARGETS:
        if not not_applicable(FuzzConfig(variants=(_v,)), _t):
            RUNS.setdefault((_v, _t.arch), []).append(_t.label)


@pytest.mark.parametrize(("variant", "arch"), list(RUNS), ids=[f"{v}@{a}" for v, a in RUNS])
def test_fuzz_finds_each_variant_where_it_applies(variant, arch):
    per = len(targets_for(arch))
    res = fuzz(FuzzConfig(arch=arch, workloads=WORKLOADS * per, schedules=SCHEDULES, seed=SEED,
                          jobs=2, variants=(variant,)))
    for label in RUNS[variant, arch]:
        s = res.targets[label]
        assert not s.not_applicable
        assert s.first_hit is not None, (
            f"{variant} not found on {label} in {s.workloads} workloads / {s.schedules} schedules")
        hit = next(o for o in res.outcomes if o.kind and o.label == label)
        # the hit is the variant's: the same workload ran clean on the correct model
        assert hit.baseline_schedules == SCHEDULES and not hit.error


def test_first_hit_does_not_depend_on_jobs():
    """Variant mode stops each target at its first hit: which workloads ran and
    the figures are the same whichever worker finished first."""
    cfg = FuzzConfig(arch="x86-pae", workloads=WORKLOADS, schedules=SCHEDULES, seed=SEED,
                     variants=("no_pmd_same_recheck",))
    one, two = fuzz(cfg), fuzz(replace(cfg, jobs=2))
    assert one.targets["x86-pae"].first_hit == two.targets["x86-pae"].first_hit is not None
    key = [(o.index, o.scenario, o.schedules, o.kind, o.message) for o in one.outcomes]
    assert key == [(o.index, o.scenario, o.schedules, o.kind, o.message) for o in two.outcomes]
