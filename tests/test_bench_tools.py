"""The benchmarks run and end with one JSON line (figures are not asserted:
timings on a shared machine prove nothing; that they are produced does)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_tool(*argv: str) -> tuple[str, dict]:
    p = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr
    last = p.stdout.strip().splitlines()[-1]
    return p.stdout, json.loads(last)


def test_bench_mmu_quick_prints_its_ratios_as_json_last():
    out, data = run_tool("tools/bench_mmu.py", "--quick", "--arch", "x86-pae", "--arch", "sparc64",
                         "--reps", "1")
    assert set(data) == {"x86-pae", "sparc64"}
    for arch, ratios in data.items():
        assert set(ratios) == {"a_ratio", "b_ratio", "c_ratio", "d_ratio"}
        for k, v in ratios.items():
            if k == "b_ratio" and arch == "sparc64":
                assert v is None  # Unicorn has no sparc64 MMU to compare with
            else:
                assert v > 0
    assert "x86-pae" in out.splitlines()[1]


def test_bench_explore_quick_prints_its_row_as_json_last():
    _out, data = run_tool("tools/bench_explore.py", "--quick")
    assert list(data) == ["torn_pae"]
    row = data["torn_pae"]
    assert row["steps/schedule"] > 0 and row["ratio"] > 0 and row["jobs n"] >= 20


@pytest.mark.parametrize("tool,bad", [("tools/bench_mmu.py", "--reps=0"),
                                      ("tools/bench_explore.py", "--schedules=0")])
def test_bench_tools_refuse_bad_counts_in_one_line(tool, bad):
    p = subprocess.run([sys.executable, tool, bad], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
