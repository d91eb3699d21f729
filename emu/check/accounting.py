"""Accounting at quiescence: when a run ends, the kernel model's books
(nr_ptes, rss, folio mapcounts and refcounts, page-table frame states) must
match what the page tables themselves say (emu.kernel.audit).

A run that ends with RCU callbacks still queued is made quiescent first:
every vCPU has stopped, so the machine runs them (an rcu_barrier()); one that
cannot be is reported, never skipped in silence. Runs cut by the step limit
or ending in a deadlock are not quiescent and are not audited.
"""

from __future__ import annotations

from emu.check.base import Checker
from emu.kernel.audit import safe_audit


class Accounting(Checker):
    name = "accounting"

    def on_run_end(self) -> None:
        k = self.m.kernel
        if k.rcu.callbacks and not self.m.drain_rcu():
            # say so rather than pass silently: the books cannot be closed
            raise self.fail(f"accounting skipped: {len(k.rcu.callbacks)} RCU callbacks are "
                            "still queued at the end of the run and no grace period can end")
        problems = safe_audit(k)
        if problems:
            raise self.fail("accounting broken at quiescence: " + "; ".join(problems[:4])
                            + (f" (+{len(problems) - 4} more)" if len(problems) > 4 else ""))
