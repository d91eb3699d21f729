"""The failure database: failures saved per scenario key, replayed first next time.

Modelled on Hypothesis's example database and its reuse phase. A key
names what was explored: the scenario file's content, the arch, the
variants and the overrides (each with its file's SHA-256), so editing any
of them starts a new key, while moving the project does not. Layout, under
`.ptemu/db/` of the current directory:

    <key>/key.json          what the key stands for (format ptemu-db-key/1)
    <key>/<id>.json         one failure per stable title (format ptemu-failure/1,
                            plus a "db" object): the shortest schedule seen

An entry is an ordinary failure file (`ptemu replay` reads it); its
scenario path is relative to the entry's directory, so the database can
be committed or moved with the project. `explore` replays a key's entries
before it generates any schedule (`reuse`): one still failing is reported
at once; one that no longer fails is removed.

`save_failure` writes this run's report to `.ptemu/failures/scheduleNNN.json`
(exclusive create, so concurrent runs never overwrite each other): the
file the replay line names.

Schema (version 1) of an entry's "db" object: {"version": 1, "key": str,
"title": str, "scenario_sha256": str, "saved_by": "explore"}; of key.json:
{"format": "ptemu-db-key/1", "key", "scenario" (relative path or built-in
name), "scenario_sha256", "arch", "variants": [str], "overrides": [{spec,
file, class, sha256}]}. docs/failure-db.md describes every field.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emu.overrides import file_digest, override_records
from emu.report import Report

DB_DIR = Path(".ptemu") / "db"
FAILURES_DIR = Path(".ptemu") / "failures"


def scenario_ref(text: str) -> str:
    """An absolute path for a scenario file, the name itself for a built-in one."""
    p = Path(text)
    return str(p.resolve()) if p.is_file() else text


def save_new(text: str, directory: Path, stem: str, suffix: str) -> Path:
    """Write `text` to the first free <stem>NNN<suffix>; exclusive create never overwrites."""
    directory.mkdir(parents=True, exist_ok=True)
    n = 0
    while True:
        path = directory / f"{stem}{n:03d}{suffix}"
        try:
            with open(path, "x") as f:
                f.write(text)
            return path
        except FileExistsError:
            n += 1


def save_failure(report_json: str, directory: Path = FAILURES_DIR) -> Path:
    """A failure report as the first free scheduleNNN.json."""
    return save_new(report_json, directory, "schedule", ".json")


VERSION = 1
KEY_FORMAT = "ptemu-db-key/1"


@dataclass(frozen=True)
class DbKey:
    key: str
    scenario: str  # as given: a path (absolute here) or a built-in name
    scenario_sha256: str
    arch: str
    variants: tuple[str, ...]
    overrides: tuple[dict[str, Any], ...]


def scenario_digest(path: str) -> str:
    p = Path(path)
    if not p.is_file():
        from emu.scenario import SCENARIOS
        p = SCENARIOS / (path if path.endswith(".toml") else f"{path}.toml")
    return file_digest(p)


def key_for(sc: Any, arch: str) -> DbKey:
    """The key of a loaded scenario (with its variants and overrides added) on `arch`."""
    records = override_records(sc.overrides, sc.base_dir)
    digest = scenario_digest(sc.source)
    h = hashlib.sha256()
    for part in (digest, arch, *sorted(sc.variants),
                 *sorted(f"{r['class']}@{r['sha256']}" for r in records)):
        h.update(part.encode())
        h.update(b"\0")
    return DbKey(h.hexdigest()[:16], sc.source, digest, arch, tuple(sorted(sc.variants)),
                 tuple(records))


def _rel(path: str, start: Path) -> str:
    p = Path(path)
    if not p.is_absolute():
        return path  # a built-in name
    try:
        return os.path.relpath(p, start)
    except ValueError:
        return str(p)


class FailureDb:
    """Save, fetch, delete: one directory per key, one file per failure title."""

    def __init__(self, root: Path | str = DB_DIR) -> None:
        self.root = Path(root)

    def _dir(self, key: DbKey | str) -> Path:
        return self.root / (key if isinstance(key, str) else key.key)

    @staticmethod
    def entry_id(title: str) -> str:
        return hashlib.sha256(title.encode()).hexdigest()[:12]

    def save(self, key: DbKey, report: Report) -> tuple[Path, bool]:
        """Store `report` under its title; returns (path, whether it is new).

        An entry with the same title keeps the shorter schedule (fewer
        context switches, then fewer steps): the same bug is one entry.
        """
        d = self._dir(key)
        d.mkdir(parents=True, exist_ok=True)
        kpath = d / "key.json"
        if not kpath.exists():
            kpath.write_text(json.dumps({
                "format": KEY_FORMAT, "key": key.key, "scenario": _rel(key.scenario, d),
                "scenario_sha256": key.scenario_sha256, "arch": key.arch,
                "variants": list(key.variants), "overrides": list(key.overrides)},
                indent=2, sort_keys=True) + "\n")
        title = report.title or f"{report.kind}: {report.message}"
        path = d / f"{self.entry_id(title)}.json"
        new = not path.exists()
        if not new:
            old = self.load(path)
            if old is not None and (old.context_switches, old.steps) <= \
                    (report.context_switches, report.steps):
                return path, False
        data = report.to_dict()
        data["scenario"] = _rel(report.scenario, d)
        data["db"] = {"version": VERSION, "key": key.key, "title": title,
                      "scenario_sha256": key.scenario_sha256, "saved_by": "explore"}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
        tmp.replace(path)  # atomic: a reader never sees half an entry
        return path, new

    @staticmethod
    def load(path: Path) -> Report | None:
        try:
            rep = Report.from_json(path.read_text())
        except (OSError, ValueError):
            return None
        scen = Path(rep.scenario)
        if not scen.is_absolute() and (path.parent / scen).is_file():
            rep.scenario = str((path.parent / scen).resolve())
        return rep

    def fetch(self, key: DbKey | str) -> list[tuple[Path, Report]]:
        d = self._dir(key)
        out = []
        for p in sorted(d.glob("*.json")) if d.is_dir() else []:
            if p.name == "key.json":
                continue
            rep = self.load(p)
            if rep is not None:
                out.append((p, rep))
        return out

    def delete(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        d = path.parent
        if d.is_dir() and not any(p.name != "key.json" for p in d.glob("*.json")):
            shutil.rmtree(d, ignore_errors=True)

    def keys(self) -> list[dict[str, Any]]:
        out = []
        for kpath in sorted(self.root.glob("*/key.json")) if self.root.is_dir() else []:
            try:
                info = json.loads(kpath.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(info, dict) and info.get("format") == KEY_FORMAT:
                info["entries"] = [(p, r) for p, r in self.fetch(kpath.parent.name)]
                out.append(info)
        return out

    def clear(self, key: str | None = None) -> int:
        """Remove every entry (of one key, or all); returns how many."""
        dirs = [self._dir(key)] if key else [p.parent for p in self.root.glob("*/key.json")]
        n = 0
        for d in dirs:
            n += sum(1 for p in d.glob("*.json") if p.name != "key.json")
            shutil.rmtree(d, ignore_errors=True)
        return n
