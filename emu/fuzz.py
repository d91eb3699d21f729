"""The `ptemu fuzz` driver: generate workloads, explore each, collect the figures.

Owns how N workloads are spread over the targets (workload i goes to target
i mod T, T the number of targets `--arch` selects: with `--arch all`, the
seven arches and arch options take turns, so N = 200 gives 29 workloads to
each of the first four and 28 to the other three), how each is explored
(`emu.explore.explore` on the generated scenario file, unchanged: workload i
gets the seed `workload_seed(seed, i)`, PCT of depth 2 or 3, or for one in
four random scheduling, for M schedules), the per-target summary, and the
variant mode (stop a target at its first hit; say when a variant cannot
apply to a target instead of reporting it clean; a hit counts only where the
same workload is clean on the correct model over the same schedules).

Determinism: a workload's text, strategy and seeds depend only on (seed,
index, target); with `jobs > 1` workloads run in worker processes and the
results are put back in index order, so every figure but wall time is the
same for any job count. The core never imports rich: progress goes through
a callback.
"""

from __future__ import annotations

import multiprocessing
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from arch import get_arch
from emu.explore import ExploreConfig, explore
from emu.fuzz_gen import Target, generate, targets_for, workload_seed
from emu.kernel.variants import VariantError, known_variants

RANDOM_EVERY = 4  # one workload in four is explored with random scheduling


@dataclass(frozen=True)
class FuzzConfig:
    arch: str = "all"
    workloads: int = 70
    schedules: int = 50
    seed: int = 0
    jobs: int = 1
    quantum: int = 1  # guest instructions per guest step at most (emu.cpu.VCpu._slice)
    backend: str = "process"  # where the workers run: "process" (local) or "ray" (emu.explore_ray)
    address: str | None = None  # ray: the cluster (None: a local instance)
    variants: tuple[str, ...] = ()
    overrides: tuple[str, ...] = ()  # "path.py:Class" each, absolute paths
    max_steps: int = 200_000
    workdir: str = ""  # where the generated scenarios are written ("": a temporary directory)
    stop_first: bool | None = None  # None: stop each target at its first hit iff variants

    def targets(self) -> list[Target]:
        return targets_for(self.arch)

    def stops_at_first(self) -> bool:
        return bool(self.variants or self.overrides) if self.stop_first is None else self.stop_first


@dataclass(frozen=True)
class Workload:
    index: int
    target: Target
    seed: int
    strategy: str
    depth: int

    @property
    def name(self) -> str:
        return f"fuzz-{self.seed:016x}-{self.target.label}"


def workload(cfg: FuzzConfig, index: int) -> Workload:
    ts = cfg.targets()
    seed = workload_seed(cfg.seed, index)
    strategy = "random" if seed % RANDOM_EVERY == 0 else "pct"
    return Workload(index, ts[index % len(ts)], seed, strategy, 2 + (seed >> 8) % 2)


def scenario_text(cfg: FuzzConfig, w: Workload) -> str:
    """The workload as a shipped-format scenario, with the config's variants/override."""
    text = generate(w.target, w.seed)
    if cfg.variants or cfg.overrides:
        kern = ["[kernel]", "variants = [" + ", ".join(f'"{v}"' for v in cfg.variants) + "]"]
        if cfg.overrides:
            kern.append("override = [" + ", ".join(f'"{o}"' for o in cfg.overrides) + "]")
        head, rest = text.split("\n[machine]\n", 1)
        text = head + "\n" + "\n".join(kern) + "\n\n[machine]\n" + rest
    return text


@dataclass
class Outcome:
    """What exploring one workload gave (crosses process boundaries)."""

    index: int
    label: str
    name: str
    strategy: str
    schedules: int
    steps: int
    seconds: float
    step_limited: int = 0
    kind: str = ""  # "" clean; checker name, deadlock, crash, exit
    message: str = ""
    report_json: str = ""
    scenario: str = ""  # the generated TOML
    error: str = ""  # the workload could not be built (a generator or model bug)
    # variant mode: the correct model already fails this workload (kind: message),
    # so it says nothing about the variant and was not explored with it
    tainted: str = ""
    baseline_schedules: int = 0  # variant mode: schedules the correct model ran clean


