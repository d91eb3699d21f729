"""`explore --coverage`: line coverage of the kernel model and the user's overrides, per routine.

Uses coverage.py's API (an optional dependency: `pip install 'ptemu[coverage]'`)
around the exploration, in this process (so `--jobs 1`). Each routine is a
function or method found by parsing the source: its statements that ran
over the statements it has. Lines only, no branches: what the question "did
my code run?" needs.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KERNEL_DIR = Path(__file__).resolve().parent / "kernel"


class CoverageUnavailable(ValueError):
    """coverage.py is not installed: one line, exit status 2."""


@dataclass(frozen=True)
class RoutineCoverage:
    file: str
    routine: str  # "Class.method" or "function"
    line: int
    ran: int  # statements that ran
    statements: int

    @property
    def percent(self) -> float:
        return 100.0 * self.ran / self.statements if self.statements else 100.0


def override_files(overrides: Iterable[str], base_dir: Path) -> list[Path]:
    return [(base_dir / spec.rpartition(":")[0]).resolve() for spec in overrides]


def start(extra_files: Iterable[Path] = ()) -> Any:
    """A started coverage.py measurement of emu/kernel and `extra_files`."""
    try:
        import coverage
    except ImportError:
        raise CoverageUnavailable("--coverage needs coverage.py: pip install 'ptemu[coverage]'"
                                  ) from None
    include = [str(KERNEL_DIR / "*.py"), *(str(p) for p in extra_files)]
    cov = coverage.Coverage(data_file=None, include=include, branch=False)
    cov.start()
    return cov


def _routines(tree: ast.AST) -> list[tuple[str, int, int]]:
    out: list[tuple[str, int, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append((f"{prefix}{child.name}", child.lineno, child.end_lineno or child.lineno))
    visit(tree, "")
    return out


def per_routine(cov: Any, extra_files: Iterable[Path] = ()) -> list[RoutineCoverage]:
    """Stop measuring and attribute the statements that ran to their routines."""
    cov.stop()
    files = sorted(KERNEL_DIR.glob("*.py")) + list(extra_files)
    out = []
    for path in files:
        try:
            _, statements, _, missing, _ = cov.analysis2(str(path))
            tree = ast.parse(path.read_text())
        except Exception:  # noqa: BLE001 - a file coverage.py never saw, or unparsable
            continue
        stmts, miss = set(statements), set(missing)
        shown = path.name if path.parent == KERNEL_DIR else str(path)
        for name, lo, hi in _routines(tree):
            # a routine's statements: its own lines, less those of nested routines
            own = {n for n in stmts if lo < n <= hi}
            if not own:
                continue
            out.append(RoutineCoverage(shown, name, lo, len(own - miss), len(own)))
    return out


def summary_lines(rows: list[RoutineCoverage], override_paths: Iterable[Path] = ()) -> list[str]:
    total = sum(r.statements for r in rows)
    ran = sum(r.ran for r in rows)
    overrides = {str(p) for p in override_paths}
    lines = [f"coverage: {ran} of {total} statements of emu/kernel and your overrides ran "
             f"({100.0 * ran / total if total else 0:.0f}%); per routine (ran/statements):"]
    for r in sorted(rows, key=lambda r: (r.file not in overrides, r.file, r.line)):
        mark = "  NEVER RAN" if r.ran == 0 else ""
        lines.append(f"  {r.file}:{r.line} {r.routine} {r.ran}/{r.statements}{mark}")
    return lines
