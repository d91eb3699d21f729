"""The exploration driver: run many schedules, find the first failure, minimise it.

Owns the phases of `ptemu explore`:

1. build one `ExploreMachine` (checkers on, trace off), snapshot it, and run
   every schedule from a reset, never rebuilding the machine;
2. random / PCT: schedule i is driven by a strategy seeded with
   `sub_seed(seed, i)`, so it is the same schedule whatever the job count;
   with `jobs > 1` the indices are handed out in order to worker processes
   (each with its own machine), and the failure reported is the one with
   the lowest index; exhaustive: one depth-first search in this process;
3. minimise the failing schedule (delta debugging over its context switches,
   `emu.sched.guided`) keeping the same kind of failure;
4. replay the minimised schedule with the trace on and build the report
   (`emu.report`).

A failure is a checker's violation (use-after-free, torn read, ...), a
deadlock, a crashed vCPU, or a program exiting non-zero. Runs that hit the
step limit are counted, not reported. The core never imports rich: progress
is reported through a callback.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from emu import scenario as scenario_mod
from emu.check import default_checkers
from emu.cpu import Mode
from emu.explore_config import ExploreConfig
from emu.explore_machine import ExploreMachine
from emu.machine import RunResult
from emu.report import Report, build_report
from emu.sched.exhaustive import ExhaustiveSearch, SleepBlocked
from emu.sched.footprint import FootprintRecorder
from emu.sched.guided import AnchorRecorder, GuidedReplay
from emu.sched.pct import PCTStrategy
from emu.sched.schedule import RCU_TASK, context_switches, decode
from emu.sched.strategies import RandomStrategy, Replay
from emu.trace import describe_op


def merge_evidence(a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, Any] | None:
    from emu.evidence import merge
    return merge(a, b)

STRATEGIES = ("random", "pct", "exhaustive")
CHUNK = 8  # schedules per job handed to a worker process (Ray: emu.explore_ray.CHUNK)


def sub_seed(root: int, index: int) -> int:
    """The seed of schedule `index`: a hash, so neighbours are unrelated."""
    digest = hashlib.sha256(f"ptemu:{root}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


@dataclass(frozen=True)
class Failure:
    """One failing run, in a form that crosses process boundaries."""

    index: int
    kind: str  # checker name, "deadlock", "crash" or "exit"
    message: str
    schedule: str
    steps: int


def failure_of(r: RunResult) -> tuple[str, str] | None:
    """(kind, message) if the run failed, else None."""
    if r.violation is not None:
        return r.violation.checker, r.violation.message
    if r.deadlock:
        return "deadlock", r.deadlock
    if r.crashes:
        cpu = min(r.crashes)
        return "crash", f"cpu{cpu} {r.crashes[cpu]}"
    bad = r.failed_exits()
    if bad:
        return "exit", f"cpu{bad[0]} exited with status {r.exit_codes[bad[0]]}"
    return None


def load_scenario(cfg: ExploreConfig) -> scenario_mod.Scenario:
    sc = scenario_mod.load(cfg.scenario)
    for v in cfg.variants:
        if v not in sc.variants:
            sc.variants.append(v)
    for o in cfg.overrides:
        if o not in sc.overrides:
            sc.overrides.append(o)
    return sc


def build_machine(cfg: ExploreConfig, trace: bool = False) -> ExploreMachine:
    m = ExploreMachine(load_scenario(cfg), arch=cfg.arch, trace=trace,
                       checkers=default_checkers())
    m.digests = False
    for c in m.cpus:
        c.quantum = cfg.quantum
    if cfg.evidence:
        from emu.evidence import Evidence
        ev = Evidence()
        ev.instrument(m.kernel)  # before the snapshot, so every reset keeps it
        m.add_checker(ev)
        m.evidence = ev
    m.snapshot()
    return m


@dataclass
class Stats:
    schedules: int = 0  # schedules run up to and including the first failure
    steps: int = 0
    step_limited: int = 0
    seconds: float = 0.0
    failures: int = 0  # failing schedules seen (exhaustive: all of them)
    interleavings: int | None = None  # exhaustive: executions run to their end
    pruned: int | None = None  # exhaustive: executions cut by sleep sets
    exhausted: bool | None = None  # exhaustive: the whole tree was explored
    k: int | None = None  # PCT run-length estimate used
    evidence: dict[str, Any] | None = None  # emu.evidence summary, when asked for

    @property
    def schedules_per_s(self) -> float:
        return self.schedules / self.seconds if self.seconds else 0.0

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.seconds if self.seconds else 0.0


@dataclass
class ExploreResult:
    config: ExploreConfig
    stats: Stats
    failure: Failure | None = None
    report: Report | None = None
    minimize_runs: int = 0
    notes: list[str] = field(default_factory=list)
    machine: ExploreMachine | None = None  # holds the traced replay of the report


Progress = Callable[[int, int, int], None]  # (schedules done, total, failures)


# ---- running one schedule ------------------------------------------------------------


def pct_k(cfg: ExploreConfig, m: ExploreMachine) -> int:
    """PCT's run-length estimate: the length of one unpreempted run."""
    if cfg.pct_k:
        return cfg.pct_k
    m.reset()
    r = m.run(PCTStrategy(sub_seed(cfg.seed, -1), depth=1, k=1), max_steps=cfg.max_steps)
    return max(1, r.steps)


