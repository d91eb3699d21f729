"""The README's results table: every shipped scenario x arch x variant, from a real run.

For each built-in scenario with an `[expect]` table, on each arch it names:
the correct model is explored with PCT for `--clean` schedules and must stay
clean; each variant it names (`name` or `name@arch`) is explored with PCT
for up to `--budget` schedules and must be found. `<override>` means the
scenario as shipped (with its own `[kernel] override`) must fail.

    python tools/results_table.py                    # the bounded run (README figures)
    python tools/results_table.py --clean 5000       # the long run the issue asks for
    python tools/results_table.py --update-readme    # rewrite the README's table

Exit status 1 if any cell is not what the scenario expects.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from emu import scenario as scenario_mod  # noqa: E402
from emu.explore import ExploreConfig, explore  # noqa: E402

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def cells(only: list[str]) -> list[tuple[str, str, str | None]]:
    """(scenario, arch, variant or None for the correct model, "<override>")."""
    out = []
    for name in scenario_mod.builtin_names():
        if only and name not in only:
            continue
        sc = scenario_mod.load(name)
        expect = sc.expect
        if not expect:
            continue
        for arch in expect.get("arches", [sc.arch]):
            caught = []
            for item in expect.get("caught", []):
                var, _, on = item.partition("@")
                if not on or on == arch:
                    caught.append(var)
            if "<override>" not in caught:
                out.append((name, arch, None))
            out.extend((name, arch, v) for v in caught)
    return out


def run_cell(name: str, arch: str, variant: str | None, clean: int, budget: int, depth: int,
             jobs: int, seed: int, backend: str = "process",
             address: str | None = None, quantum: int = 1) -> tuple[str, bool, float]:
    variants = () if variant in (None, "<override>") else (variant,)
    want_bug = variant is not None
    # a scenario may say which PCT depth suits it ([explore] depth = N)
    depth = int(scenario_mod.load(name).explore.get("depth", depth))
    cfg = ExploreConfig(name, arch=arch, variants=variants, strategy="pct", depth=depth,
                        schedules=budget if want_bug else clean, seed=seed, jobs=jobs,
                        minimize=False, backend=backend, address=address, quantum=quantum)
    t0 = time.perf_counter()
    res = explore(cfg)
    dt = time.perf_counter() - t0
    st = res.stats
    if res.report is None:
        text = f"clean over {st.schedules}"
        return text, not want_bug, dt
    text = f"found after {st.schedules} ({res.report.kind})"
    return text, want_bug, dt


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clean", type=int, default=500, help="PCT schedules for each correct run")
    ap.add_argument("--budget", type=int, default=1000, help="PCT schedules allowed to find a bug")
    ap.add_argument("--depth", type=int, default=2,
                    help="PCT bug depth, unless the scenario's [explore] depth says otherwise")
    ap.add_argument("--jobs", type=int, default=2, help="worker processes")
    ap.add_argument("--backend", choices=("process", "ray"), default="process",
                    help="where the workers run (ray: pip install 'ptemu[ray]'); the verdicts "
                         "and counts do not depend on it")
    ap.add_argument("--address", help="--backend ray: the cluster (default: a local instance)")
    ap.add_argument("--quantum", type=int, default=1,
                    help="guest instructions per guest step at most (explore --quantum)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", nargs="*", default=[], help="scenario names to run")
    ap.add_argument("--update-readme", action="store_true", help="rewrite README.md's table")
    args = ap.parse_args(argv)
    command = ("python tools/results_table.py"
               + (f" --clean {args.clean}" if args.clean != 500 else "")
               + (f" --budget {args.budget}" if args.budget != 1000 else "")
               + (f" --depth {args.depth}" if args.depth != 2 else "")
               + (f" --quantum {args.quantum}" if args.quantum != 1 else ""))
    rows = ["| scenario | arch | variant | PCT result | as expected |", "|---|---|---|---|---|"]
    bad = 0
    total = time.perf_counter()
    for name, arch, variant in cells(args.only):
        text, ok, dt = run_cell(name, arch, variant, args.clean, args.budget, args.depth,
                                args.jobs, args.seed, args.backend, args.address,
                                args.quantum)
        bad += not ok
        label = variant or "correct"
        rows.append(f"| {name} | {arch} | {label} | {text} | {'yes' if ok else '**NO**'} |")
        print(rows[-1], f"  ({dt:.0f} s)", flush=True)
    table = "\n".join(rows)
    footer = (f"\nGenerated by `{command}` (PCT depth {args.depth} unless a scenario sets its own, seed {args.seed}, "
              f"{args.jobs} jobs, {time.perf_counter() - total:.0f} s).")
    if args.update_readme:
        readme = ROOT / "README.md"
        text = readme.read_text()
        if BEGIN not in text or END not in text:
            print(f"README.md has no {BEGIN} ... {END} markers", file=sys.stderr)
            return 2
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        readme.write_text(f"{head}{BEGIN}\n{table}\n{footer}\n{END}{tail}")
    print(footer)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
