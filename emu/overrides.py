"""A user's own overrides (`file.py:Class`): from the command line, and as records.

`[kernel] override` in a scenario names files relative to the scenario;
`--override FILE:CLASS` (repeatable, on run / explore / replay, and any
command that calls `add_override_option`) names them relative to the
current directory, so the command line resolves them to absolute paths
before they join the scenario's own. `override_records` describes each one
for reports, JSON and saved failures: the spec, the file relative to the
scenario where it can be, the class, and a SHA-256 of the file's bytes, so
a failure replayed against an edited policy says so.
"""

from __future__ import annotations

import argparse
import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from emu.kernel.variants import VariantError


def add_override_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--override", action="append", metavar="FILE:CLASS",
                   help="your own Kernel mixin or TablePolicy subclass from a Python file "
                        "(path relative to the current directory; repeatable; added to the "
                        "scenario's [kernel] override)")


def cli_overrides(specs: Iterable[str] | None) -> tuple[str, ...]:
    """`--override` values as absolute `path:Class` specs; a bad one is a VariantError."""
    out = []
    for spec in specs or ():
        file_part, sep, cls = spec.rpartition(":")
        if not sep or not file_part or not cls.isidentifier():
            raise VariantError(f"--override {spec!r}: expected FILE.py:CLASS")
        path = Path(file_part).resolve()
        if not path.is_file():
            raise VariantError(f"--override {spec!r}: no such file {file_part}")
        out.append(f"{path}:{cls}")
    return tuple(out)


def file_digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return ""


def _shown(path: Path, base_dir: Path) -> str:
    try:
        return os.path.relpath(path, base_dir)
    except ValueError:  # another drive
        return str(path)


def override_records(overrides: Sequence[str], base_dir: Path) -> list[dict[str, Any]]:
    """What each override is, for a report: spec, file (scenario-relative), class, sha256."""
    out = []
    for spec in overrides:
        file_part, _, cls = spec.rpartition(":")
        path = (base_dir / file_part).resolve()
        out.append({"spec": spec, "file": _shown(path, base_dir), "class": cls,
                    "sha256": file_digest(path)})
    return out


def changed_since(records: Sequence[dict[str, Any]], base_dir: Path) -> list[str]:
    """The recorded overrides whose file no longer has the recorded digest."""
    changed = []
    for rec in records:
        if not isinstance(rec, dict) or not rec.get("sha256"):
            continue
        path = (base_dir / str(rec.get("file", ""))).resolve()
        if file_digest(path) != rec["sha256"]:
            changed.append(str(rec.get("file")))
    return changed