def strategy_for(cfg: ExploreConfig, index: int, k: int) -> Any:
    seed = sub_seed(cfg.seed, index)
    if cfg.strategy == "random":
        return RandomStrategy(seed)
    if cfg.strategy == "pct":
        return PCTStrategy(seed, cfg.pct_depth(), k)
    raise ValueError(f"strategy {cfg.strategy!r} has no per-index schedules")


def run_range(m: ExploreMachine, cfg: ExploreConfig, k: int, start: int, stop: int,
              progress: Callable[[int], None] | None = None) -> tuple[Failure | None, Stats]:
    """Run schedules start..stop-1 on `m`; stop at the first failure."""
    st = Stats()
    _evidence(m)  # count these schedules only (not PCT's calibration run)
    for i in range(start, stop):
        m.reset()
        r = m.run(strategy_for(cfg, i, k), max_steps=cfg.max_steps)
        st.schedules += 1
        st.steps += r.steps
        st.step_limited += r.step_limit
        f = failure_of(r)
        if progress is not None:
            progress(1 if f else 0)
        if f is not None:
            st.failures += 1
            st.evidence = _evidence(m)
            return Failure(i, f[0], f[1], r.schedule, r.steps), st
    st.evidence = _evidence(m)
    return None, st


def _evidence(m: ExploreMachine) -> dict[str, Any] | None:
    """The machine's evidence so far, and a fresh count for what it runs next."""
    ev = getattr(m, "evidence", None)
    if ev is None:
        return None
    out = ev.summary()
    ev.reset_counts()
    return out


# ---- worker processes ------------------------------------------------------------------

_WORKER: tuple[ExploreMachine, ExploreConfig, int] | None = None


def _worker_init(cfg: ExploreConfig, k: int) -> None:
    global _WORKER
    _WORKER = (build_machine(cfg), cfg, k)


def _worker_run(start: int, stop: int) -> tuple[Failure | None, Stats]:
    m, cfg, k = _WORKER
    return run_range(m, cfg, k, start, stop)


class _ProcessPool:
    """Chunks of schedules on spawned worker processes, each with its own machine."""

    def __init__(self, cfg: ExploreConfig, k: int) -> None:
        ctx = multiprocessing.get_context("spawn")  # no Unicorn state inherited by fork
        self.width = cfg.jobs
        self.chunk = CHUNK
        self.pool = ProcessPoolExecutor(cfg.jobs, mp_context=ctx, initializer=_worker_init,
                                        initargs=(cfg, k))

    def submit(self, start: int, stop: int) -> Future:
        return self.pool.submit(_worker_run, start, stop)

    def wait(self, pending: Any) -> Any:
        return wait(pending, return_when=FIRST_COMPLETED)[0]

    def result(self, handle: Future) -> Any:
        return handle.result()

    def close(self) -> None:
        self.pool.shutdown()