def run_workload(cfg: FuzzConfig, index: int) -> Outcome:
    """Explore workload `index`. With variants (or an override), the same workload
    is first explored with the correct model over the same schedules: only if that
    is clean does the variant run, so a hit is the variant's and nothing else's."""
    w = workload(cfg, index)
    text = scenario_text(cfg, w)
    d = Path(cfg.workdir)
    d.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    baseline = 0
    if cfg.variants or cfg.overrides:
        plain = scenario_text(replace(cfg, variants=(), overrides=()), w)
        try:
            res = explore(_explore_config(cfg, w, d / f"{w.name}-correct.toml", plain, False))
        except Exception as exc:  # noqa: BLE001 - a workload that cannot even run is a finding
            return Outcome(index, w.target.label, w.name, w.strategy, 0, 0,
                           time.perf_counter() - t0, scenario=plain,
                           error=f"{type(exc).__name__}: {exc}")
        if res.failure is not None:
            return Outcome(index, w.target.label, w.name, w.strategy, 0, res.stats.steps,
                           time.perf_counter() - t0, scenario=plain,
                           tainted=f"{res.failure.kind}: {res.failure.message}")
        baseline = res.stats.schedules
    try:
        res = explore(_explore_config(cfg, w, d / f"{w.name}.toml", text, True))
    except Exception as exc:  # noqa: BLE001 - a workload that cannot even run is a finding
        return Outcome(index, w.target.label, w.name, w.strategy, 0, 0,
                       time.perf_counter() - t0, scenario=text,
                       error=f"{type(exc).__name__}: {exc}")
    st = res.stats
    out = Outcome(index, w.target.label, w.name, w.strategy, st.schedules, st.steps,
                  time.perf_counter() - t0, st.step_limited, scenario=text)
    if res.report is not None:
        out.kind, out.message = res.report.kind, res.report.message
        out.report_json = res.report.to_json()
        if res.report.kind == "clean" and res.failure is not None:
            out.kind, out.message = res.failure.kind, res.failure.message
    elif res.failure is not None:
        out.kind, out.message = res.failure.kind, res.failure.message
    out.baseline_schedules = baseline
    return out


def _explore_config(cfg: FuzzConfig, w: Workload, path: Path, text: str,
                    minimize: bool) -> ExploreConfig:
    path.write_text(text)
    return ExploreConfig(scenario=str(path.resolve()), strategy=w.strategy,
                         schedules=cfg.schedules, seed=w.seed, depth=w.depth, jobs=1,
                         max_steps=cfg.max_steps, minimize=minimize, quantum=cfg.quantum)


@dataclass
class TargetSummary:
    label: str
    workloads: int = 0
    schedules: int = 0
    steps: int = 0
    seconds: float = 0.0
    step_limited: int = 0
    failures: int = 0
    errors: int = 0
    tainted: int = 0  # variant mode: workloads the correct model fails (not run with it)
    baseline_schedules: int = 0  # variant mode: correct-model schedules, all clean
    first_hit: tuple[int, int] | None = None  # (workloads, schedules) up to and incl. the hit
    not_applicable: str = ""


@dataclass
class FuzzResult:
    config: FuzzConfig
    outcomes: list[Outcome] = field(default_factory=list)
    targets: dict[str, TargetSummary] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.kind or o.error]


def not_applicable(cfg: FuzzConfig, target: Target) -> str:
    """Why the config's variants cannot show on `target` ("" if they can)."""
    registry = known_variants()
    arch = get_arch(target.arch, **dict(target.options))
    for v in cfg.variants:
        if v not in registry:
            raise VariantError(f"unknown variant {v!r}; known: {', '.join(sorted(registry))}")
        why = registry[v].not_applicable(arch)
        if why:
            return f"{v}: {why}"
    return ""


