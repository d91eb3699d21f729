"""Evidence of what an exploration exercised: routines run, and races tried in both orders.

A clean verdict is only as good as what ran. `Evidence` is attached to a
machine like a checker (it never fails a run) and counts, over every
schedule:

- how often each kernel-model routine and each table-policy method was
  called, and each method of the user's own overrides (by wrapping the
  kernel's and the policy's methods on the instance, before the machine's
  snapshot, so every reset keeps them);
- for each page table retired in a run (detached: the entry pointing to it
  overwritten; or, where no detach was seen, its free queued or done),
  which other CPUs touched it before the retirement and which after it
  (in flight across the detach and the free: the window that RCU, the IPI
  sync or the policy must make safe), by kind of access: a hardware
  walker, a lockless reader (a kernel load of an entry, not under the
  table's ptl), a ptl holder (a CPU taking the table's split lock).

A pair of events seen in both orders over the runs is a race the search
tried both ways. `summary()` is plain data (it crosses process
boundaries and merges with `merge`); `verdict_lines` turns it into the
lines an explore summary prints, including "clean, but no walker ever
overlapped a free of a pte table" when nothing ever touched a table after
it was retired.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections import Counter
from typing import Any

from emu.check.base import Checker
from emu.kernel import steps as ks

# where scheduling machinery, not mm routines, lives: not counted
_MACHINERY = ("emu.kernel.core", "emu.kernel.sync", "emu.kernel.task", "emu.kernel.steps")
ACCESS_KINDS = ("walker", "lockless reader", "ptl holder")
BEFORE, AFTER = "touched before it was retired", "touched after it was retired"


def _is_override(fn: Any) -> bool:
    return getattr(fn, "__module__", "").startswith("ptemu_override_")


def _countable(fn: Any) -> bool:
    mod = getattr(fn, "__module__", "") or ""
    return inspect.isfunction(fn) and (
        _is_override(fn) or (mod.startswith("emu.kernel") and mod not in _MACHINERY))


class Evidence(Checker):
    name = "evidence"

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.override_methods: set[str] = set()  # every method the user's overrides define
        self.orders: Counter[tuple[str, str, str]] = Counter()  # (level, kind, order) -> runs
        self.retired: Counter[str] = Counter()  # level -> tables retired, over all runs
        self.runs = 0
        self._instrumented = False
        self._active = False
        self._seen: set[tuple[str, str, str]] = set()

    # ---- routine counts -------------------------------------------------------------------
    def instrument(self, kernel: Any) -> None:
        """Count calls of the kernel's and its policy's methods (call before snapshot)."""
        if self._instrumented:
            return
        self._instrumented = True
        self._wrap(kernel, "")
        self._wrap(kernel.policy, "policy.")

    def _wrap(self, obj: Any, prefix: str) -> None:
        """Give `obj` a subclass of its class whose methods count their calls.

        A subclass, not wrappers in the instance: the machine deep-copies the
        policy at every reset, and a copied instance must still run its own
        methods on itself.
        """
        cls = type(obj)
        counted: dict[str, Any] = {}
        for name in dir(cls):
            if name.startswith("__"):
                continue
            fn = inspect.getattr_static(cls, name, None)
            if not _countable(fn):
                continue
            label = f"{prefix}{name}"
            if _is_override(fn):
                owner = next((k for k in cls.__mro__ if vars(k).get(name) is fn), cls)
                label = f"override {owner.__name__}.{name}"
                self.override_methods.add(label)
            counted[name] = self._counting(fn, label)
        obj.__class__ = type(cls.__name__, (cls,), {**counted, "__module__": cls.__module__,
                                                     "__qualname__": cls.__qualname__})

    def _counting(self, fn: Any, label: str) -> Any:
        calls = self.calls

        @functools.wraps(fn)
        def counted(*a: Any, **kw: Any) -> Any:
            calls[label] += 1
            return fn(*a, **kw)
        return counted

    # ---- per-run ordering of retirements and accesses ----------------------------------------
    def attach(self, m: Any) -> None:
        self._finish()  # a run a violation stopped never reached on_run_end
        super().attach(m)
        if not self._instrumented:
            self.instrument(m.kernel)
        self._retire: dict[int, tuple[int, int | None, str]] = {}  # frame -> (step, cpu, level)
        self._before: dict[int, set[tuple[int, str]]] = {}  # frame -> {(cpu, kind)}
        self._seen = set()  # this run's (level, kind, order)
        self._active = True

    def _frame(self, pa: int) -> int | None:
        try:
            return self.m.frames.frame_base(pa)
        except Exception:  # noqa: BLE001 - outside RAM: not a table
            return None

    def _touch(self, cpu: int, pa: int, kind: str) -> None:
        f = self._frame(pa)
        if f is None:
            return
        ret = self._retire.get(f)
        if ret is None:
            self._before.setdefault(f, set()).add((cpu, kind))
        elif ret[1] != cpu:
            self._seen.add((ret[2], kind, AFTER))

    def _retired(self, cpu: int | None, pa: int) -> None:
        f = self._frame(pa)
        if f is None or f in self._retire:
            return
        try:
            level = self.m.frames.info(f).level or "page"
        except Exception:  # noqa: BLE001
            level = "page"
        self._retire[f] = (self.m.step, cpu, level)
        self.retired[level] += 1
        for c, kind in self._before.pop(f, ()):
            if c != cpu:
                self._seen.add((level, kind, BEFORE))

    def on_walker_read(self, cpu: int, pa: int, size: int, value: int, level: str) -> None:
        self._touch(cpu, pa, "walker")

    def on_kernel_load(self, cpu: int, pa: int, size: int, value: int, what: str) -> None:
        f = self._frame(pa)
        if f is None:
            return
        held = self.m.kernel.cpus[cpu].held
        if any(self._frame(getattr(h, "page", None) or 0) == f for h in held):
            return  # under the table's ptl: counted as the ptl holder
        self._touch(cpu, pa, "lockless reader")

    def on_kernel_step(self, cpu: int, op: Any) -> None:
        t = type(op)
        if t is ks.SpinLock and getattr(op.lock, "page", None):
            self._touch(cpu, op.lock.page, "ptl holder")
        elif t is ks.CallRcu and op.head is not None and self._is_table(op.head):
            self._retired(cpu, op.head)

    def _is_table(self, pa: int) -> bool:
        try:
            return bool(self.m.frames.info(pa).level)
        except Exception:  # noqa: BLE001
            return False

    def on_kernel_store(self, cpu: int, pa: int, size: int, value: int, what: str) -> None:
        """A store that overwrites an entry pointing to a table detaches that table."""
        f = self._frame(pa)
        if f is None:
            return
        try:
            lvl = self.m.frames.info(f).level
            if not lvl:
                return
            a = self.m.arch
            esz = a.level(lvl).entry_size
        except Exception:  # noqa: BLE001 - not an entry of a table we can decode
            return
        epa = pa - (pa - f) % esz
        bo = a.byteorder
        old_bytes = bytearray(self.m.mem.read(epa, esz))
        old = int.from_bytes(old_bytes, bo)
        target = self._points_to(lvl, old)
        if target is None:
            return
        off = pa - epa
        old_bytes[off:off + size] = value.to_bytes(size, bo)
        if self._points_to(lvl, int.from_bytes(old_bytes, bo)) != target:
            self._retired(cpu, target)

    def _points_to(self, level: str, val: int) -> int | None:
        a = self.m.arch
        try:
            if a.entry_none(level, val) or not a.entry_present(level, val):
                return None
            if level == "pmd" and a.pmd_trans_huge(val):
                return None
            pa = a.table_pa(level, val)
            return pa if self._is_table(pa) else None
        except Exception:  # noqa: BLE001 - a leaf level, or bits this arch cannot decode
            return None

    def on_table_free(self, cpu: int | None, pa: int, size: int, deferred: bool) -> None:
        if pa >= 0:
            self._retired(cpu, pa)

    def on_run_end(self) -> None:
        self._finish()

    def _finish(self) -> None:
        if self._active:
            self._active = False
            self.runs += 1
            for key in self._seen:
                self.orders[key] += 1

    def reset_counts(self) -> None:
        """Start counting afresh (the instrumentation stays)."""
        self.calls.clear()
        self.orders.clear()
        self.retired.clear()
        self.runs = 0

    def summary(self) -> dict[str, Any]:
        """Plain data: calls, override methods, orders, retirements, runs."""
        self._finish()  # a run stopped by a violation has no on_run_end
        return {"runs": self.runs, "calls": dict(sorted(self.calls.items())),
                "override_methods": sorted(self.override_methods),
                "retired": dict(sorted(self.retired.items())),
                "orders": [[lvl, kind, order, n] for (lvl, kind, order), n in
                           sorted(self.orders.items())]}


def merge(a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, Any] | None:
    """The evidence of two sets of runs (worker processes) as one."""
    if a is None or b is None:
        return a or b
    calls = Counter(a["calls"]) + Counter(b["calls"])
    retired = Counter(a["retired"]) + Counter(b["retired"])
    orders = Counter({tuple(o[:3]): o[3] for o in a["orders"]})
    orders.update({tuple(o[:3]): o[3] for o in b["orders"]})
    return {"runs": a["runs"] + b["runs"], "calls": dict(sorted(calls.items())),
            "override_methods": sorted(set(a["override_methods"]) | set(b["override_methods"])),
            "retired": dict(sorted(retired.items())),
            "orders": [[*k, n] for k, n in sorted(orders.items())]}


# the routines of the page-table life cycle, listed by name in a summary (the
# rest, entry accessors and accounting helpers, only in the JSON)
_LIFECYCLE = re.compile(r"free|retract|collapse|pte_offset_map|pte_unmap|gup|zap|fault|"
                        r"khugepaged|madvise|munmap|truncate|reclaim|tlb|pmdp_get_lockless_sync|"
                        r"alloc|unmap|adjust_pte|policy\.|rcu|swap|migrat|page_vma_mapped|map_pte")


def verdict_lines(ev: dict[str, Any] | None, clean: bool) -> list[str]:
    """What the runs exercised, as lines for an explore summary."""
    if not ev:
        return []
    out = []
    calls = ev["calls"]
    routines = {k: n for k, n in calls.items() if not k.startswith("override ")}
    key = sorted(k for k in routines if _LIFECYCLE.search(k))
    shown = ", ".join(f"{k} {routines[k]}" for k in key)
    helpers = len(routines) - len(key)
    out.append(f"kernel routines run over {ev['runs']} runs (calls): {shown or 'none'}"
               + (f"; and {helpers} helpers (entry access, accounting: see --json)"
                  if helpers else ""))
    for label in ev["override_methods"]:
        n = calls.get(label, 0)
        out.append(f"your override: {label} ran {n} times" if n else
                   f"your override: {label} NEVER ran: this scenario does not call it")
    orders: dict[tuple[str, str], dict[str, int]] = {}
    for lvl, kind, order, n in ev["orders"]:
        orders.setdefault((lvl, kind), {})[order] = n
    retired = ev["retired"]
    if not retired:
        out.append("no page table was ever freed or queued for freeing")
    for lvl in sorted(retired):
        out.append(f"{lvl} tables retired (freed, or their free queued): {retired[lvl]}")
        for kind in ACCESS_KINDS:
            o = orders.get((lvl, kind), {})
            b, a = o.get(BEFORE, 0), o.get(AFTER, 0)
            both = "both orders" if a and b else "one order only" if a or b else "never"
            out.append(f"  {kind} vs the free of a {lvl} table: {both} "
                       f"(before it: {b} runs, after it: {a} runs)")
    if clean:
        overlapped = any(o[2] == AFTER and o[3] for o in ev["orders"])
        if not overlapped:
            lvl = "pte" if "pte" in retired or not retired else sorted(retired)[0]
            out.append(f"clean, but no walker ever overlapped a free of a {lvl} table — this "
                       "scenario may not exercise your policy")
    return out
