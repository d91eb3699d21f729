"""A deliberately wrong pte_free_defer() policy, as a porter might first write it.

"My arch flushes remote TLBs, so once the flush is done nobody can reach the
table: free it right away." That is wrong: pte_offset_map() users and
GUP-fast hold a table under rcu_read_lock() / IRQs off, not through the
TLB, and the flush neither waits for nor stops them. The scenario
guest/scenarios/porter_example.toml plugs this policy in with

    [kernel]
    override = "../porter/flush_then_free.py:FlushThenFree"

and `ptemu explore` reports the use after free with its schedule.

A porter's own policy is a subclass of emu.kernel.pgalloc.TablePolicy with
generator methods alloc/free/free_defer (yield step messages from
emu.kernel.steps where the real code touches shared state or synchronises).
"""

from __future__ import annotations

from emu.kernel import steps as s
from emu.kernel.pgalloc import TablePolicy


class FlushThenFree(TablePolicy):
    name = "flush-then-free"

    def free_defer(self, k, mm, pa, level):  # noqa: ANN001, ANN201
        """Flush every CPU's TLB, then free the table at once (no grace period)."""
        yield s.TlbFlushRange(0, 1 << k.arch.va_bits)
        yield from self.free(k, mm, pa, level)