Progress = Callable[[int, int, Outcome], None]  # (workloads done, total, last outcome)


class _ProcessTaskPool:
    """Workloads in local worker processes, with the interface of emu.explore_ray.TaskPool."""

    def __init__(self, jobs: int) -> None:
        ctx = multiprocessing.get_context("spawn")  # no Unicorn state inherited by fork
        self._pool = ProcessPoolExecutor(jobs, mp_context=ctx)
        self.width = jobs

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        return self._pool.submit(fn, *args)

    def wait(self, pending: Iterable[Future]) -> set[Future]:
        return wait(pending, return_when=FIRST_COMPLETED)[0]

    def result(self, handle: Future) -> Any:
        return handle.result()

    def close(self) -> None:
        self._pool.shutdown()


def _task_pool(cfg: FuzzConfig) -> Any:
    """Where the workloads run: a Ray cluster (imported only when asked for) or local processes."""
    if cfg.backend == "ray":
        from emu.explore_ray import TaskPool
        return TaskPool(cfg.address, cfg.jobs)
    return _ProcessTaskPool(cfg.jobs)


def fuzz(cfg: FuzzConfig, progress: Progress | None = None) -> FuzzResult:
    if cfg.workdir:
        return _fuzz(cfg, progress)
    with tempfile.TemporaryDirectory(prefix="ptemu-fuzz-") as tmp:
        res = _fuzz(replace(cfg, workdir=tmp), progress)
    res.config = cfg
    return res


def _fuzz(cfg: FuzzConfig, progress: Progress | None) -> FuzzResult:
    t0 = time.perf_counter()
    res = FuzzResult(cfg)
    ts = cfg.targets()
    for t in ts:
        res.targets[t.label] = TargetSummary(t.label, not_applicable=not_applicable(cfg, t))
    indices = [i for i in range(cfg.workloads)
               if not res.targets[ts[i % len(ts)].label].not_applicable]
    done: dict[int, Outcome] = {}
    hit: dict[str, int] = {}  # target -> lowest failing index

    def wanted(i: int) -> bool:
        label = ts[i % len(ts)].label
        return not cfg.stops_at_first() or label not in hit or i <= hit[label]

    def record(o: Outcome) -> None:
        done[o.index] = o
        # a hit is a failure the run found; a workload that did not run is an
        # error to report, not a sighting of the variant
        if (o.kind or (o.error and not cfg.stops_at_first())) \
                and (o.label not in hit or o.index < hit[o.label]):
            hit[o.label] = o.index
        if progress is not None:
            progress(len(done), len(indices), o)

    if cfg.jobs <= 1 and cfg.backend != "ray":
        for i in indices:
            if wanted(i):
                record(run_workload(cfg, i))
    else:
        pool = _task_pool(cfg)
        try:
            pending: dict[Any, int] = {}
            queue = list(indices)
            while queue or pending:
                while queue and len(pending) < 2 * pool.width:
                    i = queue.pop(0)
                    if wanted(i):
                        pending[pool.submit(run_workload, cfg, i)] = i
                if not pending:
                    break
                for handle in sorted(pool.wait(pending), key=lambda h: pending[h]):
                    pending.pop(handle)
                    record(pool.result(handle))
        finally:
            pool.close()
    # in index order, and past a target's first hit nothing counts (variant mode):
    # so the figures do not depend on which worker finished first
    res.outcomes = [done[i] for i in sorted(done) if wanted(i)]
    for o in res.outcomes:
        s = res.targets[o.label]
        if o.tainted:
            s.tainted += 1
            s.seconds += o.seconds
            continue
        s.baseline_schedules += o.baseline_schedules
        s.workloads += 1
        s.schedules += o.schedules
        s.steps += o.steps
        s.seconds += o.seconds
        s.step_limited += o.step_limited
        s.failures += bool(o.kind)
        s.errors += bool(o.error)
        if o.kind and s.first_hit is None:
            s.first_hit = (s.workloads, s.schedules)
    res.seconds = time.perf_counter() - t0
    return res
