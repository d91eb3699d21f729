"""Violation reports as data: built from a replayed run, shown as text, saved as JSON.

A report names what failed (the checker, or deadlock / crash / bad exit),
the frame concerned and its whole life (allocated by..., freed by..., at
step...), the step that broke the invariant, the last steps of every task
(guest instructions disassembled by Capstone, kernel steps by routine name,
walker entry reads), and the schedule string that replays it, before and
after minimisation. `to_json()` / `from_json()` round-trip it; `lines()`
renders it as plain text (the CLI adds colour, this module never does).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from emu.cpu import Mode
from emu.overrides import override_records
from emu.physmem import PhysMemError
from emu.sched.schedule import context_switches, decode
from emu.trace import describe_op

if TYPE_CHECKING:
    from emu.explore_config import ExploreConfig
    from emu.machine import Machine, RunResult

FORMAT = "ptemu-failure/1"
LAST_STEPS = 12  # per task


# what replay reads from a failure file must have the right type, or be refused
_FIELD_TYPES: dict[str, str] = {
    "kind": "str", "message": "str", "scenario": "str", "arch": "str", "variants": "list[str]",
    "schedule": "str", "original_schedule": "str", "strategy": "str", "step": "int|None",
    "cpu": "int|None", "task": "str", "title": "str", "frame": "int|None", "seed": "int", "lanes": "dict",
    "details": "dict", "frame_history": "list", "steps": "int", "overrides": "list[dict]",
    "quantum": "int",
}


def _is(value: Any, want: str) -> bool:
    if want == "list[str]":
        return isinstance(value, list) and all(isinstance(x, str) for x in value)
    if want == "list[dict]":
        return isinstance(value, list) and all(isinstance(x, dict) for x in value)
    if want.endswith("|None") and value is None:
        return True
    base = want.removesuffix("|None")
    typ = {"str": str, "int": int, "dict": dict, "list": list}[base]
    return isinstance(value, typ) and not (typ is int and isinstance(value, bool))


@dataclass
class FrameEventRow:
    step: int
    cpu: int | None
    what: str
    by: str = ""  # the kernel routines that did it, innermost first ("a < b < c")


@dataclass
class Report:
    kind: str  # checker name, "deadlock", "crash", "exit"; "clean" if nothing failed
    message: str
    scenario: str
    arch: str
    variants: list[str]
    overrides: list[dict[str, Any]] = field(default_factory=list)  # spec, file, class, sha256
    strategy: str = "replay"
    seed: int = 0
    depth: int | None = None
    quantum: int = 1  # guest instructions per guest step at most: replays need the same
    index: int | None = None  # which schedule of the exploration failed
    step: int | None = None  # the step that broke it
    cpu: int | None = None
    task: str = ""  # the task whose step broke it: "cpu1", "rcu"; "" for an end-of-run check
    title: str = ""  # kind and message without addresses or counts: the same bug, the same title
    breaking_step: str = ""
    frame: int | None = None
    frame_state: str = ""
    frame_history: list[FrameEventRow] = field(default_factory=list)
    lanes: dict[str, list[str]] = field(default_factory=dict)  # task -> its last steps
    schedule: str = ""  # the (minimised) schedule that reproduces it
    original_schedule: str = ""  # as the strategy found it
    context_switches: int = 0
    original_context_switches: int = 0
    steps: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.kind != "clean"

    # ---- JSON --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["format"] = FORMAT
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, default=str) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Report:
        if d.get("format") != FORMAT:
            raise ValueError(f"not a ptemu failure file (format {d.get('format')!r}, "
                             f"expected {FORMAT!r})")
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        for key, want in _FIELD_TYPES.items():
            if key in d and not _is(d[key], want):
                raise ValueError(f"malformed ptemu failure file: {key}: expected {want}, "
                                 f"got {type(d[key]).__name__}")
        for key in ("scenario", "schedule"):
            if key not in d:
                raise ValueError(f"malformed ptemu failure file: {key}: missing")
        rows = d.get("frame_history", [])
        if not all(isinstance(e, dict) for e in rows):
            raise ValueError("malformed ptemu failure file: frame_history: expected objects")
        d["frame_history"] = [FrameEventRow(**e) for e in rows]
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> Report:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {exc}") from None
        except RecursionError:
            raise ValueError("not a ptemu failure file (JSON nested too deeply)") from None
        if not isinstance(d, dict):
            raise ValueError("not a ptemu failure file (not a JSON object)")
        try:
            return cls.from_dict(d)
        except TypeError as exc:
            raise ValueError(f"malformed ptemu failure file: {exc}") from None

    # ---- text --------------------------------------------------------------------
    def lines(self) -> list[str]:
        out = []
        if not self.failed:
            out.append(f"clean: {self.message}")
        else:
            out.append(f"{self.kind}: {self.message}")
        out.append(f"scenario {self.scenario} on {self.arch}"
                   + (f", variants {', '.join(self.variants)}" if self.variants else ""))
        for o in self.overrides:
            out.append(f"override {o.get('file')}:{o.get('class')} "
                       f"(sha256 {str(o.get('sha256', ''))[:12]})")
        if self.index is not None:
            depth = f", depth {self.depth}" if self.depth is not None else ""
            out.append(f"found by {self.strategy} (seed {self.seed}{depth}) at schedule #{self.index}")
        if self.title:
            out.append(f"title: {self.title}")
        if self.step is not None:
            who = self.task or (f"cpu{self.cpu}" if self.cpu is not None else "")
            out.append(f"broken at step {self.step}" + (f" on {who}" if who else "")
                       + f": {self.breaking_step}")
        if self.frame is not None:
            base = self.details.get("frame_base", self.frame)
            where = f"{self.frame:#x} in frame {base:#x}" if base != self.frame else f"frame {base:#x}"
            out.append(f"{where} (now {self.frame_state}), its life:")
            for e in self.frame_history:
                who = f"cpu{e.cpu}" if e.cpu is not None else "setup"
                out.append(f"  step {e.step:>6}  {who:<6} {e.what}" + (f" (by {e.by})" if e.by else ""))
        for task, rows in self.lanes.items():
            out.append(f"last {len(rows)} steps of {task}:")
            out.extend(f"  {row}" for row in rows)
        out.append(f"schedule ({self.context_switches} context switches, {self.steps} steps): "
                   f"{self.schedule}")
        if self.original_schedule and self.original_schedule != self.schedule:
            orig = self.original_schedule
            if len(orig) > 160:
                orig = orig[:160] + f"... ({len(orig)} chars)"
            out.append(f"as found ({self.original_context_switches} context switches): {orig}")
        return out


# ---- building a report from a finished run -----------------------------------------------

# where a message without a frame field names one: the allocator's "double
# free of frame 0x..", the kernel model's "freeing a pte table at 0x.."
_FRAME_RE = re.compile(r"(?:frame|table at|page at) (0x[0-9a-f]+)")


def _frame_of(m: Machine, r: RunResult) -> int | None:
    v = r.violation
    if v is not None and v.frame is not None:
        return v.frame
    text = v.message if v is not None else ""
    hit = _FRAME_RE.search(text)
    return int(hit.group(1), 16) if hit else None


_ADDRESS = re.compile(r"\b0x[0-9a-f]+\b")
_NUMBER = re.compile(r"\b\d+\b")
_CPU = re.compile(r"\bcpu\d+\b")


def stable_title(kind: str, message: str) -> str:
    """What failed, without addresses, CPU numbers or counts (as syzkaller titles are):
    the same bug found by two schedules, or on two machines, gets the same title."""
    text = _CPU.sub("cpuN", message)
    text = _ADDRESS.sub("ADDR", text)
    text = _NUMBER.sub("N", text)
    text = re.split(r"; |\. ", text, maxsplit=1)[0]  # the first sentence says what
    text = re.sub(r" \([^()]*\bstep N\b[^()]*\)", "", text)  # when it happened is not what
    return f"{kind}: {text[:120].rstrip()}"


def _breaking_step(m: Machine, step: int | None, cpu: int | None) -> str:
    """The step at which the run failed, as a trace line, or the step in flight."""
    if step is None:
        return ""
    if step >= m.step - 1 and not any(rec[0] == step and rec[2] != "note"
                                      for rec in m.trace.records[-64:]):
        return "the end of the run (a check over the whole final state)"
    task = f"cpu{cpu}" if cpu is not None else None
    recs = [rec for rec in m.trace.records if rec[0] == step
            and (task is None or rec[1] == task) and rec[2] != "note"]
    if recs:
        return m.trace.lines(m.disasm, recs[-1:])[0].split(None, 2)[2]
    if cpu is None or not 0 <= cpu < len(m.cpus):
        return ""
    c = m.cpus[cpu]
    if c.mode is Mode.KERNEL and c.task is not None:
        op = c.task.last_op if c.task.last_op is not None else c.task.pending
        return f"kernel {c.task.name}: {describe_op(op)}"
    if c.mode is Mode.WALK and c.walk_msg is not None:
        msg = c.walk_msg
        return f"walk {type(msg).__name__} {msg.level} [{msg.pa:#x}]"
    return f"guest {m.disasm(task, c.pc)}"


def _crash_step(m: Machine, cpu: int, default: int | None) -> int | None:
    """The step at which `cpu` crashed (the run went on with the other CPUs)."""
    task = f"cpu{cpu}"
    for step, t, kind, text in reversed(m.trace.records):
        if t == task and kind == "note" and isinstance(text, str) and text.startswith("crashed"):
            return step
    return default


def _freed_by(m: Machine, step: int, frame: int) -> str:
    """"routine < caller < ..." from the machine's note of a table free at `step`."""
    lo, hi = frame, frame + m.frames.frame_size
    for s, _, kind, text in m.trace.records:
        if s == step and kind == "note" and isinstance(text, str) and text.startswith("table "):
            addr, _, by = text[len("table "):].partition(" freed by ")
            try:
                if by and lo <= int(addr, 16) < hi:
                    return by
            except ValueError:
                continue
    return ""


