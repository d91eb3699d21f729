"""Evidence of what an exploration exercised (issue 12, section 2).

A clean verdict says which routines and override methods ran, which
conflicting pairs (a table's retirement vs a walker / lockless reader /
ptl holder on it) were seen in both orders, and says so when nothing ever
overlapped a free.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from emu.cli import main
from emu.evidence import AFTER, BEFORE, merge, verdict_lines
from emu.explore import ExploreConfig, explore

REPO = Path(__file__).resolve().parent.parent


def evidence_of(name: str, **kw) -> dict:
    res = explore(ExploreConfig(name, evidence=True, minimize=False, **kw))
    return res.stats.evidence


def orders(ev: dict) -> dict:
    return {(lvl, kind, order): n for lvl, kind, order, n in ev["orders"]}


def test_a_retract_race_is_seen_in_both_orders():
    ev = evidence_of("lockless_sync_pae", depth=3, schedules=60)
    o = orders(ev)
    assert o[("pte", "lockless reader", BEFORE)] > 0 and o[("pte", "lockless reader", AFTER)] > 0
    calls = ev["calls"]
    assert 0 < calls["pmdp_get_lockless_sync"] <= calls["retract_page_tables"] <= 60
    lines = verdict_lines(ev, clean=True)
    assert any("lockless reader vs the free of a pte table: both orders" in x for x in lines)
    assert not any(x.startswith("clean, but") for x in lines)


def test_a_scenario_that_never_frees_says_so(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert main(["explore", "torn_pae", "--strategy", "exhaustive", "--schedules", "50",
                 "--quiet", "--json", "o.json"]) == 0
    out = capsys.readouterr().out
    assert "no page table was ever freed or queued for freeing" in out
    assert "clean, but no walker ever overlapped a free of a pte table — this scenario may " \
           "not exercise your policy" in out
    data = json.loads(Path("o.json").read_text())
    assert data["exercised"] is False and data["stats"]["evidence"]["calls"]["gup_fast"] > 0


def test_override_methods_are_counted_and_one_never_called_is_named(tmp_path, capsys,
                                                                      monkeypatch):
    policy = tmp_path / "policy.py"
    shutil.copy(REPO / "guest" / "porter" / "flush_then_free.py", policy)
    policy.write_text(policy.read_text() + '''

class Unused:
    """A Kernel mixin whose routine this scenario never calls."""

    def adjust_pte(self, *a):  # arm only: never on x86-pae
        return super().adjust_pte(*a)
''')
    text = (REPO / "guest" / "scenarios" / "porter_example.toml").read_text().replace(
        'override = "../porter/flush_then_free.py:FlushThenFree"',
        'override = ["policy.py:FlushThenFree", "policy.py:Unused"]')
    sc = tmp_path / "p.toml"
    sc.write_text(text)
    monkeypatch.chdir(tmp_path)
    assert main(["explore", str(sc), "--schedules", "10", "--quiet", "--no-db"]) == 0
    out = capsys.readouterr().out
    assert "your override: override FlushThenFree.free_defer ran 10 times" in out
    assert "your override: override Unused.adjust_pte NEVER ran" in out


def test_evidence_does_not_depend_on_the_job_count():
    one = evidence_of("retract_x86", schedules=24, jobs=1)
    two = evidence_of("retract_x86", schedules=24, jobs=2)
    assert one == two and one["runs"] == 24


def test_merge_adds_counts():
    a = {"runs": 1, "calls": {"x": 1}, "override_methods": [], "retired": {"pte": 1},
         "orders": [["pte", "walker", BEFORE, 1]]}
    b = {"runs": 2, "calls": {"x": 2, "y": 1}, "override_methods": ["o"], "retired": {},
         "orders": [["pte", "walker", BEFORE, 2], ["pte", "walker", AFTER, 1]]}
    m = merge(a, b)
    assert m["runs"] == 3 and m["calls"] == {"x": 3, "y": 1} and m["override_methods"] == ["o"]
    assert orders(m) == {("pte", "walker", BEFORE): 3, ("pte", "walker", AFTER): 1}
    assert merge(None, a) == a


def test_coverage_per_routine(tmp_path, capsys, monkeypatch):
    pytest.importorskip("coverage")
    monkeypatch.chdir(tmp_path)
    assert main(["explore", "porter_example", "--schedules", "3", "--quiet", "--no-db",
                 "--coverage", "--json", "c.json"]) == 0
    out = capsys.readouterr().out
    assert "coverage: " in out and "statements of emu/kernel and your overrides ran" in out
    assert "FlushThenFree.free_defer" in out and "khugepaged.py:" in out
    rows = json.loads(Path("c.json").read_text())["coverage"]
    free_defer = next(r for r in rows if r["routine"] == "FlushThenFree.free_defer")
    assert free_defer["ran"] == free_defer["statements"] > 0
    assert any(r["ran"] == 0 for r in rows)  # something this scenario never runs
    assert main(["explore", "porter_example", "--coverage", "--jobs", "2"]) == 2
