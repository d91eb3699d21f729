"""ExhaustiveSearch driven directly over synthetic tasks whose steps have given
footprints: the preemption bound, the unreduced tree, DPOR's races (read
against update included) and sleep sets, counted exactly. Fast: no machine."""

from __future__ import annotations

import pytest

from emu.sched.exhaustive import ExhaustiveSearch, SleepBlocked
from emu.sched.footprint import ALL


class FakeRecorder:
    """Stands in for FootprintRecorder: the footprint of the step just begun."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.fp = None
        self.begun: list[int] = []

    def begin(self, task: int) -> None:
        self.begun.append(task)

    def take(self):
        return ALL if self.mode == "none" else self.fp


def explore(programs: dict[int, list[dict]], mode: str = "frames", preemptions=None,
            dpor: bool = True, limit: int = 1000):
    """Every execution the search asks for: (search, [task sequence of each complete run])."""
    rec = FakeRecorder(mode)
    search = ExhaustiveSearch(rec, preemptions=preemptions, dpor=dpor)
    runs = []
    for _ in range(limit):
        search.new_execution()
        pos = dict.fromkeys(programs, 0)
        seq: list[int] = []
        blocked = False
        try:
            while True:
                runnable = [t for t in sorted(programs) if pos[t] < len(programs[t])]
                if not runnable:
                    break
                t = search.choose(runnable, len(seq))
                rec.fp = programs[t][pos[t]]
                pos[t] += 1
                seq.append(t)
        except SleepBlocked:
            blocked = True
        if not blocked:
            runs.append("".join("abc"[t] for t in seq))
        if not search.end_execution(blocked):
            return search, runs
    raise AssertionError("the search did not end")


W = {("e", 1): "w"}
TWO_BY_TWO = {0: [W, W], 1: [W, W]}


def test_a_search_that_has_run_nothing_is_not_finished():
    """What `ptemu explore --strategy exhaustive --schedules 0` reports as exhausted."""
    search = ExhaustiveSearch(FakeRecorder("frames"))
    assert search.finished is False and search.complete == search.blocked == 0


def test_the_unreduced_search_runs_every_interleaving_once():
    search, runs = explore(TWO_BY_TWO, mode="none")
    assert sorted(runs) == ["aabb", "abab", "abba", "baab", "baba", "bbaa"]
    assert runs[0] == "aabb"  # the first execution never preempts
    assert search.complete == 6 and search.blocked == 0 and search.finished
    assert search.max_depth == 4


@pytest.mark.parametrize("bound, want", [
    (0, ["aabb", "bbaa"]),
    (1, ["aabb", "abba", "baab", "bbaa"]),
    (2, ["aabb", "abab", "abba", "baab", "baba", "bbaa"]),
])
def test_the_preemption_bound_counts_only_switches_away_from_a_runnable_task(bound, want):
    """abba has one preemption (a -> b while a could run; b -> a once b is done
    is free); abab has two, baba two."""
    search, runs = explore(TWO_BY_TWO, preemptions=bound)
    assert sorted(runs) == want and len(runs) == len(set(runs))
    assert search.complete == len(want) and search.finished


def test_a_bounded_search_of_three_tasks_keeps_to_its_bound():
    progs = {0: [W, W], 1: [W], 2: [W]}
    _, runs0 = explore(progs, preemptions=0)
    # no preemption: a runs to its end first, or is never started before the others
    assert sorted(runs0) == ["aabc", "aacb", "baac", "bcaa", "caab", "cbaa"]


@pytest.mark.parametrize("first, second, orders", [
    ("w", "w", 2), ("w", "r", 2), ("r", "w", 2), ("r", "c", 2), ("c", "r", 2),
    ("c", "w", 2), ("r", "r", 1), ("c", "c", 1),
])
def test_dpor_tries_both_orders_exactly_when_the_steps_depend(first, second, orders):
    """Read against commutative update ("c") is a dependence; two updates, or
    two reads, commute."""
    progs = {0: [{("e", 7): first}], 1: [{("e", 7): second}]}
    search, runs = explore(progs)
    assert len(runs) == orders and search.complete == orders
    assert sorted(runs) == (["ab", "ba"] if orders == 2 else ["ab"])


def test_dpor_leaves_independent_steps_in_one_order():
    progs = {0: [{("e", 1): "w"}, {("e", 2): "w"}], 1: [{("e", 3): "w"}, {("e", 4): "w"}]}
    search, runs = explore(progs)
    assert runs == ["aabb"] and search.complete == 1 and search.blocked == 0


def test_dpor_finds_a_race_behind_an_independent_step():
    """b's access to x comes after an unrelated step: both orders of the two
    x accesses are still run."""
    x, y = {("e", 1): "w"}, {("e", 2): "w"}
    search, runs = explore({0: [x], 1: [y, x]})
    assert {r.index("a") < r.rindex("b") for r in runs} == {True, False}


def test_sleep_sets_alone_abandon_the_repeat_of_an_explored_trace():
    """Without DPOR every task is tried at every choice point: the second order
    of two independent steps is the same trace, refused by the sleep set."""
    progs = {0: [{("e", 1): "w"}], 1: [{("e", 2): "w"}]}
    search, runs = explore(progs, dpor=False)
    assert runs == ["ab"] and search.complete == 1 and search.blocked == 1
    assert search.finished
    _, dep = explore({0: [W], 1: [W]}, dpor=False)
    assert sorted(dep) == ["ab", "ba"]


def test_a_search_reset_between_executions_starts_each_from_the_first_choice():
    rec_runs = explore(TWO_BY_TWO, mode="none")[1]
    again = explore(TWO_BY_TWO, mode="none")[1]
    assert rec_runs == again  # deterministic: the same order of executions


def _signature(run: str, programs) -> frozenset:
    """A run's Mazurkiewicz trace: the order of every pair of dependent steps."""
    from emu.sched.footprint import conflict
    events, seen = [], dict.fromkeys(range(len(programs)), 0)
    for ch in run:
        t = "abc".index(ch)
        events.append((t, seen[t]))
        seen[t] += 1
    return frozenset((e, f) for i, e in enumerate(events) for f in events[i + 1:]
                     if e[0] != f[0] and conflict(programs[e[0]][e[1]], programs[f[0]][f[1]]))


