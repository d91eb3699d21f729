"""ptemu's Python API: explore and replay from Python, with results as objects.

    from emu.api import explore, replay
    res = explore("my.toml", override="my_policy.py:MyPteFreeDefer", schedules=500)
    if not res.clean:
        print(res.text())            # the report, as `ptemu explore` prints it
        print(res.replay_command)    # the line that replays the failure
    res.assert_clean()               # raises PtemuFailure (an AssertionError) with both

`explore` runs the same phases as the command: the failure database's
reuse phase (saved failures of this scenario key replayed first), then the
strategy's schedules, minimisation, and saving the failure (to the
database and `.ptemu/failures/`). `override` takes "file.py:Class" specs
(relative to the current directory) or classes defined at the top level of
a module; `variants` takes variant names. `replay(path)` re-runs a saved
failure; `replay(scenario, schedule="pt1:...")` one schedule. Both return
an `Outcome`. Bad input raises the same errors the CLI turns into exit 2
(ScenarioError, VariantError, ScheduleError, AsmError), all ValueErrors.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emu.explore import ExploreConfig, ExploreResult, Stats
from emu.failure_db import DB_DIR, FailureDb, save_failure, scenario_ref
from emu.report import Report


class PtemuFailure(AssertionError):
    """`assert_clean()` on a failing outcome: the message is the report and its replay line."""


@dataclass
class Outcome:
    """What an exploration or replay found."""

    config: ExploreConfig
    report: Report | None  # None: clean
    stats: Stats | None = None  # explore only
    saved: Path | None = None  # the failure file the replay command names
    reused: bool = False  # the failure is a saved one, replayed first
    notes: list[str] = field(default_factory=list)
    result: ExploreResult | None = None

    @property
    def clean(self) -> bool:
        return self.report is None or not self.report.failed

    @property
    def exercised(self) -> bool:
        """False when a clean exploration never had a reader overlap a table's free."""
        from emu.evidence import verdict_lines
        ev = self.stats.evidence if self.stats is not None else None
        return not any(x.startswith("clean, but") for x in verdict_lines(ev, self.clean))

    @property
    def replay_command(self) -> str:
        if self.report is None:
            return ""
        if self.saved is not None:
            return f"ptemu replay {self.saved}"
        return (f"ptemu replay {self.config.scenario} --schedule {self.report.schedule}"
                + "".join(f" --variant {v}" for v in self.config.variants)
                + "".join(f" --override {o}" for o in self.config.overrides))

    def text(self) -> str:
        lines = list(self.notes)
        if self.report is not None:
            lines += self.report.lines()
        elif self.stats is not None:
            lines.append(f"clean: {self.stats.schedules} schedules, no failure")
        if self.stats is not None:
            from emu.evidence import verdict_lines
            lines += verdict_lines(self.stats.evidence, self.clean)
        if not self.clean:
            lines.append(f"replay with: {self.replay_command}")
        return "\n".join(lines)

    def assert_clean(self) -> Outcome:
        if not self.clean:
            raise PtemuFailure(self.text())
        return self


def override_spec(item: str | type) -> str:
    """"file.py:Class" for a spec or a class defined at the top level of a module file."""
    if isinstance(item, str):
        from emu.overrides import cli_overrides
        return cli_overrides([item])[0]
    if not isinstance(item, type):
        raise TypeError(f"override must be 'file.py:Class' or a class, got {item!r}")
    try:
        src = inspect.getsourcefile(item)
    except TypeError:
        src = None
    if src is None or "<locals>" in item.__qualname__ or "." in item.__qualname__:
        raise ValueError(f"override class {item.__qualname__} must be defined at the top level "
                         "of a Python file (ptemu loads it again in every worker)")
    return f"{Path(src).resolve()}:{item.__name__}"


def _as_tuple(x: str | Iterable[Any] | None) -> tuple[Any, ...]:
    if x is None:
        return ()
    if isinstance(x, (str, type)):
        return (x,)
    return tuple(x)


def explore(scenario: str | Path, *, arch: str | None = None,
            variants: str | Iterable[str] | None = None,
            override: str | type | Iterable[str | type] | None = None,
            strategy: str = "pct", schedules: int = 1000, seed: int = 0,
            depth: int | None = None, jobs: int = 1, max_steps: int = 200_000,
            db: bool | str | Path = True, save: bool = True) -> Outcome:
    """Explore `scenario` (a file or a built-in name); see the module docstring."""
    from dataclasses import replace

    from emu.explore import explore as run_explore
    from emu.explore import load_scenario
    from emu.explore_reuse import record, reuse_phase
    from emu.kernel.variants import build_kernel_class
    cfg = ExploreConfig(scenario=scenario_ref(str(scenario)), arch=arch,
                        variants=_as_tuple(variants),
                        overrides=tuple(override_spec(o) for o in _as_tuple(override)),
                        strategy=strategy, schedules=schedules, seed=seed, depth=depth,
                        jobs=jobs, max_steps=max_steps, evidence=True)
    sc = load_scenario(cfg)
    build_kernel_class(sc.variants, sc.overrides, sc.base_dir)
    if cfg.depth is None and isinstance(sc.explore.get("depth"), int):
        cfg = replace(cfg, depth=sc.explore["depth"])
    fdb = None if db is False else FailureDb(DB_DIR if db is True else db)
    if fdb is not None:
        reused = reuse_phase(cfg, fdb)
        if reused.failing is not None:
            return Outcome(cfg, reused.failing, saved=reused.failing_path, reused=True,
                           notes=reused.notes())
        notes = reused.notes()
    else:
        notes = []
    res = run_explore(cfg)
    out = Outcome(cfg, res.report, stats=res.stats, notes=notes + res.notes, result=res)
    if res.report is not None and save:
        out.saved = save_failure(res.report.to_json())
        if fdb is not None:
            record(cfg, fdb, res.report)
    return out


def replay(target: str | Path, schedule: str | None = None, *, arch: str | None = None,
           variants: str | Iterable[str] | None = None,
           override: str | type | Iterable[str | type] | None = None,
           max_steps: int = 2_000_000) -> Outcome:
    """Re-run a saved failure file, or `schedule` on a scenario; exact, step for step."""
    from emu.explore import replay_report
    from emu.failure_db import FailureDb as Db
    from emu.sched.schedule import decode
    target = Path(target)
    extra = tuple(override_spec(o) for o in _as_tuple(override))
    if target.suffix == ".json" and target.is_file() and schedule is None:
        rec = Db.load(target)
        if rec is None:
            raise ValueError(f"{target}: not a ptemu failure file")
        given = tuple(o["spec"] for o in rec.overrides
                      if Path(str(o.get("spec", "")).rpartition(":")[0]).is_absolute())
        cfg = ExploreConfig(scenario=rec.scenario, arch=arch or rec.arch,
                            variants=tuple(rec.variants), overrides=given + extra,
                            max_steps=max_steps, quantum=rec.quantum)
        schedule = rec.schedule
    else:
        if schedule is None:
            raise ValueError("replay of a scenario needs a schedule ('pt1:...')")
        cfg = ExploreConfig(scenario=scenario_ref(str(target)), arch=arch,
                            variants=_as_tuple(variants), overrides=extra, max_steps=max_steps)
    rep = replay_report(cfg, decode(schedule))
    return Outcome(cfg, rep if rep.failed else None,
                   saved=target if target.suffix == ".json" else None)
