"""`ptemu explore` and `ptemu replay`: the exploration front end (rich lives here).

explore: run many schedules of a scenario under a strategy (random, PCT,
exhaustive), stop at the first failure, minimise it, print the report and
the schedule string, and save the failure to .ptemu/failures/scheduleNNN.json
(exclusive create, so concurrent runs never overwrite each other).
replay: re-run one schedule (from such a file, or a scenario plus
--schedule) and print the step-by-step trace and the same report.

Exit status: 0 clean, 1 a failure was found / reproduced, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

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
    err_console,
)
from emu.cli.output import check_file, write_text
from emu.failure_db import (
    DB_DIR,
    FailureDb,
    save_failure,
    scenario_ref,
)
from emu.overrides import add_override_option, changed_since, cli_overrides, override_records


def print_report(report: Any) -> None:
    lines = report.lines()
    head = lines[0]
    if report.failed:
        console.print(f"[bold red]{report.kind}[/]: {head.split(': ', 1)[1]}", markup=True,
                      highlight=False)
    else:
        console.print(f"[bold green]{head}[/]")
    for line in lines[1:]:
        console.print(line, markup=False)


def _config(args: argparse.Namespace) -> Any:
    from emu.explore import ExploreConfig
    if args.schedules < 1:
        raise UsageError(f"--schedules must be at least 1, got {args.schedules}")
    if args.jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {args.jobs}")
    if args.depth is not None and args.depth < (1 if args.strategy == "pct" else 0):
        raise UsageError(f"--depth {args.depth} is out of range for {args.strategy}")
    if args.max_steps < 1:
        raise UsageError(f"--max-steps must be at least 1, got {args.max_steps}")
    return ExploreConfig(scenario=scenario_ref(args.scenario), arch=args.arch,
                         variants=tuple(args.variant or ()),
                         overrides=cli_overrides(args.override), strategy=args.strategy,
                         schedules=args.schedules, seed=args.seed, depth=args.depth,
                         jobs=args.jobs, max_steps=args.max_steps, por=args.por,
                         minimize=not args.no_minimize, evidence=not args.no_evidence,
                         quantum=check_quantum(args), **backend_config(args))


def _check_scenario(cfg: Any) -> Any:
    """Fail fast (exit 2) on a scenario that does not load or build; returns it."""
    from emu.explore import load_scenario
    from emu.kernel.variants import build_kernel_class
    sc = load_scenario(cfg)
    build_kernel_class(sc.variants, sc.override, sc.base_dir)
    return sc


def cmd_explore(args: argparse.Namespace) -> int:
    from emu.explore import explore
    from emu.explore_reuse import record, reuse_phase
    from emu.svg import write_svg
    check_file(args.json, "--json")
    check_file(args.svg, "--svg", stdout_ok=False)
    check_file(args.trace_json, "--trace-json")
    cfg = _config(args)
    sc = _check_scenario(cfg)
    if cfg.depth is None and isinstance(sc.explore.get("depth"), int):
        cfg = replace(cfg, depth=sc.explore["depth"])  # the scenario's own [explore] depth
    console.print(f"[bold]explore[/] {cfg.scenario}"
                  + (f" variants={','.join(cfg.variants)}" if cfg.variants else "")
                  + (f" overrides={','.join(sc.overrides)}" if sc.overrides else "")
                  + f" strategy={cfg.strategy} schedules={cfg.schedules} seed={cfg.seed}"
                  + (f" depth={cfg.depth}" if cfg.depth is not None else "")
                  + f" jobs={cfg.jobs}"
                  + (f" backend=ray{' address=' + cfg.address if cfg.address else ''}"
                     if cfg.backend == "ray" else ""), highlight=False)
    db = None if args.no_db else FailureDb(args.db or DB_DIR)
    if db is not None:
        reused = reuse_phase(cfg, db)
        for note in reused.notes():
            console.print(note, markup=False, highlight=False)
        if reused.failing is not None:
            return _report_reused(args, reused)
    cov = None
    if args.coverage:
        from emu.coverage_report import override_files, start
        if cfg.jobs > 1 or cfg.backend == "ray":
            raise UsageError("--coverage measures this process only: use --jobs 1")
        cov_files = override_files(sc.overrides, sc.base_dir)
        cov = start(cov_files)
    t0 = time.perf_counter()
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]:>8.1f} schedules/s"),
               TextColumn("[red]{task.fields[found]} failing[/]"), TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=not console.is_terminal,
                  disable=args.quiet) as prog:
        task = prog.add_task("schedules", total=cfg.schedules, rate=0.0, found=0)

        def progress(done: int, total: int, found: int) -> None:
            dt = time.perf_counter() - t0
            prog.update(task, completed=done, rate=done / dt if dt else 0.0, found=found)
        try:
            res = explore(cfg, progress)
        finally:
            cov_rows = None
            if cov is not None:
                from emu.coverage_report import per_routine
                cov_rows = per_routine(cov, cov_files)
    st = res.stats
    t = Table(show_header=False, title="exploration")
    t.add_row("schedules run", f"{st.schedules}" + (" (search exhausted)" if st.exhausted else ""))
    if st.interleavings is not None:
        t.add_row("interleavings", f"{st.interleavings} distinct up to independent steps"
                  f" ({st.pruned} executions cut by sleep sets)")
    t.add_row("steps", f"{st.steps} ({st.steps_per_s:,.0f} steps/s)")
    t.add_row("rate", f"{st.schedules_per_s:.1f} schedules/s")
    if st.k is not None:
        t.add_row("PCT", f"depth {cfg.pct_depth()}, run-length estimate k={st.k}")
    if st.step_limited:
        t.add_row("step limit", f"{st.step_limited} runs stopped at --max-steps {cfg.max_steps}")
    console.print(t)
    for note in res.notes:
        console.print(f"[yellow]note:[/] {note}")
    from emu.evidence import verdict_lines
    evidence = verdict_lines(st.evidence, res.report is None)
    unexercised = [x for x in evidence if x.startswith("clean, but")]
    if evidence:
        console.rule("what ran (evidence)")
    for line in evidence:
        if line not in unexercised:
            console.print(line, markup=False, highlight=False)
    if cov_rows is not None:
        from emu.coverage_report import summary_lines
        for line in summary_lines(cov_rows, cov_files):
            console.print(line, markup=False, highlight=False)
    out: dict[str, Any] = {"format": "ptemu-explore/1", "clean": res.report is None,
                           "config": dict(vars(cfg)), "stats": dict(vars(st)),
                           "variants": list(sc.variants),
                           "overrides": override_records(sc.overrides, sc.base_dir),
                           "minimize_runs": res.minimize_runs,
                           "report": res.report.to_dict() if res.report else None,
                           "exercised": not unexercised}
    if cov_rows is not None:
        out["coverage"] = [vars(r) for r in cov_rows]
    if res.report is None:
        if st.exhausted is False and cfg.strategy == "exhaustive":
            console.print(f"[yellow]clean within the budget of {cfg.schedules} executions; "
                          "the search was not exhausted[/]")
            if unexercised:
                console.print(f"[yellow]{unexercised[0]}[/]")
        else:
            done = st.schedules - st.step_limited
            cut = (f" ({st.step_limited} cut by the step limit and checked only as far as they "
                   f"ran; raise --max-steps)") if st.step_limited else ""
            if unexercised:
                console.print(f"[yellow]{unexercised[0]}[/] ({st.schedules} schedules; "
                              f"{done} ran to their end{cut})")
            else:
                console.print(f"[bold green]clean[/]: {st.schedules} schedules, no failure; "
                              f"{done} ran to their end{cut}")
        if args.json:
            write_text(args.json, json.dumps(out, indent=2, sort_keys=True, default=str) + "\n")
        return EXIT_OK
    rep = res.report
    console.rule("failure")
    print_report(rep)
    if res.minimize_runs:
        console.print(f"(minimised in {res.minimize_runs} runs: {rep.original_context_switches}"
                      f" -> {rep.context_switches} context switches)")
    path = save_failure(rep.to_json())
    console.print(f"schedule: {rep.schedule}", markup=False, highlight=False)
    console.print(f"saved to {path}; replay with: ptemu replay {path}", markup=False)
    if db is not None:
        dbpath, new = record(cfg, db, rep)
        console.print(f"failure database: {'new entry' if new else 'already known as'} {dbpath}"
                      " (the next explore of this scenario replays it first)", markup=False)
    if args.json:
        write_text(args.json, json.dumps(out, indent=2, sort_keys=True, default=str) + "\n")
    if args.svg and res.machine is not None:
        write_svg(args.svg, res.machine, rep)
        console.print(f"timeline written to {args.svg}", markup=False)
    if args.trace_json and res.machine is not None:
        _write_trace_json(args.trace_json, res.machine, rep)
    return EXIT_FOUND


def _report_reused(args: argparse.Namespace, reused: Any) -> int:
    """A saved failure still fails: report it, as a found one, without exploring."""
    from emu.svg import write_svg
    rep = reused.failing
    console.rule("failure (a saved failure, replayed first)")
    print_report(rep)
    console.print(f"schedule: {rep.schedule}", markup=False, highlight=False)
    console.print(f"replay with: ptemu replay {reused.failing_path}  (no new schedules were "
                  "explored; --no-db explores without the database)", markup=False)
    if args.json:
        out = {"format": "ptemu-explore/1", "clean": False, "reused": str(reused.failing_path),
               "report": rep.to_dict()}
        write_text(args.json, json.dumps(out, indent=2, sort_keys=True, default=str) + "\n")
    if args.svg:
        write_svg(args.svg, reused.machine, rep)
        console.print(f"timeline written to {args.svg}", markup=False)
    if args.trace_json:
        _write_trace_json(args.trace_json, reused.machine, rep)
    return EXIT_FOUND


def _write_trace_json(path: str, m: Any, rep: Any) -> None:
    from emu.trace_event import trace_json
    write_text(path, trace_json(m, rep))
    if path != "-":
        console.print(f"trace-event JSON (Perfetto, chrome://tracing) written to {path}",
                      markup=False)


def _dump_at(text: str | None) -> int | str | None:
    """--dump-at: a step number or `fail`, checked before the run."""
    if text is None or text == "fail":
        return text
    try:
        n = int(text, 0)
    except ValueError:
        raise UsageError(f"--dump-at {text!r}: expected a step number or 'fail'") from None
    if n < 0:
        raise UsageError(f"--dump-at {n}: a step number is at least 0")
    return n


def cmd_replay(args: argparse.Namespace) -> int:
    from emu.explore import ExploreConfig, build_machine, failure_of
    from emu.report import Report, build_report
    from emu.sched import Replay, ReplayDivergence, decode
    from emu.svg import write_svg
    check_file(args.json, "--json")
    check_file(args.svg, "--svg", stdout_ok=False)
    check_file(args.trace_json, "--trace-json")
    dump_at = _dump_at(args.dump_at)
    if args.max_steps < 1:
        raise UsageError(f"--max-steps must be at least 1, got {args.max_steps}")
    target = Path(args.target)
    recorded = None
    if target.suffix == ".json" and target.is_file():
        try:
            recorded = Report.from_json(target.read_text())
        except (ValueError, OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"{target}: {exc}") from None
        scen = Path(recorded.scenario)
        if not scen.is_absolute() and (target.parent / scen).is_file():
            recorded.scenario = str((target.parent / scen).resolve())  # a database entry
        # overrides given on the explore command line were recorded with absolute
        # paths; the scenario's own come back with the scenario
        given = tuple(o["spec"] for o in recorded.overrides
                      if Path(str(o.get("spec", "")).rpartition(":")[0]).is_absolute())
        cfg = ExploreConfig(scenario=recorded.scenario, arch=args.arch or recorded.arch,
                            variants=tuple(recorded.variants),
                            overrides=given + cli_overrides(args.override),
                            max_steps=args.max_steps,
                            quantum=args.quantum or recorded.quantum)
        schedule = args.schedule or recorded.schedule
    else:
        if not args.schedule:
            raise UsageError("replay of a scenario needs --schedule pt1:... "
                             "(or give a failure .json file)")
        cfg = ExploreConfig(scenario=scenario_ref(args.target), arch=args.arch,
                            variants=tuple(args.variant or ()),
                            overrides=cli_overrides(args.override), max_steps=args.max_steps,
                            quantum=args.quantum or 1)
        schedule = args.schedule
    choices = decode(schedule)
    sc = _check_scenario(cfg)
    if recorded is not None:
        for f in changed_since(recorded.overrides, sc.base_dir):
            err_console.print(f"ptemu: warning: override {f} changed since the failure was "
                              "saved (its sha256 differs)", markup=False)
    m = build_machine(cfg, trace=True)
    m.reset()
    strategy = Replay(choices, strict_end=not args.allow_prefix)
    try:
        r = m.run(strategy, max_steps=cfg.max_steps)
    except ReplayDivergence as exc:
        raise UsageError(f"the schedule does not fit this scenario: {exc}"
                         + ("" if args.allow_prefix else " (--allow-prefix replays a prefix "
                            "and lets round-robin finish the run)")) from None
    if strategy.pos < len(choices) and not args.allow_prefix:
        raise UsageError(f"the schedule has {len(choices)} steps but the run ended after "
                         f"{strategy.pos} (--allow-prefix accepts that)")
    f = failure_of(r)
    rep = build_report(m, r, f, original_schedule=schedule)
    lines = m.trace_lines()
    if args.trace and len(lines) > args.trace:
        console.print(f"({len(lines) - args.trace} earlier trace lines not shown; --trace 0 "
                      "shows all)", markup=False)
        lines = lines[-args.trace:]
    console.rule("trace")
    for line in lines:
        console.print(line, markup=False, highlight=False)
    console.rule("report")
    print_report(rep)
    if recorded is not None and (recorded.kind, recorded.step) != (rep.kind, rep.step):
        err_console.print(f"ptemu: warning: the file recorded {recorded.kind} at step "
                          f"{recorded.step}; this replay gives {rep.kind} at step {rep.step}",
                          markup=False)
    if args.json:
        write_text(args.json, rep.to_json())
    if args.svg:
        write_svg(args.svg, m, rep)
        console.print(f"timeline written to {args.svg}", markup=False)
    if args.trace_json:
        _write_trace_json(args.trace_json, m, rep)
    if dump_at is not None:
        from emu.state_dump import state_lines
        if dump_at == "fail" or dump_at >= r.steps:
            when = f"when the run stopped, after step {r.steps - 1}" + \
                (f" ({rep.kind})" if f is not None else " (clean)")
        else:
            m.reset()  # again, up to the step asked for
            m.run(Replay(choices, strict_end=False), max_steps=dump_at)
            when = f"before step {dump_at} runs"
        console.rule(f"state {when}")
        for line in state_lines(m, when)[1:]:
            console.print(line, markup=False, highlight=False)
    return EXIT_FOUND if f is not None else EXIT_OK


def _add_explore(sub: argparse._SubParsersAction) -> None:
    from emu.explore import STRATEGIES
    from emu.sched.footprint import POR_MODES
    p = sub.add_parser(
        "explore", help="run many schedules; report, minimise and save the first failure",
        description="Explore schedules of a scenario with a strategy: random, PCT "
                    "(probabilistic concurrency testing, bug depth --depth) or exhaustive "
                    "(depth-first over every interleaving, with partial-order reduction; "
                    "--depth bounds preemptions). Every checker is on but those the "
                    "scenario's [checkers] off names. The first failure "
                    "is minimised (fewest context switches), reported and saved under "
                    ".ptemu/failures/.",
        epilog="Exit status: 0 clean, 1 failure found, 2 bad input.")
    p.add_argument("scenario", help="scenario TOML file, or the name of a built-in one")
    p.add_argument("--arch", help="override the scenario's [machine] arch")
    p.add_argument("--variant", action="append", metavar="NAME",
                   help="add a named kernel variant (repeatable; see `ptemu list variants`)")
    add_override_option(p)
    p.add_argument("--strategy", choices=STRATEGIES, default="pct", help="default: pct")
    p.add_argument("--schedules", type=int, default=1000, metavar="N",
                   help="schedules to run (exhaustive: at most this many executions)")
    p.add_argument("--seed", type=int, default=0, help="root seed; schedule i gets its own sub-seed")
    p.add_argument("--depth", type=int, default=None, metavar="D",
                   help="PCT bug depth (default 2); exhaustive: preemption bound (default none)")
    p.add_argument("--jobs", type=int, default=1, metavar="J",
                   help="worker processes (random/pct); results do not depend on J")
    add_backend_options(p)
    add_quantum_option(p)
    p.add_argument("--por", choices=POR_MODES, default="frames",
                   help="exhaustive: partial-order reduction (default frames)")
    p.add_argument("--max-steps", type=int, default=200_000, help="step limit of one run")
    p.add_argument("--no-minimize", action="store_true", help="report the schedule as found")
    p.add_argument("--json", metavar="FILE",
                   help="write the result (stats and report) as JSON (- for stdout)")
    p.add_argument("--svg", metavar="FILE", help="write a swimlane timeline of the failure")
    p.add_argument("--trace-json", metavar="FILE",
                   help="write the failure's timeline as Chrome trace-event JSON (Perfetto)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--no-evidence", action="store_true",
                   help="do not count routines and table-free orders (about 20%% faster)")
    p.add_argument("--coverage", action="store_true",
                   help="line coverage of emu/kernel and your overrides, per routine "
                        "(needs coverage.py: pip install 'ptemu[coverage]'; --jobs 1)")
    p.add_argument("--no-db", action="store_true",
                   help="neither replay nor record failures in the failure database")
    p.add_argument("--db", metavar="DIR", help=f"the failure database (default {DB_DIR})")
    p.set_defaults(func=cmd_explore)


def _add_replay(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "replay", help="re-run one schedule; print its trace and report",
        description="Re-run one schedule exactly: from a failure file written by `explore`, "
                    "or a scenario and --schedule pt1:... Prints the step-by-step trace "
                    "and the report.",
        epilog="Exit status: 0 clean, 1 failure reproduced, 2 bad input.")
    p.add_argument("target", help="FAILURE.json, or a scenario file / built-in name")
    p.add_argument("--schedule", help="the schedule string (pt1:...)")
    p.add_argument("--arch", help="override the arch")
    p.add_argument("--variant", action="append", metavar="NAME", help="add a kernel variant")
    add_override_option(p)
    p.add_argument("--trace", type=int, default=400, metavar="N",
                   help="print the last N trace lines (0: all; default 400)")
    p.add_argument("--max-steps", type=int, default=2_000_000, help="step limit")
    add_quantum_option(p, None)
    p.add_argument("--allow-prefix", action="store_true",
                   help="accept a schedule shorter than the run (round-robin finishes it) "
                        "or longer (the rest is ignored)")
    p.add_argument("--json", metavar="FILE", help="write the report as JSON (- for stdout)")
    p.add_argument("--svg", metavar="FILE", help="write a swimlane timeline")
    p.add_argument("--trace-json", metavar="FILE",
                   help="write the timeline as Chrome trace-event JSON (open in Perfetto)")
    p.add_argument("--dump-at", metavar="STEP|fail",
                   help="print the page tables and every CPU's TLB before STEP runs, or "
                        "where the run stopped (fail)")
    p.set_defaults(func=cmd_replay)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    _add_explore(sub)
    _add_replay(sub)
