"""Benchmark exploration: schedules/s, steps/s, step cost against bare Unicorn, jobs speedup.

For each scenario (default: three built-in x86-PAE ones), in one run:

- PCT exploration of the correct model (every schedule runs to its end):
  schedules/s and steps/s, all costs included (reset from the snapshot,
  every checker, the end-of-run accounting audit);
- the cost of one machine step (a guest instruction, a walker entry read or
  a kernel-model step, with checkers and the end-of-run audit), excluding
  resets, in microseconds;
- bare Unicorn on the same guest programs: a plain Unicorn instance of the
  same arch, the program's code and data mapped flat, stepped with
  `emu_start(pc, 0, 0, count=1)` plus a PC read (exits list empty, as the
  machine does), hypercalls answered 0 by a trivial hook: the floor of
  instruction-level stepping from Python. The ratio of the two is the price
  of ptemu's MMU, scheduler, kernel model and checkers per step. Machine
  and bare steps are measured in turn `--reps` times (same load on both
  sides); the medians are reported;
- the same exploration with --jobs 1 and --jobs 2 (wall clock; worker start-up
  included), and the speedup.

The last line printed is a JSON object: per scenario, every figure of
its row.

    python tools/bench_explore.py [--schedules N] [--jobs-seconds S] [--quick] [SCENARIO ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import unicorn  # noqa: E402

from emu import hypercall  # noqa: E402
from emu.explore import ExploreConfig, build_machine, explore, pct_k, strategy_for  # noqa: E402
from emu.machine import CODE_SLOT, STACK_SIZE  # noqa: E402
from emu.scenario import eval_int  # noqa: E402

DEFAULT = ["torn_pae", "collapse_gup", "retract_x86"]
BARE_MIN_STEPS = 30_000  # bare Unicorn steps measured per scenario


def bare_unicorn(m, min_steps: int = 30_000) -> tuple[int, float]:
    """(instructions, seconds) stepping each vCPU's program on a bare Unicorn.

    One Unicorn instance per program, kept across repetitions as the
    machine keeps its vCPUs across schedules (so translation is amortised
    alike); each repetition restarts the program from its first instruction.
    """
    a = m.arch
    sc = m.scenario
    names = m.names()
    exit_nr = hypercall.by_name()["exit"]
    page = max(a.page_size, a.uc_page_size, 0x1000)
    cpus = []
    for i, prog in sorted(m.programs.items()):
        uc = unicorn.Uc(a.uc_arch, a.uc_mode)
        uc.ctl_exits_enabled(True)
        uc.ctl_set_exits([])
        size = -(-len(prog.code) // page) * page
        uc.mem_map(prog.base, max(size, CODE_SLOT))
        uc.mem_write(prog.base, prog.code)
        top = a.stack_top - i * 2 * STACK_SIZE
        uc.mem_map(top - STACK_SIZE, STACK_SIZE)
        for j, v in enumerate(sc.vmas):
            start = eval_int(v.start, names, sc.source, f"vma[{j}].start")
            length = eval_int(v.size, names, sc.source, f"vma[{j}].size")
            try:
                uc.mem_map(start, length)
            except unicorn.UcError:
                pass  # overlaps a region already mapped
        state = {"done": False, "trap": False}

        def intr(uc, intno, _ud, state=state):  # noqa: ANN001
            nr, _ = a.hypercall_args(uc)
            if nr == exit_nr:
                state["done"] = True
            else:
                a.set_return(uc, 0)
            state["trap"] = True
            uc.emu_stop()

        uc.hook_add(unicorn.UC_HOOK_INTR, intr)
        args = [eval_int(x, names, sc.source, "args") for x in sc.programs[i].args]
        cpus.append((uc, prog.base, top, args, state))
    total_steps = 0
    total_time = 0.0
    while total_steps < min_steps:
        for uc, base, top, args, state in cpus:
            a.set_pc(uc, base)
            a.set_sp(uc, top - 64)
            a.set_args(uc, args)
            state["done"] = False
            pc = base
            n = 0
            t0 = time.perf_counter()
            while not state["done"] and n < 200_000:
                uc.emu_start(pc, 0, 0, 1)
                if state["trap"]:
                    state["trap"] = False
                    a.after_trap(uc)
                pc = a.get_pc(uc)
                n += 1
            total_time += time.perf_counter() - t0
            total_steps += n
    return total_steps, total_time


def machine_steps(m, cfg: ExploreConfig, k: int, first: int,
                  schedules: int) -> tuple[int, float, float]:
    """(steps, seconds in runs, seconds in resets) over PCT schedules first.. on `m`."""
    steps = 0
    t_run = t_reset = 0.0
    for i in range(first, first + schedules):
        t0 = time.perf_counter()
        m.reset()
        t1 = time.perf_counter()
        r = m.run(strategy_for(cfg, i, k), max_steps=cfg.max_steps)
        t2 = time.perf_counter()
        steps += r.steps
        t_reset += t1 - t0
        t_run += t2 - t1
    return steps, t_run, t_reset


def bench(name: str, schedules: int, jobs_seconds: float, reps: int) -> dict:
    cfg = ExploreConfig(name, strategy="pct", schedules=schedules, minimize=False)
    res = explore(cfg)
    if res.report is not None:
        raise SystemExit(f"{name}: the correct model failed ({res.report.kind}); cannot benchmark")
    st = res.stats
    # machine steps and bare steps measured in turn, `reps` times, so both
    # sides see the same load; the figures are the medians of the pairs
    m = build_machine(cfg)
    k = pct_k(cfg, m)
    per = max(10, schedules // 4)
    step_us, bare_us, reset_ms, ratio, ratio_reset = [], [], [], [], []
    for rep in range(reps):
        steps, t_run, t_reset = machine_steps(m, cfg, k, rep * per, per)
        bare_n, bare_t = bare_unicorn(m, BARE_MIN_STEPS)
        s_us, b_us = 1e6 * t_run / steps, 1e6 * bare_t / bare_n
        step_us.append(s_us)
        bare_us.append(b_us)
        reset_ms.append(1e3 * t_reset / per)
        ratio.append(s_us / b_us)
        ratio_reset.append((t_run + t_reset) / steps * 1e6 / b_us)
    med = statistics.median
    # long enough that worker start-up (a spawned interpreter building its
    # own machine) is small against the work
    jobs_schedules = max(20, int(st.schedules_per_s * jobs_seconds))
    t1 = time.perf_counter()
    explore(ExploreConfig(name, strategy="pct", schedules=jobs_schedules, minimize=False, jobs=1))
    j1 = time.perf_counter() - t1
    t2 = time.perf_counter()
    explore(ExploreConfig(name, strategy="pct", schedules=jobs_schedules, minimize=False, jobs=2))
    j2 = time.perf_counter() - t2
    return {"scenario": name, "schedules/s": st.schedules_per_s, "steps/s": st.steps_per_s,
            "steps/schedule": st.steps / st.schedules, "step us": med(step_us),
            "reset ms": med(reset_ms), "bare us": med(bare_us), "ratio": med(ratio),
            "ratio incl. reset": med(ratio_reset),
            "jobs n": jobs_schedules, "jobs1 s": j1, "jobs2 s": j2, "speedup": j1 / j2}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenarios", nargs="*", default=DEFAULT)
    ap.add_argument("--schedules", type=int, default=100, help="PCT schedules per scenario")
    ap.add_argument("--jobs-seconds", type=float, default=12.0,
                    help="size the --jobs 1 / --jobs 2 runs to about this many seconds at --jobs 1")
    ap.add_argument("--reps", type=int, default=5,
                    help="machine/bare measurement pairs per scenario (medians reported)")
    ap.add_argument("--quick", action="store_true",
                    help="10 schedules, short --jobs runs, one scenario unless named: for tests")
    args = ap.parse_args(argv)
    if args.schedules < 1 or args.jobs_seconds <= 0 or args.reps < 1:
        print("bench_explore: --schedules and --reps must be >= 1, --jobs-seconds > 0",
              file=sys.stderr)
        return 2
    if args.quick:
        args.schedules = min(args.schedules, 10)
        args.jobs_seconds = min(args.jobs_seconds, 0.5)
        args.reps = min(args.reps, 2)
        if args.scenarios == DEFAULT:
            args.scenarios = DEFAULT[:1]
    global BARE_MIN_STEPS
    BARE_MIN_STEPS = 3_000 if args.quick else 30_000
    rows = [bench(n, args.schedules, args.jobs_seconds, args.reps) for n in args.scenarios]
    head = (f"{'scenario':<14} {'sched/s':>8} {'steps/s':>8} {'steps/sch':>9} {'step us':>8} "
            f"{'reset ms':>8} {'bare us':>8} {'ratio':>6} {'w/reset':>7} {'jobs n':>6} {'jobs1 s':>8} "
            f"{'jobs2 s':>8} {'speedup':>7}")
    print(head)
    for r in rows:
        print(f"{r['scenario']:<14} {r['schedules/s']:>8.1f} {r['steps/s']:>8.0f} "
              f"{r['steps/schedule']:>9.0f} {r['step us']:>8.1f} {r['reset ms']:>8.2f} "
              f"{r['bare us']:>8.2f} {r['ratio']:>6.1f} {r['ratio incl. reset']:>7.1f} "
              f"{r['jobs n']:>6} {r['jobs1 s']:>8.2f} {r['jobs2 s']:>8.2f} {r['speedup']:>7.2f}")
    print(json.dumps({r["scenario"]: {k: v for k, v in r.items() if k != "scenario"}
                      for r in rows}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
