"""A swimlane timeline of one run as a standalone SVG file.

One lane per vCPU plus one for RCU callbacks; time runs left to right, one
column per step. Each step is a box coloured by what ran: guest
instruction, hardware-walker entry read, kernel-model step, RCU callback.
The step that broke an invariant is outlined and labelled, as are the
steps that allocated or freed the frame concerned; hovering a box shows
its trace line (disassembled guest instruction, kernel routine and step).
A legend and a title say what is shown, so the picture reads without ptemu.

Long runs are cut to a window ending a little after the failing step (the
omitted beginning is stated in the picture). Pure function of its inputs:
the same trace gives the same bytes.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from html import escape
from typing import Any

COLOURS = {"guest": "#4e79a7", "walk": "#f28e2b", "kernel": "#59a14f", "rcu": "#b07aa1"}
LABELS = {"guest": "guest instruction (Unicorn)", "walk": "page-table walker entry read / A-D write",
          "kernel": "kernel-model step (mm routine)", "rcu": "RCU callback"}
MARK = "#e15759"


@dataclass
class Marker:
    step: int
    text: str
    colour: str = MARK


@dataclass
class Timeline:
    title: str
    records: list[tuple[int, str, str, Any]]  # the machine's trace records
    lanes: list[str]  # lane names in order ("cpu0", ..., "rcu")
    markers: list[Marker] = field(default_factory=list)
    violation_step: int | None = None
    violation_lane: str | None = None
    violation_text: str = ""
    subtitle: str = ""
    # (step, lane, text): short labels written under a lane for key steps
    labels: list[tuple[int, str, str]] = field(default_factory=list)
    # (step, lane, text): what a lane starts doing at a step (a service, a fault)
    segments: list[tuple[int, str, str]] = field(default_factory=list)


def _window(steps: list[int], focus: int | None, width: int) -> tuple[int, int]:
    if not steps:
        return 0, 0
    first, last = steps[0], steps[-1]
    if last - first + 1 <= width:
        return first, last
    end = last if focus is None else min(last, focus + width // 10)
    return max(first, end - width + 1), end


CHAR_W = 6.1  # px per character of the 10px monospace labels


class _Rows:
    """Label rows: each label goes to the first row where it does not overlap."""

    def __init__(self, n: int) -> None:
        self.ends = [-1e9] * n

    def place(self, x: float, text: str) -> int | None:
        w = len(text) * CHAR_W + 6
        for i, end in enumerate(self.ends):
            if x >= end:
                self.ends[i] = x + w
                return i
        return None


def render(tl: Timeline, describe: Callable[[tuple], str], max_columns: int = 400) -> str:
    """The SVG text. `describe(record)` gives a record's one-line trace text."""
    by_step: dict[tuple[int, str], tuple] = {}
    for rec in tl.records:
        step, task, kind, _ = rec
        if kind == "note":
            continue
        by_step[(step, task)] = rec  # the last record of a step in a lane wins
    steps = sorted({s for s, _ in by_step})
    lo, hi = _window(steps, tl.violation_step, max_columns)
    shown = [s for s in steps if lo <= s <= hi]
    col = {s: i for i, s in enumerate(shown)}
    cw = 6 if len(shown) > 150 else 10  # column width
    lanes = tl.lanes
    seg_h, lane_h, lab_rows = 14, 28, 3  # segment-label row, lane, access-label rows
    block = seg_h + lane_h + lab_rows * 12 + 10
    caption: list[str] = []
    if tl.violation_step is not None:
        who = f" on {tl.violation_lane}" if tl.violation_lane else ""
        caption = textwrap.wrap(f"x step {tl.violation_step}{who}: {tl.violation_text}", 150)[:4]
    left, top = 70, 104 + 16 * max(len(caption) - 1, 0)
    chart_w = max(len(shown), 1) * cw
    width = left + chart_w + 260
    height = top + len(lanes) * block + 150
    out: list[str] = []
    add = out.append
    add(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="monospace" font-size="12">')
    add(f'<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>')
    add(f'<text x="10" y="20" font-size="15" font-weight="bold">{escape(tl.title)}</text>')
    if tl.subtitle:
        add(f'<text x="10" y="38">{escape(tl.subtitle)}</text>')
    for i, line in enumerate(caption):
        add(f'<text x="10" y="{56 + 16 * i}" fill="{MARK}" font-weight="bold">'
            f'{escape(line)}</text>')
    note = f"steps {lo}..{hi} of the run, one column per step, time runs left to right"
    if steps and lo > steps[0]:
        note += f" ({sum(1 for s in steps if s < lo)} earlier steps not shown)"
    add(f'<text x="10" y="{top - 30}" fill="#555">{escape(note)}</text>')
    lane_y = {name: top + i * block + seg_h for i, name in enumerate(lanes)}
    for name, y in lane_y.items():
        add(f'<rect x="{left}" y="{y}" width="{chart_w}" height="{lane_h}" fill="#f4f4f4"/>')
        add(f'<text x="10" y="{y + lane_h // 2 + 4}" font-weight="bold">{escape(name)}</text>')
    tick = max(1, len(shown) // 10)  # step ruler every ~10% of the window
    for i in range(0, len(shown), tick):
        x = left + i * cw
        add(f'<line x1="{x}" y1="{top - 6}" x2="{x}" y2="{top - 2}" stroke="#999"/>')
        add(f'<text x="{x}" y="{top - 10}" font-size="10" fill="#777">{shown[i]}</text>')
    for (step, task), rec in sorted(by_step.items()):
        if step not in col or task not in lane_y:
            continue
        x = left + col[step] * cw
        colour = COLOURS.get(rec[2], "#999")
        add(f'<rect x="{x}" y="{lane_y[task] + 3}" width="{cw - 1}" height="{lane_h - 6}" '
            f'fill="{colour}"><title>{escape(describe(rec))}</title></rect>')
    # what each stretch of a lane is doing, above the lane
    seg_rows = {name: _Rows(1) for name in lanes}
    for step, lane, text in tl.segments:
        if step in col and lane in lane_y:
            x = left + col[step] * cw
            if seg_rows[lane].place(x, text) is not None:
                add(f'<text x="{x}" y="{lane_y[lane] - 3}" font-size="10" fill="#333">'
                    f'{escape(text)}</text>')
    # accesses to the frame concerned, below the lane
    rows = {name: _Rows(lab_rows) for name in lanes}
    for step, lane, text in sorted(tl.labels):
        if step in col and lane in lane_y:
            x = left + col[step] * cw + cw // 2
            row = rows[lane].place(x, text)
            if row is None:
                continue
            y = lane_y[lane] + lane_h + 11 + 12 * row
            add(f'<line x1="{x}" y1="{lane_y[lane] + lane_h - 3}" x2="{x}" y2="{y - 9}" '
                f'stroke="#333" stroke-width="0.5"/>')
            add(f'<text x="{x + 2}" y="{y}" font-size="10" fill="#333">{escape(text)}</text>')
    bottom = top + len(lanes) * block
    mrows = _Rows(3)
    for mk in tl.markers:
        if mk.step in col:
            x = left + col[mk.step] * cw + cw // 2
            row = mrows.place(x, mk.text) or 0
            add(f'<line x1="{x}" y1="{top - 4}" x2="{x}" y2="{bottom + 12 * row}" '
                f'stroke="{mk.colour}" stroke-dasharray="4,3"/>')
            add(f'<text x="{x + 3}" y="{bottom + 10 + 12 * row}" font-size="10" '
                f'fill="{mk.colour}">{escape(mk.text)}</text>')
    if tl.violation_step is not None and tl.violation_step not in col and shown \
            and tl.violation_step > shown[-1]:
        # a check over the final state: the run's end is the violating moment
        x = left + chart_w + 2
        add(f'<line x1="{x}" y1="{top - 4}" x2="{x}" y2="{bottom}" stroke="{MARK}" '
            f'stroke-width="3"/>')
        add(f'<text x="{x + 4}" y="{top + 10}" fill="{MARK}" font-weight="bold">'
            f'x violation (end of run, step {tl.violation_step})</text>')
    if tl.violation_step is not None and tl.violation_step in col:
        x = left + col[tl.violation_step] * cw
        lane = tl.violation_lane if tl.violation_lane in lane_y else lanes[0]
        y = lane_y[lane]
        add(f'<rect x="{x - 2}" y="{y}" width="{cw + 3}" height="{lane_h}" fill="none" '
            f'stroke="{MARK}" stroke-width="3"/>')
        add(f'<text x="{x + cw + 4}" y="{y + lane_h // 2 + 4}" fill="{MARK}" '
            f'font-weight="bold">x violation</text>')
    ly = bottom + 44  # legend
    lx = 10
    for kind in ("guest", "walk", "kernel", "rcu"):
        add(f'<rect x="{lx}" y="{ly}" width="12" height="12" fill="{COLOURS[kind]}"/>')
        add(f'<text x="{lx + 16}" y="{ly + 10}">{escape(LABELS[kind])}</text>')
        ly += 18
    add(f'<rect x="{lx}" y="{ly}" width="12" height="12" fill="none" stroke="{MARK}" '
        f'stroke-width="2"/>')
    add(f'<text x="{lx + 16}" y="{ly + 10}">the step where a checker saw the invariant break; '
        f'dashed lines: the frame concerned allocated / freed; hover a box for its step</text>')
    add("</svg>")
    return "\n".join(out) + "\n"


def timeline_for(m: Any, report: Any, lanes: Iterable[str] | None = None) -> Timeline:
    """A Timeline of the machine's last (traced) run, annotated from its report."""
    names = list(lanes) if lanes is not None else \
        [f"cpu{i}" for i in range(m.ncpus)] + ["rcu"]
    markers = [Marker(e.step, f"step {e.step}: {e.what}", "#76b7b2")
               for e in report.frame_history if e.step > 0]
    title = f"{report.kind}: {report.scenario} on {report.arch}" if report.failed \
        else f"clean run: {report.scenario} on {report.arch}"
    sub = f"schedule {report.schedule}" if len(report.schedule) <= 120 else \
        f"schedule {report.schedule[:120]}... ({report.context_switches} context switches)"
    labels = []
    if report.frame is not None:
        base = report.details.get("frame_base", report.frame)
        # an entry-level failure (torn read) names the entry: label only its accesses
        lo, hi = (base, base + m.frames.frame_size) if base == report.frame \
            else (report.frame, report.frame + 8)
        hits = []
        for step, task, kind, text in m.trace.records:
            if kind not in ("kernel", "walk") or not isinstance(text, str):
                continue
            if any(lo <= int(tok, 16) < hi for tok in _ADDR.findall(text)) \
                    or _points_into(m, text, lo, hi):
                hits.append((step, task, _short(text)))
        end = report.step if report.step is not None else 1 << 62
        hits = [h for h in hits if h[0] <= end]
        labels = [h for lane in names for h in [x for x in hits if x[1] == lane][-8:]]
    segments = []
    for step, task, kind, text in m.trace.records:
        if kind == "note" and isinstance(text, str) and \
                (text.startswith("hypercall ") or text.startswith("walk fault")):
            segments.append((step, task, _short_note(text)))
    return Timeline(title=title, records=list(m.trace.records), lanes=names, markers=markers,
                    labels=labels, segments=segments,
                    violation_step=report.step if report.failed else None,
                    violation_lane=getattr(report, "task", "") or
                    (f"cpu{report.cpu}" if report.cpu is not None else None),
                    violation_text=report.message[:600], subtitle=sub)


_ADDR = re.compile(r"\[(0x[0-9a-f]+)\]")


def _short(text: str) -> str:
    body = text.split(": ", 1)[1] if ": " in text else text
    body = body.split("  ;")[0]
    return body if len(body) <= 30 else body[:29] + "…"


_WALK_READ = re.compile(r"read (\w+) \[0x[0-9a-f]+\] = (0x[0-9a-f]+)")


def _points_into(m: Any, text: str, lo: int, hi: int) -> bool:
    """A walker read whose entry points to a table in [lo, hi) (how it got there)."""
    hit = _WALK_READ.search(text)
    if not hit:
        return False
    level, val = hit.group(1), int(hit.group(2), 16)
    try:
        a = m.arch
        if a.entry_none(level, val) or not a.entry_present(level, val):
            return False
        if level == "pmd" and a.pmd_trans_huge(val):
            return False
        return lo <= a.table_pa(level, val) < hi
    except (KeyError, ValueError, NotImplementedError):
        return False


def _short_note(text: str) -> str:
    if text.startswith("walk fault: "):
        return "fault: " + text[len("walk fault: "):].split(" at ")[0]
    body = text[len("hypercall "):] if text.startswith("hypercall ") else text
    return body if len(body) <= 40 else body[:39] + "…"


def write_svg(path: str, m: Any, report: Any) -> None:
    tl = timeline_for(m, report)

    def describe(rec: tuple) -> str:
        return m.trace.lines(m.disasm, [rec])[0].strip()
    with open(path, "w") as f:
        f.write(render(tl, describe))