def _lanes(m: Machine, last: int) -> dict[str, list[str]]:
    by_task: dict[str, list] = {}
    for rec in m.trace.records:
        if rec[2] == "note" and rec[1] == "-":
            continue
        by_task.setdefault(rec[1], []).append(rec)
    order = sorted(by_task, key=lambda t: (t == "rcu", len(t), t))
    return {t: m.trace.lines(m.disasm, by_task[t][-last:]) for t in order}


def build_report(m: Machine, r: RunResult, failure: tuple[str, str] | None,
                 cfg: ExploreConfig | None = None, index: int | None = None,
                 original_schedule: str = "", last: int = LAST_STEPS) -> Report:
    kind, message = failure if failure is not None else ("clean", "no checker fired, no deadlock, "
                                                         "no crash, every program exited 0")
    v = r.violation
    step = v.step if v is not None else (r.steps - 1 if failure is not None else None)
    cpu = v.cpu if v is not None else None
    if kind == "crash":
        cpu = min(r.crashes)
        step = _crash_step(m, cpu, step)
    task = "rcu" if v is not None and v.details.get("task") == "rcu" else \
        (f"cpu{cpu}" if cpu is not None else "")
    frame = _frame_of(m, r)
    history: list[FrameEventRow] = []
    state = ""
    if frame is not None:
        try:
            fi = m.frames.info(frame)
        except PhysMemError:
            fi = None
        if fi is not None:
            details_base = m.frames.frame_base(frame)
            state = fi.state.value + (f" {fi.level} table" if fi.level else "") \
                + f", generation {fi.generation}"
            history = [FrameEventRow(e.step, e.cpu, e.what, _freed_by(m, e.step, details_base))
                       for e in fi.history]
    orig = original_schedule or r.schedule
    details = dict(v.details) if v is not None else {}
    if frame is not None and history:
        details["frame_base"] = details_base
    return Report(
        kind=kind, message=message, scenario=m.scenario.source, arch=m.arch.name,
        variants=list(m.scenario.variants),
        overrides=override_records(m.scenario.overrides, m.scenario.base_dir),
        strategy=cfg.strategy if cfg else "replay",
        seed=cfg.seed if cfg else 0, depth=cfg.depth if cfg else None,
        quantum=m.cpus[0].quantum if m.cpus else 1, index=index,
        step=step, cpu=cpu, task=task,
        title=stable_title(kind, message) if failure is not None else "", breaking_step=_breaking_step(m, step, cpu), frame=frame,
        frame_state=state, frame_history=history, lanes=_lanes(m, last), schedule=r.schedule,
        original_schedule=orig, context_switches=context_switches(decode(r.schedule)),
        original_context_switches=context_switches(decode(orig)), steps=r.steps,
        details=details)
