"""The fuzz generator's mremap, mprotect, partial munmap and own-text munmap
(emu.fuzz_gen._remap_calls, _contended_mremap): they are generated, valid and
hostile, and such workloads run clean on the correct model with the hostile
calls returning Linux's errors, never a host traceback."""

from __future__ import annotations

from emu import scenario
from emu.explore import failure_of
from emu.fuzz_gen import TARGETS, generate, workload_seed
from emu.machine import Machine
from emu.sched import RandomStrategy


def _workloads(n: int = 25):
    for t in TARGETS:
        for i in range(n):
            yield t, generate(t, workload_seed(5, i))


def test_the_generator_makes_every_kind_of_remap_call():
    seen = {"mremap": 0, "mprotect": 0, "own text": 0, "signal": 0, "hostile mremap": 0,
            "hostile mprotect": 0}
    for _t, text in _workloads():
        sc = scenario.parse(text, "w.toml")
        for p in sc.programs:
            seen["signal"] += p.signal == "SIGSEGV"
            for rec in p.calls:
                if rec[0] == "mremap":
                    seen["mremap"] += 1
                    seen["hostile mremap"] += rec[4] != 3 or "+ 1" in str(rec[1]) \
                        or rec[3] == 0 or rec[1] == rec[5]
                elif rec[0] == "mprotect":
                    seen["mprotect"] += 1
                    seen["hostile mprotect"] += rec[3] in (0, 8) or "+ 1" in str(rec[1])
                elif rec[0] == "munmap" and rec[1] == "text":
                    seen["own text"] += 1
                    assert p.signal == "SIGSEGV"
    assert all(seen.values()), seen


def test_workloads_with_remap_calls_run_clean():
    ran = 0
    for t, text in _workloads(6):
        if "mremap" not in text and '"text"' not in text:
            continue
        m = Machine(scenario.parse(text, "w.toml"))
        r = m.run(RandomStrategy(0))
        assert failure_of(r) is None, (t.label, failure_of(r))
        ran += 1
    assert ran >= 4
