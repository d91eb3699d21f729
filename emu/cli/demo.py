"""`ptemu demo torn-pae`: the torn 64-bit PAE read, found, explained and fixed.

Three acts, each a real exploration of a shipped scenario:

1. a plain two-load reader of a PMD entry (the `plain_two_load_read`
   variant) racing the kernel installing a huge PMD: the exhaustive search
   finds a value the entry never held, prints the interleaving and draws it;
2. `pmdp_get_lockless()` (low, high, re-read low) over every interleaving
   of the same scenario: clean, with the number of interleavings;
3. why `pmdp_get_lockless_sync()` is needed once the table is freed:
   retract without it (`no_lockless_sync`) leaves an IRQs-off reader inside
   its window; with it, clean.

Exit status 0 when every act shows what it should (bug found, fix clean).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from emu.cli.common import EXIT_FOUND, EXIT_OK, console


def _act(title: str, cfg, svg: Path | None) -> tuple[bool, int]:  # noqa: ANN001
    """Run one exploration; returns (failed?, schedules run)."""
    from emu.cli.explore import print_report
    from emu.explore import explore
    from emu.svg import write_svg
    console.rule(title)
    res = explore(cfg)
    st = res.stats
    if res.report is None:
        what = (f"all {st.interleavings} interleavings (distinct up to independent steps)"
                if st.exhausted and st.interleavings is not None else f"{st.schedules} schedules")
        console.print(f"[bold green]clean[/] over {what}, {st.steps:,} steps")
        return False, st.schedules
    print_report(res.report)
    if svg is not None and res.machine is not None:
        write_svg(str(svg), res.machine, res.report)
        console.print(f"timeline: {svg}", markup=False)
    console.print(f"replay: ptemu replay {res.config.scenario} --schedule {res.report.schedule}"
                  + "".join(f" --variant {v}" for v in res.config.variants), markup=False)
    return True, st.schedules


def run_torn_pae(args: argparse.Namespace) -> int:
    from emu.explore import ExploreConfig
    out = Path(getattr(args, "svg_dir", None) or ".")
    ok = True
    found, _ = _act("1. a plain two-load read of a PAE pmd: exhaustive search",
                    ExploreConfig("torn_pae", variants=("plain_two_load_read",),
                                  strategy="exhaustive", schedules=200_000),
                    out / "torn-pae.svg")
    ok &= found
    found, _ = _act("2. pmdp_get_lockless(): every interleaving of the same scenario",
                    ExploreConfig("torn_pae", strategy="exhaustive", schedules=200_000,
                                  minimize=False), None)
    ok &= not found
    found, _ = _act("3. retract without pmdp_get_lockless_sync() (PCT)",
                    ExploreConfig("lockless_sync_pae", variants=("no_lockless_sync",),
                                  strategy="pct", depth=3, schedules=300),
                    out / "torn-pae-sync.svg")
    ok &= found
    found, _ = _act("   ... and with it (PCT, same seeds)",
                    ExploreConfig("lockless_sync_pae", strategy="pct", depth=3, schedules=300,
                                  minimize=False), None)
    ok &= not found
    console.rule()
    if ok:
        console.print("[bold]torn-pae:[/] the two-load read tears, pmdp_get_lockless() does not, "
                      "and retract needs pmdp_get_lockless_sync() before it lets go of the pmd.")
        return EXIT_OK
    console.print("[bold red]torn-pae: an act did not show what it should[/]")
    return EXIT_FOUND
