"""Issue 9's acceptance for the false alarms a-f: each repro clean over 2,000
PCT schedules at depth 2 and at depth 3 and over 1,000 random ones.

Slow (about an hour on two cores in all): run with `python -m pytest -m slow
tests/test_soundness_slow.py`. The quick versions are in test_soundness.py.
"""

from __future__ import annotations

import textwrap

import pytest
from test_soundness import (
    ARM_COLLAPSE,
    KHUGEPAGED_DONTNEED_READER,
    KHUGEPAGED_VS_TRUNCATE,
    STEP_LIMITED,
)

from emu.explore import ExploreConfig, explore

MUNMAP_VS_KHUGEPAGED = KHUGEPAGED_VS_TRUNCATE.replace('kind = "file"', 'kind = "shmem"').replace(
    'args = [5, "8 * pmd_size", "page_size"]', 'args = [4, "8 * pmd_size", "pmd_size"]')

REPROS = {"a": (KHUGEPAGED_VS_TRUNCATE, {}), "b": (KHUGEPAGED_DONTNEED_READER, {}),
          "d": (MUNMAP_VS_KHUGEPAGED, {}), "e": (STEP_LIMITED, {"max_steps": 8}),
          "f": (ARM_COLLAPSE, {})}
RUNS = {"pct-d2": dict(strategy="pct", depth=2, schedules=2000),
        "pct-d3": dict(strategy="pct", depth=3, schedules=2000),
        "random": dict(strategy="random", schedules=1000)}


@pytest.mark.slow
@pytest.mark.parametrize("run", sorted(RUNS))
@pytest.mark.parametrize("repro", sorted(REPROS))
def test_repro_is_clean_over_the_acceptance_budget(tmp_path, repro, run):
    text, extra = REPROS[repro]
    path = tmp_path / f"{repro}.toml"
    path.write_text(textwrap.dedent(text))
    res = explore(ExploreConfig(str(path), jobs=2, **RUNS[run], **extra))
    assert res.report is None, res.report and res.report.message
    assert res.stats.schedules == RUNS[run]["schedules"]