def _parallel(cfg: ExploreConfig, k: int, progress: Progress | None) -> tuple[Failure | None, Stats]:
    """Schedule chunks on a pool (worker processes, or Ray actors for --backend ray).

    Chunks are handed out in index order, at most two per worker ahead, and
    none above a failure already found; the failure kept is the one with
    the lowest index. So the result does not depend on the pool's width or
    on which worker finishes first.
    """
    total = Stats()
    best: Failure | None = None
    if cfg.backend == "ray":
        from emu.explore_ray import ExplorePool
        pool: Any = ExplorePool(cfg, k)
    else:
        pool = _ProcessPool(cfg, k)
    size = pool.chunk
    chunks = [(a, min(a + size, cfg.schedules)) for a in range(0, cfg.schedules, size)]
    done = 0
    try:
        pending: dict[Any, tuple[int, int]] = {}
        nxt = 0
        while nxt < len(chunks) or pending:
            while nxt < len(chunks) and len(pending) < 2 * pool.width \
                    and (best is None or chunks[nxt][0] < best.index):
                a, b = chunks[nxt]
                pending[pool.submit(a, b)] = (a, b)
                nxt += 1
            if not pending:
                break
            finished = pool.wait(pending)
            for fut in sorted(finished, key=lambda f: pending[f][0]):
                a, b = pending.pop(fut)
                fail, st = pool.result(fut)
                total.steps += st.steps
                total.step_limited += st.step_limited
                total.failures += st.failures
                total.evidence = merge_evidence(total.evidence, st.evidence)
                done += st.schedules
                if fail is not None and (best is None or fail.index < best.index):
                    best = fail
                if progress is not None:
                    progress(done, cfg.schedules, total.failures)
            if best is not None and nxt < len(chunks) and chunks[nxt][0] >= best.index:
                nxt = len(chunks)  # nothing below the failure is left to hand out
    finally:
        pool.close()
    total.schedules = best.index + 1 if best is not None else cfg.schedules
    return best, total


# ---- exhaustive ----------------------------------------------------------------------------


def _exhaustive(cfg: ExploreConfig, m: ExploreMachine,
                progress: Progress | None) -> tuple[Failure | None, Stats]:
    rec = FootprintRecorder(cfg.por)
    m.add_checker(rec)
    m.checkers.insert(0, m.checkers.pop())  # first: see FootprintRecorder.on_run_end
    search = ExhaustiveSearch(rec, preemptions=cfg.depth)
    st = Stats()
    first: Failure | None = None
    index = 0
    try:
        while index < cfg.schedules:
            m.reset()
            blocked = False
            try:
                r = m.run(search, max_steps=cfg.max_steps)
            except SleepBlocked:
                blocked = True
                st.steps += m.step
            else:
                st.steps += r.steps
                st.step_limited += r.step_limit
                f = failure_of(r)
                if f is not None:
                    st.failures += 1
                    if first is None:
                        first = Failure(index, f[0], f[1], r.schedule, r.steps)
            index += 1
            if progress is not None:
                progress(index, cfg.schedules, st.failures)
            if not search.end_execution(blocked):
                break
    finally:
        m.checkers.remove(rec)
        rec.detach()
    st.schedules = index
    st.evidence = _evidence(m)
    st.interleavings = search.complete
    st.pruned = search.blocked
    st.exhausted = search.finished
    return first, st


# ---- minimisation ------------------------------------------------------------------------


