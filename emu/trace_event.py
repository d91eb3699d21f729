"""A run's timeline as Chrome trace-event JSON, for Perfetto / chrome://tracing.

The format is Google's "Trace Event Format" (the JSON object form,
`{"traceEvents": [...]}`). One step is one microsecond of trace time, so
the time axis reads as step numbers. What is emitted:

- one thread ("lane") per vCPU and one for RCU callbacks (`M` metadata
  events name them);
- every traced step as a complete event (`X`, dur 1) named by what ran
  (guest instruction, walker read, kernel routine step, RCU callback),
  with the trace line in `args`;
- RCU read-side critical sections and IRQs-off windows of each vCPU as
  async spans (`b`/`e`, one id per window, so windows that overlap without
  nesting, as rcu_read_lock / local_irq_save / rcu_read_unlock /
  local_irq_restore do, still draw correctly);
- grace periods as async spans: from each call_rcu() to its callback
  running, from each synchronize_rcu() to the caller's next step;
- the violation as a global instant event (`i`, scope `g`).

Pure function of the trace records and the report: the same run gives the
same bytes.
"""

from __future__ import annotations

import json
import re
from collections import deque
from typing import Any

from emu.sched.schedule import RCU_TASK

PID = 1
_CALL_RCU = re.compile(r"call_rcu  ; (.*)$")


def _tid(lane: str) -> int:
    return RCU_TASK if lane == "rcu" else int(lane[3:]) if lane.startswith("cpu") else 99


def _routine(text: str) -> tuple[str, str]:
    """(routine, step) of a kernel trace text "routine: step"."""
    routine, _, op = text.partition(": ")
    return routine, op


def trace_events(m: Any, report: Any | None = None) -> dict[str, Any]:
    records = [r for r in m.trace.records if r[1] != "-"]
    lanes = sorted({r[1] for r in records} | {f"cpu{i}" for i in range(m.ncpus)},
                   key=lambda t: (t == "rcu", len(t), t))
    ev: list[dict[str, Any]] = [
        {"ph": "M", "name": "process_name", "pid": PID, "tid": 0,
         "args": {"name": f"ptemu {m.scenario.source} on {m.arch.name}"}}]
    for i, lane in enumerate(lanes):
        ev.append({"ph": "M", "name": "thread_name", "pid": PID, "tid": _tid(lane),
                   "args": {"name": lane if lane != "rcu" else "rcu callbacks"}})
        ev.append({"ph": "M", "name": "thread_sort_index", "pid": PID, "tid": _tid(lane),
                   "args": {"sort_index": i}})
    ids = iter(range(1, 1 << 30))
    open_windows: dict[tuple[str, str], list[int]] = {}  # (lane, kind) -> ids, innermost last
    pending_cb: dict[str, deque[tuple[int, str]]] = {}  # callback text -> (span id, lane)
    last_x: dict[str, dict[str, Any]] = {}  # lane -> its latest step event
    waiting_sync: dict[str, int] = {}  # lane -> id of a synchronize_rcu() span
    last_step = 0

    def span(ph: str, name: str, cat: str, ts: int, sid: int, lane: str) -> None:
        ev.append({"ph": ph, "name": name, "cat": cat, "id": sid, "ts": ts, "pid": PID,
                   "tid": _tid(lane)})

    for step, lane, kind, text in records:
        last_step = max(last_step, step)
        if kind == "note":
            continue
        line = m.trace.lines(m.disasm, [(step, lane, kind, text)])[0].split(None, 2)[2]
        name = kind
        if kind == "kernel" and isinstance(text, str):
            routine, op = _routine(text)
            name = op.split("  ;")[0].split("(")[0] or routine
        elif kind == "walk":
            name = "walker " + str(text).split(" [")[0]
        elif kind == "guest":
            name = "guest " + line.split(": ", 1)[-1].split()[0]
        if lane in waiting_sync:  # synchronize_rcu() returned: its grace period is over
            span("e", "grace period (synchronize_rcu)", "rcu", step, waiting_sync.pop(lane), lane)
        prev = last_x.get(lane)
        if prev is not None and prev["ts"] == step:  # one box per step and lane
            prev["args"]["trace"] += "\n" + line
        else:
            last_x[lane] = {"ph": "X", "name": name, "cat": kind, "ts": step, "dur": 1,
                            "pid": PID, "tid": _tid(lane), "args": {"step": step, "trace": line}}
            ev.append(last_x[lane])
        if kind == "rcu":
            q = pending_cb.get(str(text))
            if q:
                sid, at = q.popleft()
                span("e", "grace period (call_rcu)", "rcu", step + 1, sid, at)
            continue
        if kind != "kernel" or not isinstance(text, str):
            continue
        _, op = _routine(text)
        for opener, closer, wkind in (("rcu_read_lock()", "rcu_read_unlock()", "rcu read-side"),
                                      ("local_irq_save()", "local_irq_restore()", "IRQs off")):
            stack = open_windows.setdefault((lane, wkind), [])
            if op == opener:
                sid = next(ids)
                stack.append(sid)
                span("b", wkind, "window", step, sid, lane)
            elif op == closer and stack:
                span("e", wkind, "window", step + 1, stack.pop(), lane)
        if op == "synchronize_rcu()":
            sid = waiting_sync[lane] = next(ids)
            span("b", "grace period (synchronize_rcu)", "rcu", step, sid, lane)
        hit = _CALL_RCU.search(op)
        if hit:
            sid = next(ids)
            pending_cb.setdefault(hit.group(1), deque()).append((sid, lane))
            span("b", "grace period (call_rcu)", "rcu", step, sid, lane)
    end = last_step + 1  # windows still open when the run stopped close at its end
    for (lane, wkind), stack in sorted(open_windows.items()):
        for sid in reversed(stack):
            span("e", wkind, "window", end, sid, lane)
    for lane, sid in sorted(waiting_sync.items()):
        span("e", "grace period (synchronize_rcu)", "rcu", end, sid, lane)
    for q in pending_cb.values():
        for sid, at in q:
            span("e", "grace period (call_rcu)", "rcu", end, sid, at)
    if report is not None and report.failed and report.step is not None:
        ev.append({"ph": "i", "s": "g", "name": f"violation: {report.kind}", "cat": "violation",
                   "ts": report.step, "pid": PID, "tid": _tid(report.task or "cpu0"),
                   "args": {"message": report.message, "title": report.title,
                            "schedule": report.schedule}})
    return {"traceEvents": ev, "displayTimeUnit": "ns",
            "otherData": {"scenario": m.scenario.source, "arch": m.arch.name,
                          "time unit": "1 us = 1 scheduler step"}}


def trace_json(m: Any, report: Any | None) -> str:
    """The trace-event JSON text (the CLI writes it, `-` to stdout)."""
    return json.dumps(trace_events(m, report), indent=None, separators=(",", ":")) + "\n"
