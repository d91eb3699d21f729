"""ExploreMachine.reset() brings the kernel model back from pickled bytes:
the runs after it are those Machine's deepcopy gives, step for step."""

from __future__ import annotations

import pytest

from emu.explore import ExploreConfig, build_machine, pct_k, strategy_for


def runs(name: str, pickled: bool, evidence: bool) -> list[tuple]:
    cfg = ExploreConfig(name, evidence=evidence)
    m = build_machine(cfg, trace=True)
    m.digests = True
    if not pickled:
        m._pickled = None  # Machine's deepcopy, as before
    else:
        assert m._pickled is not None, "the state did not pickle: reset falls back to deepcopy"
    k = pct_k(cfg, m)
    out = []
    for i in range(12):
        m.reset()
        r = m.run(strategy_for(cfg, i, k))
        out.append((r.schedule, r.trace_digest, r.memory_digest, r.ok))
    return out


@pytest.mark.parametrize("name", ["torn_pae", "collapse_gup", "retract_x86", "s390_halves"])
def test_pickled_reset_runs_what_deepcopy_runs(name):
    assert runs(name, True, False) == runs(name, False, False)


def test_pickled_reset_keeps_the_evidence_instrumentation():
    assert runs("retract_x86", True, True) == runs("retract_x86", False, True)
