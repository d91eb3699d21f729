"""The one-run commands: `run`, `demo`, `pgtable dump` and `list`.

Owns building one machine from a scenario and the command line, running it
under one schedule, and printing what happened (exit codes, counters, trace
hash, schedule string); the torn-pae demo's exploration is emu.cli.demo's.
"""

from __future__ import annotations

import argparse

from rich.table import Table

from emu.cli.common import (
    EXIT_FOUND,
    EXIT_INCOMPLETE,
    EXIT_OK,
    SetupFailure,
    UsageError,
    add_run_options,
    check_quantum,
    console,
)

DEMOS: dict[str, str] = {
    "touch": "touch: two vCPUs fault in 1,024 pages over several PMDs, then verify them",
    "torn-pae": "torn-pae: a torn 64-bit PMD read on x86-PAE found and drawn (torn-pae.svg), "
                "pmdp_get_lockless() clean over every interleaving, and why "
                "pmdp_get_lockless_sync() is needed when the table is freed",
}


def load_machine(args: argparse.Namespace, trace: bool = True):  # noqa: ANN201
    from emu import scenario
    from emu.check import default_checkers
    from emu.kernel.core import KernelBug
    from emu.machine import Machine
    from emu.overrides import cli_overrides
    from emu.physmem import PhysMemError
    sc = scenario.load(args.scenario)
    sc.overrides.extend(o for o in cli_overrides(getattr(args, "override", None))
                        if o not in sc.overrides)
    quantum = check_quantum(args)
    try:
        m = Machine(sc, arch=args.arch, trace=trace, checkers=default_checkers())
        for c in m.cpus:
            c.quantum = quantum
        return m
    except KernelBug as exc:
        raise SetupFailure(f"{sc.source}: kernel model failed during setup: {exc}") from None
    except PhysMemError as exc:
        raise UsageError(f"{sc.source}: machine.memory_mib: {sc.memory_mib} MiB is not enough "
                         f"to set this scenario up ({exc})") from None


def make_strategy(args: argparse.Namespace):  # noqa: ANN201
    from emu.sched import RandomStrategy, RoundRobin
    if args.strategy == "rr":
        return RoundRobin()
    return RandomStrategy(args.seed)


def run_json(m, r) -> dict:  # noqa: ANN001
    """`run --json`: the outcome of one run as data (format ptemu-run/1)."""
    from emu.overrides import override_records
    return {"format": "ptemu-run/1", "scenario": m.scenario.source, "arch": m.arch.name,
            "variants": list(m.scenario.variants),
            "overrides": override_records(m.scenario.overrides, m.scenario.base_dir),
            "steps": r.steps,
            "exit_codes": {f"cpu{c}": code for c, code in r.exit_codes.items()},
            "crashes": {f"cpu{c}": text for c, text in r.crashes.items()},
            "violation": str(r.violation) if r.violation else None,
            "deadlock": r.deadlock or None, "step_limit": bool(r.step_limit),
            "nr_ptes": m.mm.nr_ptes, "rss": dict(m.mm.rss),
            **({"processes": {mm.name: {"nr_ptes": mm.nr_ptes, "rss": dict(mm.rss)}
                              for mm in m.kernel.mms}} if len(m.kernel.mms) > 1 else {}),
            "trace_hash": r.trace_digest, "memory_hash": r.memory_digest,
            "schedule": r.schedule}


def print_result(m, r, trace_last: int) -> int:  # noqa: ANN001
    if trace_last:
        console.rule(f"last {trace_last} steps")
        for line in m.trace_lines(trace_last):
            console.print(line, markup=False)
    t = Table(title=f"{m.scenario.source} on {m.arch.name}", show_header=False)
    t.add_row("steps", str(r.steps))
    bits = 8 * m.arch.word_size
    for cpu, code in r.exit_codes.items():
        shown = f"exit({code})"
        if m.cpus[cpu].signalled:
            shown = f"exit({code}): killed by {m.cpus[cpu].signalled}"
        elif cpu in r.result_exits and code is not None:
            signed = code - (1 << bits) if code >= 1 << (bits - 1) else code
            shown = f"exit({code}): the call returned {signed}"
        t.add_row(f"cpu{cpu}", r.crashes.get(cpu) or shown)
    several = len(m.kernel.mms) > 1
    for mm in m.kernel.mms:
        who = f" [{mm.name}]" if several else ""
        t.add_row(f"nr_ptes{who}", str(mm.nr_ptes))
        t.add_row(f"rss{who}", ", ".join(f"{k}={v}" for k, v in mm.rss.items()))
    t.add_row("trace hash", r.trace_digest)
    t.add_row("memory hash", r.memory_digest)
    console.print(t)
    # the whole string, on one line however long: it is what replays the run
    console.print(f"schedule: {r.schedule}", markup=False, highlight=False, soft_wrap=True)
    if r.violation:
        console.print(f"[bold red]violation[/] {r.violation}")
    if r.deadlock:
        console.print(f"[bold red]{r.deadlock}[/]")
    bad_exit = bool(r.failed_exits())
    if r.step_limit and not (r.violation or r.deadlock or r.crashes or bad_exit):
        console.print(f"[yellow]step limit reached at step {r.steps}: the run was cut before "
                      "its end, so no end-of-run checks were made (raise --max-steps)[/]")
        return EXIT_INCOMPLETE
    return EXIT_OK if r.ok and not bad_exit else EXIT_FOUND


