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


def _window(steps: list[int], focus: int | None, width: int) -> tuple[int, int]:
    if not steps:
        return 0, 0
    first, last = steps[0], steps[-1]
    if last - first + 1 <= width:
        return first, last
    end = last if focus is None else min(last, focus + width // 10)
    return max(first, end - width + 1), end


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
    lane_h, lane_gap, left, top = 28, 46 if tl.labels else 8, 70, 86
    width = left + max(len(shown), 1) * cw + 40
    lanes = tl.lanes
    height = top + len(lanes) * (lane_h + lane_gap) + 130
    out: list[str] = []
    add = out.append
    add(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="monospace" font-size="12">')
    add(f'<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>')
    add(f'<text x="10" y="20" font-size="15" font-weight="bold">{escape(tl.title)}</text>')
    if tl.subtitle:
        add(f'<text x="10" y="38">{escape(tl.subtitle)}</text>')
    note = f"steps {lo}..{hi} of the run, one column per step, time runs left to right"
    if steps and lo > steps[0]:
        note += f" ({sum(1 for s in steps if s < lo)} earlier steps not shown)"
    add(f'<text x="10" y="56" fill="#555">{escape(note)}</text>')
    lane_y = {name: top + i * (lane_h + lane_gap) for i, name in enumerate(lanes)}
    for name, y in lane_y.items():
        add(f'<rect x="{left}" y="{y}" width="{max(len(shown), 1) * cw}" height="{lane_h}" '
            f'fill="#f4f4f4"/>')
        add(f'<text x="10" y="{y + lane_h // 2 + 4}" font-weight="bold">{escape(name)}</text>')
    # step ruler every ~10% of the window
    tick = max(1, len(shown) // 10)
    for i in range(0, len(shown), tick):
        x = left + i * cw
        add(f'<line x1="{x}" y1="{top - 6}" x2="{x}" y2="{top - 2}" stroke="#999"/>')
        add(f'<text x="{x}" y="{top - 10}" font-size="10" fill="#777">{shown[i]}</text>')
    for (step, task), rec in sorted(by_step.items()):
        if step not in col or task not in lane_y:
            continue
        x = left + col[step] * cw
        y = lane_y[task]
        colour = COLOURS.get(rec[2], "#999")
        add(f'<rect x="{x}" y="{y + 3}" width="{cw - 1}" height="{lane_h - 6}" fill="{colour}">'
            f'<title>{escape(describe(rec))}</title></rect>')
    for n, (step, lane, text) in enumerate(sorted(tl.labels)):
        if step in col and lane in lane_y:
            x = left + col[step] * cw + cw // 2
            y = lane_y[lane] + lane_h + 11 + 12 * (n % 3)
            add(f'<line x1="{x}" y1="{lane_y[lane] + lane_h - 3}" x2="{x}" y2="{y - 9}" '
                f'stroke="#333" stroke-width="0.5"/>')
            add(f'<text x="{x + 2}" y="{y}" font-size="10" fill="#333">{escape(text)}</text>')
    bottom = top + len(lanes) * (lane_h + lane_gap)
    for mk in tl.markers:
        if mk.step in col:
            x = left + col[mk.step] * cw + cw // 2
            add(f'<line x1="{x}" y1="{top - 4}" x2="{x}" y2="{bottom}" stroke="{mk.colour}" '
                f'stroke-dasharray="4,3"/>')
            add(f'<text x="{x + 3}" y="{bottom + 12}" font-size="10" fill="{mk.colour}">'
                f'{escape(mk.text)}</text>')
    if tl.violation_step is not None and tl.violation_step in col:
        x = left + col[tl.violation_step] * cw
        lane = tl.violation_lane if tl.violation_lane in lane_y else lanes[0]
        y = lane_y[lane]
        add(f'<rect x="{x - 2}" y="{y}" width="{cw + 3}" height="{lane_h}" fill="none" '
            f'stroke="{MARK}" stroke-width="3"/>')
        add(f'<text x="{x + cw + 4}" y="{y - 2}" fill="{MARK}" font-weight="bold">'
            f'{escape("violation: " + tl.violation_text)}</text>')
    # legend
    ly = bottom + 34
    lx = 10
    for kind in ("guest", "walk", "kernel", "rcu"):
        add(f'<rect x="{lx}" y="{ly}" width="12" height="12" fill="{COLOURS[kind]}"/>')
        add(f'<text x="{lx + 16}" y="{ly + 10}">{escape(LABELS[kind])}</text>')
        ly += 18
    add(f'<rect x="{lx}" y="{ly}" width="12" height="12" fill="none" stroke="{MARK}" stroke-width="2"/>')
    add(f'<text x="{lx + 16}" y="{ly + 10}">the step where a checker saw the invariant break; '
        f'dashed lines: the frame concerned allocated / freed</text>')
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
            for tok in _ADDR.findall(text):
                if lo <= int(tok, 16) < hi:
                    hits.append((step, task, _short(text)))
                    break
        end = report.step if report.step is not None else 1 << 62
        labels = [h for h in hits if h[0] <= end][-12:]
    return Timeline(title=title, records=list(m.trace.records), lanes=names, markers=markers,
                    labels=labels,
                    violation_step=report.step if report.failed else None,
                    violation_lane=f"cpu{report.cpu}" if report.cpu is not None else None,
                    violation_text=report.message[:140], subtitle=sub)


_ADDR = re.compile(r"\[(0x[0-9a-f]+)\]")


def _short(text: str) -> str:
    body = text.split(": ", 1)[1] if ": " in text else text
    body = body.split("  ;")[0]
    return body if len(body) <= 30 else body[:29] + "…"


def write_svg(path: str, m: Any, report: Any) -> None:
    tl = timeline_for(m, report)

    def describe(rec: tuple) -> str:
        return m.trace.lines(m.disasm, [rec])[0].strip()
    with open(path, "w") as f:
        f.write(render(tl, describe))
