"""Checkers: each a small class catching one kind of page-table bug."""

from emu.check.base import Checker, Violation

__all__ = ["Checker", "Violation"]
