"""Exploration strategies: PCT, guided replay, exhaustive search with reduction,
and the ExploreMachine's cheap reset they all rely on."""

from __future__ import annotations

import pytest

from emu import scenario
from emu.check import default_checkers
from emu.explore import failure_of, next_step
from emu.explore_machine import ExploreMachine
from emu.machine import Machine
from emu.sched import RandomStrategy, decode
from emu.sched.exhaustive import ExhaustiveSearch, SleepBlocked
from emu.sched.footprint import FootprintRecorder, conflict, merge
from emu.sched.guided import AnchorRecorder, GuidedReplay, switch_points
from emu.sched.pct import PCTStrategy


class Recording:
    """Wraps a strategy; remembers what could run and what was chosen."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name = inner.name
        self.log: list[tuple[list[int], int]] = []

    def new_execution(self) -> None:
        self.inner.new_execution()
        self.log = []

    def choose(self, runnable, step):
        t = self.inner.choose(runnable, step)
        self.log.append((list(runnable), t))
        return t


def priority_changes(log) -> int:
    """Switches away from a task that could go on, to one that could already run
    the step before: under PCT only a change point does that (a task that just
    became runnable, e.g. got its lock, may preempt by priority)."""
    return sum(1 for (before, prev), (runnable, t) in zip(log, log[1:], strict=False)
               if t != prev and prev in runnable and t in before)


@pytest.fixture(scope="module")
def torn():
    m = ExploreMachine(scenario.load("torn_pae"), trace=False, checkers=default_checkers())
    m.snapshot()
    return m


def run(m, strategy):
    m.reset()
    return m.run(strategy)


# ---- PCT ----------------------------------------------------------------------------


def test_pct_same_seed_same_schedule_different_seeds_differ(torn):
    a = run(torn, PCTStrategy(7, depth=3, k=150)).schedule
    b = run(torn, PCTStrategy(7, depth=3, k=150)).schedule
    others = {run(torn, PCTStrategy(s, depth=3, k=150)).schedule for s in range(8)}
    assert a == b and len(others) > 2


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_pct_preempts_at_most_depth_minus_one_times(torn, depth):
    seen = 0
    for seed in range(8):
        rec = Recording(PCTStrategy(seed, depth=depth, k=140))
        r = run(torn, rec)
        assert r.ok
        assert priority_changes(rec.log) <= depth - 1
        seen = max(seen, priority_changes(rec.log))
    assert seen == 0 if depth == 1 else seen >= 1


def test_pct_change_points_lie_among_the_first_k_steps():
    s = PCTStrategy(3, depth=5, k=40)
    assert len(s.change_at) == 4 and all(0 <= p < 40 for p in s.change_at)
    assert sorted(s.change_at.values()) == [1, 2, 3, 4]


# ---- guided replay ----------------------------------------------------------------------


def test_switch_points_and_anchors_reproduce_a_run_exactly(torn):
    first = run(torn, RandomStrategy(5))
    choices = decode(first.schedule)
    assert run(torn, GuidedReplay(switch_points(choices))).schedule == first.schedule
    rec = AnchorRecorder(choices, lambda t: next_step(torn, t))
    assert run(torn, rec).schedule == first.schedule
    points = rec.finish()
    assert any(len(p) == 4 for p in points)
    again = run(torn, GuidedReplay(points, lambda t: next_step(torn, t)))
    assert again.schedule == first.schedule


def test_guided_completion_returns_to_the_interrupted_task():
    g = GuidedReplay([(0, 2), (1, 1)])
    picks = [g.choose([0, 1], i) for i in range(3)]
    assert picks == [0, 0, 1]
    assert g.choose([0, 1], 3) == 1  # the current task keeps going
    assert g.choose([0], 4) == 0  # it blocked: the one it interrupted stands in
    assert g.choose([0, 1], 5) == 1  # and yields back at once


# ---- cheap reset -------------------------------------------------------------------------

SMALL = """
[machine]
arch = "x86-pae"
cpus = 2
memory_mib = 16

[[vma]]
start = 0x10000000
size = "2 * pmd_size"
kind = "anon"

[[cpu]]
program = "touch"
args = [0x10000000, 24, "pmd_size // 16"]

