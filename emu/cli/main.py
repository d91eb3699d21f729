"""The `ptemu` command line (argparse + rich): the parser and the dispatch.

Each command module adds its own parsers (`add_parsers`); this module puts
them together and turns bad input into one line and exit status 2. The
core never imports rich.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from emu.cli import explore, failures, fuzz, run
from emu.cli.common import EXIT_FOUND, EXIT_USAGE, SetupFailure, console, err_console, input_errors


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("ptemu")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ptemu",
        description="Find, replay and explain races between page-table walkers and "
                    "page-table freeing in the Linux mm, on x86-PAE, arm, powerpc, s390 "
                    "and sparc64.",
        epilog="Exit status: 0 clean, 1 violation/deadlock/crash found, 2 bad input.")
    p.add_argument("--version", action="version", version=f"ptemu {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    for module in (run, explore, failures, fuzz):
        module.add_parsers(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    if getattr(args, "json", None) == "-":
        console.file = sys.stderr  # stdout carries the JSON; the human report goes aside
    try:
        return args.func(args)
    except input_errors() as exc:
        err_console.print(f"ptemu: error: {exc}", markup=False)
        return EXIT_USAGE
    except SetupFailure as exc:
        err_console.print(f"ptemu: {exc}", markup=False)
        return EXIT_FOUND
    except KeyboardInterrupt:
        err_console.print("ptemu: interrupted")
        return 130
    finally:
        console.file = None  # back to whatever sys.stdout is


if __name__ == "__main__":
    sys.exit(main())

