"""What every ptemu command shares: the consoles, exit statuses, input errors
and the one-run options.

Exit status: 0 clean, 1 a violation / deadlock / crash was found, 2 bad
input (malformed scenario, unknown arch or variant, bad schedule string),
3 a run cut by its step limit. Bad input is one line on stderr, never a
traceback.
"""

from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.table import Table

EXIT_OK, EXIT_FOUND, EXIT_USAGE, EXIT_INCOMPLETE = 0, 1, 2, 3

class _Console(Console):
    """rich on a terminal; plain lines when piped (no borders, no hard wrap, no colour)."""

    def print(self, *objects, **kw) -> None:  # noqa: ANN002, ANN003 - as rich's
        if not self.is_terminal:
            for obj in objects:
                if isinstance(obj, Table):
                    obj.box = None
                    obj.title_justify = "left"
            kw.setdefault("soft_wrap", True)
        super().print(*objects, **kw)

    def rule(self, title: str = "", **kw) -> None:  # noqa: ANN003
        if self.is_terminal:
            super().rule(title, **kw)
        else:
            self.print(f"-- {title} --" if title else "--", markup=False, highlight=False)


# piped: wide enough that no table cell wraps; soft_wrap keeps every line whole
console = _Console(highlight=False, width=None if sys.stdout.isatty() else 10_000)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

class UsageError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


def input_errors() -> tuple[type[BaseException], ...]:
    from arch import UnknownArch
    from emu.cli.output import OutputPathError
    from emu.coverage_report import CoverageUnavailable
    from emu.explore_ray import RayUnavailable
    from emu.kernel.variants import VariantError
    from emu.scenario import ScenarioError
    from emu.sched.schedule import ScheduleError
    from guest.asm import AsmError
    return (UsageError, ScenarioError, UnknownArch, VariantError, ScheduleError, AsmError,
            OutputPathError, CoverageUnavailable, RayUnavailable)



QUANTUM_HELP = ("guest slices: a guest step runs up to N instructions, ending before the "
                "first load or store (each still a step of its own), trap or TLB miss "
                "(default 1: one instruction per step; see docs/schedules.md)")


def add_quantum_option(p: argparse.ArgumentParser, default: object = 1) -> None:
    """--quantum: guest instructions per guest step at most (run, explore, fuzz, replay)."""
    p.add_argument("--quantum", type=int, default=default, metavar="N", help=QUANTUM_HELP)


def check_quantum(args: argparse.Namespace) -> int:
    q = getattr(args, "quantum", None)
    if q is not None and q < 1:
        raise UsageError(f"--quantum must be at least 1, got {q}")
    return 1 if q is None else q


def add_backend_options(p: argparse.ArgumentParser) -> None:
    """--backend and --address: where the --jobs workers run (explore, fuzz)."""
    p.add_argument("--backend", choices=("process", "ray"), default="process",
                   help="process: --jobs local worker processes (default); ray: Ray workers "
                        "(pip install 'ptemu[ray]'; --jobs of them, default one per CPU of the "
                        "cluster). The same seed gives the same schedules and the same first "
                        "failure on either")
    p.add_argument("--address", metavar="ADDR",
                   help="--backend ray: the cluster to use (e.g. ray://head:10001, or auto "
                        "on a cluster node; default: start a local Ray instance)")


def backend_config(args: argparse.Namespace) -> dict[str, object]:
    """The config fields of --backend/--address; --address without ray is bad input."""
    if args.address and args.backend != "ray":
        raise UsageError("--address is for --backend ray")
    return {"backend": args.backend, "address": args.address}


class SetupFailure(Exception):
    """The kernel model failed while building the scenario (a variant's bug at setup)."""


def add_run_options(p: argparse.ArgumentParser, scenario: bool = True, defaults: bool = True) -> None:
    """The one-run options; `defaults=False` leaves them None so a caller sees which were given."""
    def d(value: object) -> object:
        return value if defaults else None
    if scenario:
        p.add_argument("scenario", help="scenario TOML file, or the name of a built-in one")
    p.add_argument("--arch", help="override the scenario's [machine] arch")
    p.add_argument("--seed", type=int, default=d(0), help="seed of the random strategy (default 0)")
    p.add_argument("--strategy", choices=("random", "rr"), default=d("random"),
                   help="who runs next: seeded random (default) or round-robin")
    add_quantum_option(p, d(1))
    p.add_argument("--max-steps", type=int, default=d(2_000_000),
                   help="give up after this many steps (at least 1)")