[[cpu]]
program = "touch"
args = [0x10001000, 24, "pmd_size // 16"]
"""


def test_reset_runs_equal_fresh_machine_runs():
    sc = scenario.parse(SMALL, "<small>")
    m = ExploreMachine(sc)
    m.snapshot()
    before = m.memory_digest()
    for seed in (1, 2, 3):
        m.reset()
        assert m.memory_digest() == before
        r = m.run(RandomStrategy(seed))
        fresh = Machine(scenario.parse(SMALL, "<small>")).run(RandomStrategy(seed))
        assert r.ok and fresh.ok
        assert (r.trace_digest, r.memory_digest) == (fresh.trace_digest, fresh.memory_digest)
    m.reset()
    assert m.memory_digest() == before
    assert [fi == si for fi, si in zip(m.frames.frames, m._infos, strict=True)].count(False) == 0


# ---- footprints and exhaustive search ------------------------------------------------------


def test_footprint_conflict_rules():
    a, b = {}, {}
    merge(a, ("e", 1), "r")
    merge(b, ("e", 1), "r")
    assert not conflict(a, b)  # two reads commute
    merge(b, ("e", 1), "w")
    assert b[("e", 1)] == "w" and conflict(a, b)
    c, d = {("rcu",): "c"}, {("rcu",): "c"}
    assert not conflict(c, d)  # quiescent states commute with each other
    assert conflict(c, {("rcu",): "r"}) and conflict(c, {("rcu",): "w"})
    assert conflict({("*",): "w"}, {("x",): "r"})


def small_torn(variants=(), por="frames", bound=None, dpor=True):
    """torn_pae with the text pages faulted in at setup: a few dozen steps per CPU."""
    sc = scenario.load("torn_pae")
    sc.variants += list(variants)
    m = ExploreMachine(sc, trace=False, checkers=default_checkers())
    for vma in list(m.mm.vmas):
        if vma.kind == "text":
            m.populate(vma)
    m.snapshot()
    rec = FootprintRecorder(por)
    m.add_checker(rec)
    m.checkers.insert(0, m.checkers.pop())
    search = ExhaustiveSearch(rec, preemptions=bound, dpor=dpor)
    outcomes = set()
    runs = 0
    while True:
        m.reset()
        blocked = False
        try:
            r = m.run(search)
        except SleepBlocked:
            blocked = True
        else:
            f = failure_of(r)
            outcomes.add((f[0], "") if f else (None, r.memory_digest))
        runs += 1
        if not search.end_execution(blocked):
            break
    return search, outcomes, runs


def test_exhaustive_finds_the_plain_torn_read_and_proves_pmdp_get_lockless_clean():
    s, bad, _ = small_torn(["plain_two_load_read"])
    assert s.finished and ("torn-read", "") in bad
    s2, good, _ = small_torn()
    assert s2.finished and s2.complete > 10
    assert all(kind is None for kind, _ in good)


def test_reduction_loses_no_outcome_of_the_unreduced_bounded_search():
    _, reduced, _ = small_torn(["plain_two_load_read"])
    _, full, runs = small_torn(["plain_two_load_read"], por="none", bound=1)
    assert full <= reduced and runs > 20


def test_dpor_explores_the_same_traces_as_sleep_sets_alone_with_fewer_executions():
    # (on the correct code: runs cut short by a violation are prefixes, which
    # sleep sets alone count once per cut and DPOR does not)
    a, out_a, runs_a = small_torn()
    b, out_b, runs_b = small_torn(dpor=False)
    assert a.complete == b.complete and out_a == out_b
    assert a.blocked == 0 and runs_a < runs_b


class ScriptedSteps:
    """A recorder for ExhaustiveSearch over scripted tasks: task t's i-th step
    has the footprint programs[t][i] (no machine: the search alone)."""

    def __init__(self, programs: dict[int, list[dict]], mode: str = "frames") -> None:
        self.programs = programs
        self.mode = mode
        self.pos = {t: 0 for t in programs}

    def begin(self, task: int) -> None:
        self.task = task
        self.pos[task] += 1

    def take(self) -> dict:
        return self.programs[self.task][self.pos[self.task] - 1]


def traces_explored(programs: dict[int, list[dict]], mode: str = "frames",
                    stats: dict | None = None) -> set[tuple]:
    """Every complete order the search ran (its choices, one per step)."""
    rec = ScriptedSteps(programs, mode)
    search = ExhaustiveSearch(rec)
    seen: set[tuple] = set()
    while True:
        rec.pos = {t: 0 for t in programs}
        order: list[int] = []
        blocked = False
        try:
            while True:
                runnable = [t for t in sorted(programs) if rec.pos[t] < len(programs[t])]
                if not runnable:
                    break
                order.append(search.choose(runnable, len(order)))
        except SleepBlocked:
            blocked = True
        if not blocked:
            seen.add(tuple(order))
        if not search.end_execution(blocked):
            if stats is not None:
                stats.update(complete=search.complete, blocked=search.blocked)
            return seen


K = ("e", 1)


@pytest.mark.parametrize("first,second,orders", [
    ("r", "r", 1),  # two reads commute
    ("c", "c", 1),  # two commutative updates commute
    ("r", "c", 2),  # a read and an update do not: the read sees the update or not
    ("c", "r", 2),
    ("w", "r", 2),
    ("r", "w", 2),
    ("c", "w", 2),
])
def test_dpor_tries_both_orders_of_dependent_steps_and_one_of_independent(first, second, orders):
    """Two tasks of one step each, on one key: DPOR (with sleep sets) runs one
    execution per Mazurkiewicz trace: both orders when the steps depend."""
    stats: dict = {}
    got = traces_explored({0: [{K: first}], 1: [{K: second}]}, stats=stats)
    assert len(got) == orders
    assert stats == {"complete": orders, "blocked": 0}  # no execution wasted
    got_none = traces_explored({0: [{K: first}], 1: [{K: second}]}, mode="none")
    assert len(got_none) == 2  # no reduction: every interleaving


def test_dpor_finds_a_race_behind_an_independent_step():
    """task0: a read of K; task1: a step on another key, then an update of K.
    The race is between task0's step and task1's *second* step: DPOR must
    still try running task1's update before task0's read."""
    got = traces_explored({0: [{K: "r"}], 1: [{("e", 2): "w"}, {K: "c"}]})
    firsts = {o.index(0) for o in got}
    assert any(o.index(0) > 1 for o in got), got  # task0 after the update
    assert 0 in firsts  # and before it


def trace_class(order: tuple, programs: dict[int, list[dict]]) -> frozenset:
    """The Mazurkiewicz trace of an order: which of each dependent pair came first."""
    steps, pos = [], {t: 0 for t in programs}
    for t in order:
        steps.append((t, pos[t]))
        pos[t] += 1
    return frozenset((a, b) for i, a in enumerate(steps) for b in steps[i + 1:]
                     if a[0] != b[0] and conflict(programs[a[0]][a[1]], programs[b[0]][b[1]]))


def random_programs(seed: int) -> dict[int, list[dict]]:
    import random
    rng = random.Random(seed)
    keys = [("e", 1), ("e", 2)]
    return {t: [{rng.choice(keys): rng.choice("rcw")} for _ in range(rng.randint(1, 3))]
            for t in range(3)}


@pytest.mark.parametrize("seed", range(40))
def test_dpor_reaches_every_trace_of_the_full_search_once(seed):
    """Scripted three-task programs over two keys with reads, updates and
    writes: DPOR with sleep sets runs exactly one execution per Mazurkiewicz
    trace of the unreduced search (none missing, none twice).

    Regression (seeds 10, 23, 29, 37): a race whose later task was asleep at
    the earlier step's choice point added only that task there, which the
    sleep set then refused, so a trace was never run (e.g. seed 23 never ran
    the one where task 0's read sees task 1's update while task 2's second
    read sees task 0's)."""
    programs = random_programs(seed)
    full = {trace_class(o, programs) for o in traces_explored(programs, mode="none")}
    stats: dict = {}
    reduced = [trace_class(o, programs) for o in traces_explored(programs, stats=stats)]
    assert set(reduced) == full
    assert len(reduced) == len(full) == stats["complete"]


@pytest.mark.parametrize("quantum,want", [
    (1, [0, 1, 2, 0, 1, 2]),
    (2, [0, 0, 1, 1, 2, 2]),
    (3, [0, 0, 0, 1, 1, 1]),
])
def test_round_robin_runs_each_task_for_its_quantum(quantum, want):
    from emu.sched import RoundRobin
    rr = RoundRobin(quantum)
    assert [rr.choose([0, 1, 2], i) for i in range(6)] == want


def test_round_robin_moves_on_when_the_current_task_cannot_run():
    from emu.sched import RoundRobin
    rr = RoundRobin(3)
    assert [rr.choose([0, 1], 0), rr.choose([1], 1), rr.choose([0, 1], 2)] == [0, 1, 1]


def test_dpor_backtracks_only_the_racing_task():
    """Tasks 0 and 1 race on K; task 2 touches another key. The race adds
    task 1 (not every task) at task 0's choice point: two traces, and no
    execution started only to be cut by the sleep sets."""
    stats: dict = {}
    got = traces_explored({0: [{K: "r"}], 1: [{K: "w"}], 2: [{("e", 2): "w"}]}, stats=stats)
    assert len(got) == 2 and stats == {"complete": 2, "blocked": 0}


def test_pct_with_a_one_step_bound_changes_priority_at_step_0():
    for k in (1, 0):  # a bound below one step is one step
        s = PCTStrategy(7, depth=3, k=k)
        assert s.change_at == {0: 1}  # one change point fits in a one-step bound


def test_a_setup_routine_that_runs_away_is_stopped():
    from emu.kernel.task import KernelTask
    m = Machine(scenario.load("touch"))

    def forever():
        while True:
            yield s_note()

    def s_note():
        from emu.kernel import steps as ks
        return ks.Load(0, 4, "spin")

    t = KernelTask(m.kernel, 0, forever(), "runaway")
    with pytest.raises(RuntimeError, match="did not finish in 5 steps"):
        t.run_to_completion(max_steps=5)
