"""`ptemu failures list|show|clear`: the failure database from the command line.

list: every key (scenario, arch, variants, overrides) and its saved
failures by title; show ID: one saved failure's report (ID is an entry id
from `list`, or a prefix of it); clear [KEY]: remove every entry, or one
key's. The database is `.ptemu/db/` of the current directory unless --db.
"""

from __future__ import annotations

import argparse

from emu.cli.common import EXIT_OK, UsageError, console
from emu.failure_db import DB_DIR, FailureDb


def cmd_failures(args: argparse.Namespace) -> int:
    from emu.cli.explore import print_report
    db = FailureDb(args.db or DB_DIR)
    if args.action == "list":
        keys = db.keys()
        if not keys:
            console.print(f"no saved failures in {db.root}", markup=False)
        for info in keys:
            overrides = ", ".join(f"{o.get('file')}:{o.get('class')}" for o in info["overrides"])
            console.print(f"key {info['key']}: {info['scenario']} on {info['arch']}"
                          + (f", variants {', '.join(info['variants'])}" if info["variants"] else "")
                          + (f", overrides {overrides}" if overrides else ""),
                          markup=False, highlight=False)
            for path, rep in info["entries"]:
                console.print(f"  {path.stem}  {rep.title or rep.kind}  "
                              f"({rep.context_switches} context switches, {rep.steps} steps)  "
                              f"ptemu replay {path}", markup=False, highlight=False)
        return EXIT_OK
    if args.action == "show":
        if not args.id:
            raise UsageError("failures show needs an entry id (see `ptemu failures list`)")
        hits = [(p, r) for info in db.keys() for p, r in info["entries"]
                if p.stem.startswith(args.id)]
        if len(hits) != 1:
            raise UsageError(f"failures show {args.id}: {'no' if not hits else len(hits)} "
                             f"entries match (see `ptemu failures list`)")
        path, rep = hits[0]
        print_report(rep)
        console.print(f"replay with: ptemu replay {path}", markup=False)
        return EXIT_OK
    n = db.clear(args.id)
    console.print(f"removed {n} saved failure{'s' if n != 1 else ''}"
                  + (f" of key {args.id}" if args.id else "") + f" from {db.root}", markup=False)
    return EXIT_OK


def _add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("failures", help="list, show or clear the failure database",
                       description="The failure database: failures `explore` found, per "
                                   "scenario key (content, arch, variants, overrides); the "
                                   "next explore of a key replays them first.")
    p.add_argument("action", choices=("list", "show", "clear"))
    p.add_argument("id", nargs="?", help="show: an entry id (or prefix); clear: a key (default all)")
    p.add_argument("--db", metavar="DIR", help=f"the database directory (default {DB_DIR})")
    p.set_defaults(func=cmd_failures)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    _add(sub)
