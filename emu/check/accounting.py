"""Accounting at quiescence: when a run ends, the kernel model's books
(nr_ptes, rss, folio mapcounts and refcounts, page-table frame states) must
match what the page tables themselves say (emu.kernel.audit)."""

from __future__ import annotations

from emu.check.base import Checker
from emu.kernel.audit import safe_audit


class Accounting(Checker):
    name = "accounting"

    def on_run_end(self) -> None:
        k = self.m.kernel
        if k.rcu.callbacks:
            return  # not quiescent: a grace period is still running
        problems = safe_audit(k)
        if problems:
            raise self.fail("accounting broken at quiescence: " + "; ".join(problems[:4])
                            + (f" (+{len(problems) - 4} more)" if len(problems) > 4 else ""))
