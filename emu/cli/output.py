"""Files the CLI writes (--json, --svg, --svg-dir, --trace-json): checked before a run.

A run can take minutes; a typo in an output path must not cost them, so
every output path is checked when the command starts: its directory must
exist, and the path must not name a directory. `-` means standard output
for text outputs (JSON). `write_text` is the one place such a file is
written.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


class OutputPathError(ValueError):
    """An output path that cannot be written: one line, exit status 2."""


def check_file(path: str | None, flag: str, stdout_ok: bool = True) -> None:
    """Refuse, before any work, an output file that could not be written."""
    if path is None:
        return
    if path == "-":
        if stdout_ok:
            return
        raise OutputPathError(f"{flag} -: this output cannot go to standard output")
    p = Path(path)
    if p.is_dir():
        raise OutputPathError(f"{flag} {path}: is a directory; give a file name")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise OutputPathError(f"{flag} {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise OutputPathError(f"{flag} {path}: not writable")


def check_dir(path: str, flag: str) -> None:
    """Refuse an output directory that does not exist or cannot be written."""
    p = Path(path)
    if not p.is_dir():
        raise OutputPathError(f"{flag} {path}: no such directory")
    if not os.access(p, os.W_OK):
        raise OutputPathError(f"{flag} {path}: not writable")


def write_text(path: str, text: str) -> None:
    """Write `text` to `path`, or to standard output for `-`."""
    if path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        Path(path).write_text(text)
    except OSError as exc:  # raced away since the check
        raise OutputPathError(f"{path}: cannot write: {exc.strerror}") from None
