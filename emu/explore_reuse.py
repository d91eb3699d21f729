"""The reuse phase of an exploration: replay the saved failures of its key first.

As Hypothesis replays its database before generating: a failure found
once is tried again first, so a bug still present is reported at once,
with the same schedule, however many schedules the search would need to
find it again. An entry that no longer fails (the bug was fixed) is
removed. `record` saves a new failure under the key. The core never
prints: the outcome says what happened, and the caller says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from emu.explore import ExploreConfig, build_machine, load_scenario, replay_report
from emu.explore_machine import ExploreMachine
from emu.failure_db import DbKey, FailureDb, key_for
from emu.report import Report
from emu.sched.schedule import ScheduleError, decode


@dataclass
class Reused:
    key: DbKey
    # (entry path, its title, whether it still fails)
    replayed: list[tuple[Path, str, bool]] = field(default_factory=list)
    failing: Report | None = None  # the first saved failure that still fails
    failing_path: Path | None = None
    machine: ExploreMachine | None = None  # traced, after replaying `failing`

    def notes(self) -> list[str]:
        out = []
        for path, title, still in self.replayed:
            out.append(f"reuse: replayed saved failure {path} first: "
                       + ("still fails" if still else "no longer fails (removed from the database)")
                       + f" [{title}]")
        return out


def db_key(cfg: ExploreConfig) -> DbKey:
    sc = load_scenario(cfg)
    return key_for(sc, cfg.arch or sc.arch)


def reuse_phase(cfg: ExploreConfig, db: FailureDb) -> Reused:
    out = Reused(db_key(cfg))
    m = None
    for path, saved in db.fetch(out.key):
        try:
            choices = decode(saved.schedule)
        except ScheduleError:
            db.delete(path)
            continue
        if m is None:
            m = build_machine(cfg)
        rep = replay_report(cfg, choices, m=m)
        rep.original_schedule = saved.original_schedule or saved.schedule
        still = rep.failed
        out.replayed.append((path, saved.title or saved.kind, still))
        if still:
            rep.index = saved.index
            out.failing, out.failing_path, out.machine = rep, path, m
            break  # report the first; the others wait for the next run
        db.delete(path)
    return out


def record(cfg: ExploreConfig, db: FailureDb, report: Report) -> tuple[Path, bool]:
    return db.save(db_key(cfg), report)