def check_max_steps(args: argparse.Namespace) -> None:
    if getattr(args, "max_steps", 1) is not None and args.max_steps < 1:
        raise UsageError(f"--max-steps must be at least 1, got {args.max_steps}")


# ---- commands -------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    import json

    from emu.cli.output import check_file, write_text
    check_max_steps(args)
    check_file(getattr(args, "json", None), "--json")
    m = load_machine(args)
    r = m.run(make_strategy(args), max_steps=args.max_steps)
    code = print_result(m, r, args.trace)
    if getattr(args, "json", None):
        write_text(args.json, json.dumps(run_json(m, r), indent=2, sort_keys=True, default=str) + "\n")
    return code


# which options each demo uses (the parser's dest names); others are refused
DEMO_OPTIONS: dict[str, dict[str, object]] = {
    "touch": {"arch": None, "seed": 0, "strategy": "random", "quantum": 1,
              "max_steps": 2_000_000, "trace": 20},
    "torn-pae": {"svg_dir": "."},
}


def cmd_demo(args: argparse.Namespace) -> int:
    from emu.cli.output import check_dir
    if args.name not in DEMOS:
        raise UsageError(f"unknown demo {args.name!r}; demos: {', '.join(DEMOS)}")
    uses = DEMO_OPTIONS[args.name]
    every = {k for opts in DEMO_OPTIONS.values() for k in opts}
    for dest in sorted(every - set(uses)):
        if getattr(args, dest, None) is not None:
            flag = "--" + dest.replace("_", "-")
            raise UsageError(f"demo {args.name} does not use {flag} "
                             f"(it takes: {', '.join('--' + k.replace('_', '-') for k in uses)})")
    for dest, default in uses.items():
        if getattr(args, dest, None) is None:
            setattr(args, dest, default)
    check_max_steps(args)
    if args.name == "torn-pae":
        check_dir(args.svg_dir, "--svg-dir")
        from emu.cli.demo import run_torn_pae
        console.print(f"[bold]demo[/] {DEMOS[args.name]}")
        return run_torn_pae(args)
    args.scenario = args.name
    console.print(f"[bold]demo[/] {DEMOS[args.name]}")
    return cmd_run(args)


