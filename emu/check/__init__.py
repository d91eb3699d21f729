"""Checkers: each a small class catching one kind of page-table bug.

`default_checkers()` is the set every run and exploration enables unless
told otherwise; each checker module owns one invariant.
"""

from emu.check.base import Checker, Violation
from emu.check.lockless_sync import LocklessSync
from emu.check.torn import TornRead


def default_checkers() -> list[Checker]:
    """Fresh instances of every built-in checker (they keep per-run state)."""
    return [TornRead(), LocklessSync()]


__all__ = ["Checker", "LocklessSync", "TornRead", "Violation", "default_checkers"]