def _key(n, mode="w"):
    return {("e", n): mode}


# found by comparing the search against its mutants over random small programs
HB_THROUGH_A_THIRD = {0: [_key(1, "r"), _key(3, "r")], 1: [_key(2)],
                      2: [_key(3, "c"), _key(3), _key(1)]}
THREE_RACING_WRITERS = {0: [_key(3), _key(3, "r")], 1: [_key(3), _key(3)],
                        2: [_key(1), _key(1, "c")]}


@pytest.mark.parametrize("programs, blocked", [(HB_THROUGH_A_THIRD, 1),
                                               (THREE_RACING_WRITERS, 0)])
def test_dpor_runs_each_trace_once_and_no_race_that_happens_before_orders(programs, blocked):
    """Every trace of the full search, each once; steps ordered through a third
    task's step (vector clocks) are no race, so nothing beyond the one execution
    the sleep set prunes is run."""
    _, full = explore(programs, mode="none")
    traces = {_signature(r, programs) for r in full}
    search, runs = explore(programs)
    assert {_signature(r, programs) for r in runs} == traces
    assert search.complete == len(runs) == len(traces)
    assert search.blocked == blocked


# ---- guided replay and anchors, over synthetic runnable sets --------------------------

def drive(strategy, runnables):
    return [strategy.choose(list(r), i) for i, r in enumerate(runnables)]


def test_guided_replay_count_points_then_the_interrupted_task_first():
    from emu.sched.guided import GuidedReplay
    g = GuidedReplay([(0, 2), (1, 1)])
    got = drive(g, [(0, 1, 2)] * 4 + [(0, 2)] + [(0, 1, 2)] * 2)
    # points: cpu0 twice, cpu1 once; then cpu1 (current) keeps going; blocked,
    # cpu0 (the one it interrupted) stands in; cpu1 back as soon as it can
    assert got == [0, 0, 1, 1, 0, 1, 1]
    g = GuidedReplay([(1, 1)])
    assert drive(g, [(0, 1, 2), (0, 2), (0, 2)]) == [1, 0, 0]  # never-ran: lowest first


def test_guided_replay_anchor_points_wait_for_the_anchor_or_the_cap():
    from emu.sched.guided import GuidedReplay
    g = GuidedReplay([(0, 1, "store x", 1), (1, 1)],
                     lambda t: "store x" if t == 0 and g.made.get(0, 0) == 3 else "other")
    # cpu0 runs until it is about to make "store x" (its 4th step), not just 1 step
    got = drive(g, [(0, 1)] * 6)
    assert got[:4] == [0, 0, 0, 1]
    g = GuidedReplay([(0, 1, "never", 1), (1, 1)], lambda t: "load x")
    got = drive(g, [(0, 1)] * 1006)
    assert got.index(1) == 1004  # the cap: 4 n + 1000 steps of the point's task


def test_guided_replay_without_descriptions_reads_anchor_points_as_counts():
    from emu.sched.guided import GuidedReplay
    g = GuidedReplay([(0, 2, "store x", 5), (1, 1)])
    assert drive(g, [(0, 1)] * 3) == [0, 0, 1]


def test_anchor_recorder_records_where_each_task_was_left():
    from emu.sched.guided import AnchorRecorder
    desc = {0: "a-step", 1: "b-step"}
    rec = AnchorRecorder([0, 0, 1, 0, 1], lambda t: desc[t])
    drive(rec, [(0, 1), (0, 1), (0, 1), (0, 1), (1,)])
    # cpu0 left runnable after 2 steps (about to make its 3rd "a-step"); cpu1 after 1;
    # cpu0 left at 3 when it could no longer run: a count; cpu1 ends the run
    assert rec.finish() == [(0, 2, "a-step", 3), (1, 1, "b-step", 2), (0, 3), (1, 2)]
    assert rec.finish() == [(0, 2, "a-step", 3), (1, 1, "b-step", 2), (0, 3), (1, 2)]
