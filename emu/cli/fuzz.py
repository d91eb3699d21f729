"""`ptemu fuzz`: random workloads on every arch, explored; the front end (rich lives here).

Prints a progress bar, every failure as `ptemu explore` reports it (saved as
.ptemu/failures/scheduleNNN.json with the generated scenario next to it as
scheduleNNN.toml, and the `ptemu replay` command), and a summary table per
arch and arch option. Exit status: 0 clean, 1 a failure was found, 2 bad
input.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from emu.cli.common import (
    EXIT_FOUND,
    EXIT_OK,
    UsageError,
    add_backend_options,
    add_quantum_option,
    backend_config,
    check_quantum,
    console,
)
from emu.cli.explore import print_report
from emu.failure_db import FAILURES_DIR, save_failure, save_new
from emu.overrides import add_override_option, cli_overrides


def save_reproducer(outcome: Any, directory: Path = FAILURES_DIR) -> tuple[Path, Path | None]:
    """The generated scenario as scheduleNNN.toml and, if there is a report,
    scheduleNNN.json pointing at it: a plain shipped-format reproducer."""
    from emu.report import Report
    if outcome.report_json:
        rep = Report.from_json(outcome.report_json)
        path = save_failure(rep.to_json(), directory)
        toml = path.with_suffix(".toml")
        toml.write_text(outcome.scenario)
        rep.scenario = str(toml.resolve())
        path.write_text(rep.to_json())
        return toml, path
    return save_new(outcome.scenario, directory, "workload", ".toml"), None


def _config(args: argparse.Namespace) -> Any:
    from emu.fuzz import FuzzConfig
    from emu.fuzz_gen import targets_for
    for flag, value, least in (("--workloads", args.workloads, 1), ("--schedules", args.schedules, 1),
                               ("--jobs", args.jobs, 1), ("--max-steps", args.max_steps, 1)):
        if value < least:
            raise UsageError(f"{flag} must be at least {least}, got {value}")
    try:
        targets_for(args.arch)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    from emu.kernel.variants import load_override
    overrides = cli_overrides(args.override)
    for spec in overrides:
        load_override(spec, Path.cwd())  # a bad class is bad input, before any run
    return FuzzConfig(arch=args.arch, workloads=args.workloads, schedules=args.schedules,
                      seed=args.seed, jobs=args.jobs, variants=tuple(args.variant or ()),
                      overrides=overrides, max_steps=args.max_steps,
                      quantum=check_quantum(args), **backend_config(args))


def cmd_fuzz(args: argparse.Namespace) -> int:
    from emu.fuzz import fuzz, not_applicable
    cfg = _config(args)
    for t in cfg.targets():
        not_applicable(cfg, t)  # an unknown variant is bad input, before any run
    mode = (f" variants={','.join(cfg.variants)}" if cfg.variants else "") + \
        (f" override={','.join(cfg.overrides)}" if cfg.overrides else "")
    console.print(f"[bold]fuzz[/] arch={cfg.arch} workloads={cfg.workloads} "
                  f"schedules={cfg.schedules} seed={cfg.seed} jobs={cfg.jobs}{mode}",
                  highlight=False)
    t0 = time.perf_counter()
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[steps]:>12,} steps"),
               TextColumn("[red]{task.fields[found]} failing[/]"), TimeElapsedColumn()]
    found = [0, 0]
    with Progress(*columns, console=console, transient=not console.is_terminal,
                  disable=args.quiet) as prog:
        task = prog.add_task("workloads", total=cfg.workloads, steps=0, found=0)

        def progress(done: int, total: int, o: Any) -> None:
            found[0] += bool(o.kind or o.error)
            found[1] += o.steps
            prog.update(task, completed=done, total=total, steps=found[1], found=found[0])
        res = fuzz(cfg, progress)
    saved = []
    for o in res.failures:
        console.rule(f"workload {o.index} ({o.label}, {o.strategy}): failure")
        toml, path = save_reproducer(o)
        if o.error:
            console.print(f"[bold red]error[/]: the workload did not run: {o.error}",
                          highlight=False)
        elif path is not None:
            from emu.report import Report
            print_report(Report.from_json(path.read_text()))
        else:
            console.print(f"[bold red]{o.kind}[/]: {o.message}", highlight=False)
        saved.append({"index": o.index, "target": o.label, "kind": o.kind or "error",
                      "message": o.message or o.error, "scenario": str(toml),
                      "failure": str(path) if path else None})
        if path is not None:
            console.print(f"scenario saved to {toml}; replay with: ptemu replay {path}",
                          markup=False)
        else:
            console.print(f"scenario saved to {toml}; run it with: ptemu explore {toml}",
                          markup=False)
    for o in res.outcomes:
        if o.tainted:
            console.print(f"[yellow]note:[/] workload {o.index} ({o.label}): the correct model "
                          f"already fails it ({escape(o.tainted)}); not run with the variant",
                          highlight=False, markup=True)
    t = Table(title=f"fuzz summary (seed {cfg.seed}, {time.perf_counter() - t0:.0f} s)")
    for col in ("arch", "workloads", "schedules", "steps", "wall s", "step-limited", "failures"):
        t.add_column(col, justify="left" if col == "arch" else "right")
    if cfg.stops_at_first():
        t.add_column("correct model fails", justify="right")
        t.add_column("first hit (workloads / schedules)", justify="right")
    for s in res.targets.values():
        row = [s.label, str(s.workloads), f"{s.schedules:,}", f"{s.steps:,}", f"{s.seconds:.1f}",
               str(s.step_limited), str(s.failures + s.errors)]
        if cfg.stops_at_first():
            row.append(str(s.tainted))
            row.append("does not apply: " + s.not_applicable if s.not_applicable else
                       f"{s.first_hit[0]} / {s.first_hit[1]:,}" if s.first_hit else
                       f"not found in {s.workloads} / {s.schedules:,}")
        t.add_row(*row)
    console.print(t)
    for s in res.targets.values():
        if s.not_applicable:
            console.print(f"[yellow]note:[/] {s.label}: not run, {s.not_applicable}",
                          highlight=False)
    if args.json:
        out = {"format": "ptemu-fuzz/1", "clean": not res.failures,
               "config": asdict(cfg), "seconds": res.seconds,
               "targets": {k: asdict(v) for k, v in res.targets.items()},
               "failures": saved}
        Path(args.json).write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    if res.failures:
        return EXIT_FOUND
    if cfg.stops_at_first() and not any(s.first_hit for s in res.targets.values()):
        console.print("[yellow]not found[/] on any arch it applies to", highlight=False)
    else:
        console.print("[bold green]clean[/]" if not cfg.stops_at_first() else "", highlight=False)
    return EXIT_OK


def _add_fuzz(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fuzz", help="random workloads over every hypercall on every arch, explored",
        description="Generate random multi-vCPU workloads (2-4 vCPUs; anon, shmem and file "
                    "VMAs of every size, populated or not, PMD-mapped or not, shared; on each "
                    "vCPU a call list over every hypercall with mostly valid, sometimes "
                    "hostile arguments) and explore each with PCT (one in four: random) for "
                    "--schedules schedules. Workload i goes to target i mod T of the targets "
                    "--arch selects: `all` is x86-pae, arm, powerpc, powerpc-hash, s390, "
                    "s390-full-page, sparc64 in turn; an arch name is that arch with each of "
                    "its options in turn. Every failure is reported and saved as a scenario "
                    "plus failure file that `ptemu replay` takes. With --variant or "
                    "--override each workload is first explored with the correct model (a "
                    "workload it fails is skipped and counted) and each target stops at its "
                    "first hit; the summary says "
                    "after how many workloads and schedules (or that the variant cannot "
                    "apply there). Results do not depend on --jobs.",
        epilog="Exit status: 0 nothing found, 1 a failure found (with --variant: the "
               "variant was found), 2 bad input.")
    p.add_argument("--arch", default="all",
                   help="all (default), an arch, or one target: x86-pae, arm, powerpc, "
                        "powerpc-hash, s390, s390-full-page, sparc64")
    p.add_argument("--workloads", type=int, default=70, metavar="N",
                   help="workloads to generate, spread over the targets (default 70)")
    p.add_argument("--schedules", type=int, default=50, metavar="M",
                   help="schedules per workload (default 50)")
    p.add_argument("--seed", type=int, default=0, help="root seed; workload i gets its own")
    p.add_argument("--jobs", type=int, default=1, metavar="J",
                   help="worker processes, one workload each at a time")
    add_backend_options(p)
    add_quantum_option(p)
    p.add_argument("--variant", action="append", metavar="V",
                   help="switch on a named kernel variant (repeatable; `ptemu list variants`)")
    add_override_option(p)
    p.add_argument("--max-steps", type=int, default=200_000, help="step limit of one run")
    p.add_argument("--json", metavar="FILE", help="write the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_fuzz)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    _add_fuzz(sub)