def cmd_pgtable_dump(args: argparse.Namespace) -> int:
    from emu.pgdump import dump_rows
    from emu.scenario import eval_int
    check_max_steps(args)
    m = load_machine(args, trace=False)
    if not args.no_run:
        r = m.run(make_strategy(args), max_steps=args.max_steps)
        if not r.ok:
            console.print(f"[yellow]note: run did not finish cleanly: {r.violation or r.deadlock or r.crashes}[/]")
    names = m.names()
    start = eval_int(args.start, names, "--start", "--start") if args.start else 0
    end = eval_int(args.end, names, "--end", "--end") if args.end else 1 << m.arch.va_bits
    if start >= end:
        raise UsageError(f"--start {start:#x} is not below --end {end:#x}")
    if args.process is None:
        mm = m.mm
    elif args.process in m.process:
        mm = m.mm_named(args.process)
    else:
        raise UsageError(f"--process {args.process}: the scenario has no such process "
                         f"(its processes: {', '.join(m.process)})")
    if mm.dead:
        raise UsageError(f"process {mm.name} exited during the run and its page tables were "
                         "freed: nothing to dump (a forked child exists only once forked)")
    rows = dump_rows(m.arch, m.mem, m.frames, mm.root, start, end)
    who = f" of process {mm.name}" if len(m.process) > 1 else ""
    t = Table(title=f"{m.arch.name} page tables{who} [{start:#x}, {end:#x}) root {mm.root:#x}")
    for col in ("level", "table", "idx", "entry pa", "va", "raw", "decoded", "frame"):
        t.add_column(col)
    shown = 0
    for row in rows:
        if args.limit and shown >= args.limit:
            break
        width = 2 * m.arch.level(row.level).entry_size
        t.add_row(row.level, f"{row.table_pa:#x}", str(row.index), f"{row.entry_pa:#x}",
                  f"{row.va:#x}", f"{row.raw:0{width}x}", row.decoded, row.frame_note)
        shown += 1
    console.print(t)
    if len(rows) > shown:
        console.print(f"({len(rows) - shown} more entries; raise --limit or narrow --start/--end)")
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    from arch import arch_names, available_arch_names
    from emu import abi
    from emu.kernel.variants import VARIANTS, build_kernel_class
    from emu.scenario import builtin_names
    build_kernel_class([])  # registers the built-in variants
    what = args.what
    if what == "arches":
        avail = set(available_arch_names())
        for n in arch_names():
            console.print(f"{n}{'' if n in avail else '  (not built in yet)'}")
    elif what == "scenarios":
        for n in builtin_names():
            console.print(n)
    elif what == "variants":
        for v in sorted(VARIANTS.values(), key=lambda v: v.name):
            console.print(f"[bold]{v.name}[/]: {v.doc}")
    elif what == "hypercalls":
        for hc in sorted(abi.CALLS.values(), key=lambda h: h.nr):
            console.print(f"{hc.nr:>3} {hc.name}({hc.nargs} args): {hc.doc}")
    elif what == "versions":
        from emu.kernel.version import CHANGES, MODELLED, NEWEST, fmt
        for v in MODELLED:
            note = CHANGES.get(v, "")
            default = "  (default)" if v == NEWEST else ""
            console.print(f"{fmt(v):<5} {note}{default}".rstrip())
    return EXIT_OK




def add_parsers(sub: argparse._SubParsersAction) -> None:
    """The parsers of run, demo, pgtable and list."""
    from emu.overrides import add_override_option
    r = sub.add_parser("run", help="run a scenario once under one schedule",
                       description="Run a scenario once: real guest code on every vCPU, "
                                   "our MMU, the kernel model; prints the outcome, the "
                                   "trace hash and the schedule string. The scenario's "
                                   "[machine] gives RAM: memory_mib at 0, and on x86-pae "
                                   "highmem banks above 4 GiB with pte_placement low, "
                                   "highmem or interleave (docs/scenario-format.md).")
    add_run_options(r)
    r.add_argument("--trace", type=int, default=0, metavar="N", help="print the last N trace lines")
    r.add_argument("--json", metavar="FILE", help="write the outcome as JSON (- for stdout)")
    add_override_option(r)
    r.set_defaults(func=cmd_run)

    d = sub.add_parser("demo", help="run a built-in demonstration",
                       description="Run a built-in demonstration. Demos: " +
                                   "; ".join(DEMOS.values()))
    d.add_argument("name", help="demo name: " + ", ".join(DEMOS))
    add_run_options(d, scenario=False, defaults=False)
    d.add_argument("--trace", type=int, metavar="N", help="touch: print the last N trace lines")
    d.add_argument("--svg-dir", help="torn-pae: where it writes its SVG timelines (default .)")
    d.set_defaults(func=cmd_demo)

    pg = sub.add_parser("pgtable", help="inspect page tables",
                        description="Inspect page tables as the arch lays them out.")
    pgsub = pg.add_subparsers(dest="pgcommand", metavar="SUBCOMMAND")
    dump = pgsub.add_parser("dump", help="run a scenario, then dump its tables for a range",
                            description="Run a scenario (unless --no-run), then print every "
                                        "non-empty entry of every level for the range, with "
                                        "the frame each table lives in.")
    dump.add_argument("scenario", nargs="?", default="touch",
                      help="scenario file or built-in name (default: touch)")
    add_run_options(dump, scenario=False)
    dump.add_argument("--start", help="first virtual address (int or expression)")
    dump.add_argument("--end", help="end virtual address, exclusive")
    dump.add_argument("--limit", type=int, default=200, help="print at most this many rows (0: all)")
    dump.add_argument("--no-run", action="store_true", help="dump the tables as set up, before running")
    dump.add_argument("--process", metavar="NAME",
                      help="whose tables: a [[process]] name of the scenario (default: the first)")
    dump.set_defaults(func=cmd_pgtable_dump)

    ls = sub.add_parser("list", help="list arches, scenarios, variants, hypercalls or the "
                        "modelled Linux versions")
    ls.add_argument("what", choices=("arches", "scenarios", "variants", "hypercalls", "versions"))
    ls.set_defaults(func=cmd_list)