def ddmin(items: list, test: Callable[[list], bool]) -> list:
    """Zeller's delta debugging: a 1-minimal sublist of `items` for which `test` holds."""
    if test([]):
        return []
    n = 2
    while len(items) >= 2:
        size = -(-len(items) // n)
        parts = [items[i:i + size] for i in range(0, len(items), size)]
        for j, part in enumerate(parts):
            if test(part):
                items, n = part, 2
                break
            rest = [x for q, p in enumerate(parts) if q != j for x in p]
            if n > 2 and test(rest):
                items, n = rest, max(n - 1, 2)
                break
        else:
            if n >= len(items):
                break
            n = min(2 * n, len(items))
    return items


def next_step(m: ExploreMachine, task: int) -> str:
    """What `task` would do if it ran now: an anchor for minimisation."""
    if task == RCU_TASK:
        return "rcu callback"
    c = m.cpus[task]
    if c.mode is Mode.KERNEL and c.task is not None:
        return f"kernel {c.task.name}: {describe_op(c.task.pending)}"
    if c.mode is Mode.WALK and c.walk_msg is not None:
        msg = c.walk_msg
        return f"walk {type(msg).__name__} {msg.level} {msg.pa:#x}"
    return f"guest {c.pc:#x}"


class Minimiser:
    """Fewest context switches that still fail with the same kind of failure.

    Delta debugging over the switch points of the failing run (anchored at
    what each preempted task was about to do, `emu.sched.guided`); whatever
    a candidate leaves unsaid, the guided replay's completion rule decides.
    Repeated from the best run found while that keeps lowering the count.
    """

    def __init__(self, m: ExploreMachine, cfg: ExploreConfig, kind: str) -> None:
        self.m = m
        self.cfg = cfg
        self.kind = kind
        self.runs = 0
        self.cache: dict[tuple, bool] = {}
        self.best: list[int] = []

    def describe(self, task: int) -> str:
        return next_step(self.m, task)

    def points(self, choices: list[int]) -> list:
        rec = AnchorRecorder(choices, self.describe)
        self.m.reset()
        self.m.run(rec, max_steps=self.cfg.max_steps)
        return rec.finish()

    def attempt(self, points: list) -> bool:
        key = tuple(points)
        if key in self.cache:
            return self.cache[key]
        if self.runs >= self.cfg.minimize_budget:
            return False
        self.runs += 1
        self.m.reset()
        r = self.m.run(GuidedReplay(points, self.describe), max_steps=self.cfg.max_steps)
        f = failure_of(r)
        ok = f is not None and f[0] == self.kind
        self.cache[key] = ok
        if ok:
            choices = decode(r.schedule)
            if (context_switches(choices), len(choices)) < \
                    (context_switches(self.best), len(self.best)):
                self.best = choices
        return ok

    def run(self, choices: list[int]) -> list[int]:
        self.best = choices
        for _ in range(4):
            before = context_switches(self.best)
            ddmin(self.points(self.best), self.attempt)
            if context_switches(self.best) >= before or self.runs >= self.cfg.minimize_budget:
                break
        return self.best


# ---- the whole exploration ------------------------------------------------------------------


def explore(cfg: ExploreConfig, progress: Progress | None = None) -> ExploreResult:
    if cfg.strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {cfg.strategy!r}; known: {', '.join(STRATEGIES)}")
    m = build_machine(cfg)
    t0 = time.perf_counter()
    k = None
    if cfg.strategy == "exhaustive":
        fail, st = _exhaustive(cfg, m, progress)
    else:
        k = pct_k(cfg, m) if cfg.strategy == "pct" else 0
        if cfg.jobs > 1 or cfg.backend == "ray":
            fail, st = _parallel(cfg, k, progress)
        else:
            done = [0, 0]

            def tick(failed: int) -> None:
                done[0] += 1
                done[1] += failed
                if progress is not None:
                    progress(done[0], cfg.schedules, done[1])
            fail, st = run_range(m, cfg, k, 0, cfg.schedules, tick)
    st.seconds = time.perf_counter() - t0
    st.k = k if cfg.strategy == "pct" else None
    res = ExploreResult(cfg, st, fail, machine=m)
    if fail is None:
        return res
    choices = decode(fail.schedule)
    if cfg.minimize:
        mini = Minimiser(m, cfg, fail.kind)
        choices = mini.run(choices)
        res.minimize_runs = mini.runs
    res.report = replay_report(cfg, choices, fail, original=fail.schedule, m=m)
    if res.report.kind != fail.kind:
        res.notes.append(f"replaying the schedule gave {res.report.kind}, not {fail.kind}")
    return res


def replay_report(cfg: ExploreConfig, choices: list[int], fail: Failure | None = None,
                  original: str = "", m: ExploreMachine | None = None,
                  strict: bool = True) -> Report:
    """Re-run `choices` with the trace on and build the report of what happens."""
    if m is None:
        m = build_machine(cfg)
    m.trace.enabled = True
    m.reset()
    try:
        r = m.run(Replay(choices, strict_end=False), max_steps=cfg.max_steps)
    finally:
        m.trace.enabled = False
    f = failure_of(r)
    return build_report(m, r, f, cfg, index=fail.index if fail else None,
                        original_schedule=original or r.schedule)
