"""First hits of `ptemu fuzz --variant V` for every variant on every target it applies to.

For each built-in variant and each fuzz target (arch and arch option) where
the registry says it can show, runs `ptemu fuzz --arch TARGET --variant V`
with the given budget and prints a table row: the workloads and schedules up
to and including the first hit (what `ptemu fuzz` reports as "first hit"),
the checker that fired, or "not found". Pairs where the variant does not
apply are listed with the registry's reason.

    python tools/variant_hits.py                         # 50 workloads x 100 schedules, seed 1
    python tools/variant_hits.py --only pte_free_immediate@sparc64 --jobs 2

Workloads the correct model fails (skipped by fuzz, so a ptemu bug) are
listed after the table. Exit status 1 if some applicable pair was not found
within the budget, or the correct model failed a workload.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from emu.fuzz import FuzzConfig, fuzz, not_applicable  # noqa: E402
from emu.fuzz_gen import TARGETS, targets_for  # noqa: E402
from emu.kernel.variants import known_variants  # noqa: E402


def pairs(only: list[str]) -> list[tuple[str, str, str]]:
    """(variant, target label, why not applicable or "") for every pair, or those named
    as VARIANT or VARIANT@TARGET."""
    out = []
    for v in sorted(known_variants()):
        for t in TARGETS:
            if only and v not in only and f"{v}@{t.label}" not in only:
                continue
            out.append((v, t.label, not_applicable(FuzzConfig(variants=(v,)), t)))
    # in the order named (cheap ones first, say)
    return sorted(out, key=lambda p: only.index(f"{p[0]}@{p[1]}") if f"{p[0]}@{p[1]}" in only
                  else 0)


def runs(todo: list[tuple[str, str, str]]) -> list[tuple[str, str, list[str]]]:
    """One fuzz run per (variant, arch): `--arch powerpc` is radix and hash in turn
    (and s390 halves and full-page), so one run gives both targets' figures."""
    out: dict[tuple[str, str], list[str]] = {}
    for v, label, why in todo:
        if not why:
            arch = next(t.arch for t in TARGETS if t.label == label)
            out.setdefault((v, arch), []).append(label)
    return [(v, arch, labels) for (v, arch), labels in out.items()]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", type=int, default=50,
                    help="workloads allowed per pair (each target of an arch gets this many)")
    ap.add_argument("--schedules", type=int, default=100, help="schedules per workload")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--only", nargs="*", default=[], help="VARIANT or VARIANT@TARGET")
    args = ap.parse_args(argv)
    print("| variant | target | first hit (workloads/schedules) | checker | wall |")
    print("|---|---|---|---|---|", flush=True)
    tainted: list[str] = []
    missed = 0
    todo = pairs(args.only)
    for v, label, why in todo:
        if why:
            print(f"| {v} | {label} | does not apply: {why.split(': ', 1)[-1]} | | |", flush=True)
    for v, arch, labels in runs(todo):
        t0 = time.perf_counter()
        per = len(targets_for(arch))  # workload i goes to target i mod per
        res = fuzz(FuzzConfig(arch=arch, workloads=args.workloads * per,
                              schedules=args.schedules, seed=args.seed, jobs=args.jobs,
                              variants=(v,)))
        for label in labels:
            s = res.targets[label]
            hit = next((o for o in res.outcomes if o.kind and o.label == label), None)
            if s.first_hit is None or hit is None:
                missed += 1
                cell, kind = f"**not found** in {s.workloads}/{s.schedules}", ""
            else:
                cell, kind = f"{s.first_hit[0]}/{s.first_hit[1]}", hit.kind
            print(f"| {v} | {label} | {cell} | {kind} | {time.perf_counter() - t0:.0f} s |",
                  flush=True)
        # a workload the correct model fails is a ptemu bug, whatever the variant
        tainted += [f"{o.label} {o.name}: {o.tainted or o.error}" for o in res.outcomes
                    if o.tainted or o.error]
    for line in tainted:
        print(f"correct model failed: {line}")
    print(f"\n`python tools/variant_hits.py --workloads {args.workloads} --schedules "
          f"{args.schedules} --seed {args.seed}`")
    return 1 if missed or tainted else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
