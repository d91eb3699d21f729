"""A report names the routines that freed the frame (issue 12, section 3)."""

from __future__ import annotations

from emu.explore import ExploreConfig, explore


def test_the_frame_history_names_the_routine_that_freed_it():
    res = explore(ExploreConfig("retract_x86", variants=("pte_free_immediate",), schedules=1000))
    rep = res.report
    assert rep is not None and rep.kind == "use-after-free"
    freed = [e for e in rep.frame_history if "freed" in e.what]
    assert freed, rep.frame_history
    assert freed[-1].by == "TablePolicy.free < pte_free < PteFreeImmediate.pte_free_defer < " \
        "retract_page_tables"
    assert f"(by {freed[-1].by})" in "\n".join(rep.lines())
