"""Checkers: each a small class catching one kind of page-table bug.

`default_checkers()` is the set every run and exploration enables unless
told otherwise; each checker module owns one invariant.
"""

from emu.check.accounting import Accounting
from emu.check.base import Checker, Violation
from emu.check.detached import DetachedTable
from emu.check.gup_pin import GupPinLost
from emu.check.lockless_sync import LocklessSync
from emu.check.reuse import StalePointer
from emu.check.secondary import SecondaryStale
from emu.check.stale_tlb import StaleTlb
from emu.check.torn import TornRead
from emu.check.uaf import UseAfterFree
from emu.check.wild import WildPointer


def default_checkers() -> list[Checker]:
    """Fresh instances of every built-in checker (they keep per-run state)."""
    return [UseAfterFree(), DetachedTable(), StalePointer(), StaleTlb(), WildPointer(), TornRead(),
            LocklessSync(), SecondaryStale(), GupPinLost(), Accounting()]


__all__ = ["Accounting", "Checker", "DetachedTable", "GupPinLost", "LocklessSync", "SecondaryStale",
           "StalePointer", "StaleTlb", "TornRead", "UseAfterFree", "Violation", "WildPointer",
           "default_checkers"]
