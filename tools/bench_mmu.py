"""Benchmark ptemu's MMU against raw Unicorn on the same guest, per arch.

One guest, `sweep(start, count, stride, rounds)` (guest/programs/<arch>/
sweep.S: load, increment and store one word per page), run in one process
on each arch four ways, each against raw Unicorn doing the same work:

(a) resident: 8 pages swept many times in one free run (`VCpu.run_free`:
    one `emu_start` with no count, walks inside the fill hook), against a
    raw Unicorn instance with the same code and data identity-mapped
    (UC_TLB_VIRTUAL with a trivial Python fill hook) run with one
    `emu_start`;
(b) miss: 1,024 pages (over several leaf tables) touched once each after
    a flush of every TLB, so each page costs a full Python walk of the
    arch's real tables, against Unicorn's own C walker (UC_TLB_CPU) on the
    *same* physical memory and root register (x86-PAE, arm, s390: the archs
    whose Unicorn MMU works, shared/reference/unicorn_facts.md section 5;
    ppc64 and sparc64 have none, so no ratio);
(c) stepped: the resident sweep one guest instruction per machine step
    under the scheduler (ExploreMachine with every checker, trace off, as
    `ptemu explore` runs it), against raw `emu_start(pc, 0, 0, count=1)`
    plus a PC read per instruction, exits list empty, as the machine does;
(d) quanta: the same with `VCpu.quantum` instructions per step, against
    raw `count=quantum` slices.

Each figure is guest instructions per second; each pair is measured
back to back `--reps` times (ptemu then raw, same conditions) and the
ratio reported is the median of the per-pair ratios (ptemu / raw: 1.0 =
raw speed; for (b), raw C-walk time / ptemu time, so 0.25 = 4x slower).
The last line printed is a JSON object of the ratios.

    python tools/bench_mmu.py [--arch ARCH ...] [--reps N] [--quantum K] [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import unicorn  # noqa: E402
from unicorn import s390x_const as us  # noqa: E402
from unicorn import x86_const as ux  # noqa: E402

from arch import get_arch  # noqa: E402
from emu import scenario  # noqa: E402
from emu.check import default_checkers  # noqa: E402
from emu.explore_machine import ExploreMachine  # noqa: E402
from emu.machine import CODE_SLOT, STACK_SIZE, Machine  # noqa: E402
from emu.sched import RoundRobin  # noqa: E402

ARCHS = ("x86-pae", "arm", "powerpc", "s390", "sparc64")
HEAP = 0x10000000
INSNS = {"x86-pae": (6, 4), "arm": (6, 4), "powerpc": (7, 5), "s390": (5, 3),
         "sparc64": (6, 5)}  # sweep.S: instructions per page, per round (+3 to exit)


def sweep_scenario(arch: str, pages: int, rounds: int) -> scenario.Scenario:
    # as little memory as the heap needs: resets and audits cost per frame
    mib = pages * get_arch(arch).page_size // (1 << 20) + 16
    return scenario.parse(f"""
[machine]
arch = "{arch}"
cpus = 1
memory_mib = {mib}
[[vma]]
start = {HEAP:#x}
size = "{pages} * page_size"
kind = "anon"
name = "heap"
populate = true
[[cpu]]
program = "sweep"
args = [{HEAP:#x}, {pages}, "page_size", {rounds}]
""", f"<bench_mmu {arch}>")


def sweep_machine(arch: str, pages: int, rounds: int, explore: bool = False) -> Machine:
    """The sweep machine, its text page faulted in too (Unicorn's C walker
    cannot fault it in), snapshotted: every run starts from there."""
    sc = sweep_scenario(arch, pages, rounds)
    if explore:
        m = ExploreMachine(sc, trace=False, checkers=default_checkers())
        m.digests = False
    else:
        m = Machine(sc, trace=False)
    m.populate(m.kernel.mm.find_vma(m.programs[0].base))
    m.snapshot()
    return m


def guest_insns(arch: str, pages: int, rounds: int) -> int:
    per_page, per_round = INSNS[arch]
    return rounds * (pages * per_page + per_round) + 3


def median_ratio(pairs: list[tuple[float, float]]) -> float:
    return statistics.median(a / b for a, b in pairs)


# ---- raw Unicorn ------------------------------------------------------------------

RX = unicorn.UC_PROT_READ | unicorn.UC_PROT_EXEC
RW = unicorn.UC_PROT_READ | unicorn.UC_PROT_WRITE


class Raw:
    """A plain Unicorn running the machine's program on the same memory.

    `walk=False`: UC_TLB_VIRTUAL with a one-line Python fill hook (identity
    mapping; code read+exec, data read+write, as ptemu maps them: a writable
    code page makes Unicorn several times slower), the program's code and
    the heap mapped at their virtual addresses. `walk=True`:
    UC_TLB_CPU on the machine's own physical memory, paging registers set to
    the machine's root, so Unicorn's C walker reads ptemu's real tables.
    """

    def __init__(self, m: Machine, walk: bool) -> None:
        a = m.arch
        self.arch = a
        self.m = m
        prog = m.programs[0]
        self.prog = prog
        uc = unicorn.Uc(a.uc_arch, a.uc_mode)
        self.uc = uc
        uc.ctl_exits_enabled(True)
        uc.ctl_set_exits([])
        if walk:
            uc.mem_map_ptr(0, m.mem.size, unicorn.UC_PROT_ALL, m.mem.address)
            self._paging(m)
        else:
            # the least a soft MMU can do: every fill maps va to itself
            uc.ctl_set_tlb_mode(unicorn.UC_TLB_VIRTUAL)
            uc.hook_add(unicorn.UC_HOOK_TLB_FILL, self._identity_fill)
            uc.mem_map(prog.base, CODE_SLOT)
            uc.mem_write(prog.base, prog.code)
            vma = m.kernel.mm.find_vma(HEAP)
            uc.mem_map(HEAP, vma.end - HEAP)
            uc.mem_map(a.stack_top - STACK_SIZE, STACK_SIZE)
            a.setup_cpu(uc, 0, m.root)
        self.trapped = False
        uc.hook_add(unicorn.UC_HOOK_INTR, self._intr)

    def _paging(self, m: Machine) -> None:
        a, uc = self.arch, self.uc
        root = a.hw_root(m.root)
        if a.name == "x86-pae":
            uc.msr_write(0xC0000080, uc.msr_read(0xC0000080) | 1 << 11)  # EFER.NXE
            uc.reg_write(ux.UC_X86_REG_CR4, uc.reg_read(ux.UC_X86_REG_CR4) | 0x20)  # PAE
            uc.reg_write(ux.UC_X86_REG_CR3, root)
            uc.reg_write(ux.UC_X86_REG_CR0, uc.reg_read(ux.UC_X86_REG_CR0) | 0x80000000)
        elif a.name == "arm":
            uc.cpr_write(15, 0, 2, 0, 2, 0, False, 0)  # TTBCR: short descriptors
            uc.cpr_write(15, 0, 2, 0, 0, 0, False, root)  # TTBR0
            uc.cpr_write(15, 0, 3, 0, 0, 0, False, 0x55555555)  # DACR: all client
            sctlr = uc.cpr_read(15, 0, 1, 0, 0, 0, False)
            uc.cpr_write(15, 0, 1, 0, 0, 0, False, sctlr | 1)  # SCTLR.M
        elif a.name == "s390":
            uc.reg_write(us.UC_S390X_REG_PSWM, (1 << 58) | 0x1_8000_0000)  # DAT, 64-bit
            uc.reg_write(us.UC_S390X_REG_CR1, root)
        else:
            raise ValueError(f"{a.name}: Unicorn has no working MMU for it")
        self.flush()

    def _identity_fill(self, _uc: unicorn.Uc, va: int, _acc: int, entry: object, _ud: object) -> bool:
        base = self.prog.base
        entry.paddr = va
        entry.perms = RX if base <= va < base + CODE_SLOT else RW
        return True

    def flush(self) -> None:
        self.uc.ctl(unicorn.UC_CTL_TLB_FLUSH, unicorn.UC_CTL_IO_WRITE)

    def _intr(self, uc: unicorn.Uc, _intno: int, _ud: object) -> None:
        self.trapped = True
        uc.emu_stop()

    def arm(self, args: list[int]) -> None:
        a = self.arch
        a.set_pc(self.uc, self.prog.base)
        a.set_args(self.uc, args)

    def free(self, args: list[int]) -> float:
        """Seconds for one free run to the exit trap."""
        self.arm(args)
        self.trapped = False
        t0 = time.perf_counter()
        self.uc.emu_start(self.prog.base, 0, 0, 0)
        dt = time.perf_counter() - t0
        assert self.trapped, "raw run stopped before its exit trap"
        return dt

    def stepped(self, args: list[int], count: Callable[[int], int]) -> tuple[int, float]:
        """(instructions, seconds) stepping to the exit trap, `count(pc)` at a time."""
        a, uc = self.arch, self.uc
        self.arm(args)
        self.trapped = False
        pc = self.prog.base
        n = 0
        t0 = time.perf_counter()
        while not self.trapped:
            k = count(pc)
            uc.emu_start(pc, 0, 0, k)
            pc = a.get_pc(uc)
            n += k
        return n, time.perf_counter() - t0


# ---- ptemu --------------------------------------------------------------------------


def rearm(m: Machine) -> None:
    """Back to the program's first instruction with every TLB empty."""
    m.reset()


def ptemu_free(m: Machine) -> float:
    rearm(m)
    c = m.cpus[0]
    t0 = time.perf_counter()
    why = c.run_free(None)
    dt = time.perf_counter() - t0
    assert why == "exit" and c.exit_code == 0, (why, c.crash)
    return dt


def ptemu_stepped(m: Machine, quantum: int) -> tuple[int, float]:
    rearm(m)
    m.cpus[0].quantum = quantum
    t0 = time.perf_counter()
    r = m.run(RoundRobin(), max_steps=10_000_000)
    dt = time.perf_counter() - t0
    assert r.ok and r.exit_codes == {0: 0}, r
    return r.steps, dt


# ---- the four measurements ---------------------------------------------------------------


def bench_arch(arch: str, reps: int, quantum: int, quick: bool) -> dict:
    out: dict = {"arch": arch}
    # (a) resident: 8 pages, many rounds, one free run each side
    pages, rounds = 8, (4_000 if quick else 400_000)
    m = sweep_machine(arch, pages, rounds)
    raw = Raw(m, walk=False)
    args = [HEAP, pages, m.arch.page_size, rounds]
    n = guest_insns(arch, pages, rounds)
    ptemu_free(m), raw.free(args)  # translate once on both sides
    pairs = [(ptemu_free(m), raw.free(args)) for _ in range(reps)]
    out["a_ptemu_ips"] = n / statistics.median(p for p, _ in pairs)
    out["a_raw_ips"] = n / statistics.median(r for _, r in pairs)
    out["a_ratio"] = median_ratio([(r, p) for p, r in pairs])
    # (b) a miss on every page: a full walk per page, TLBs flushed before each run
    pages = 256 if quick else 1024
    m = sweep_machine(arch, pages, 1)
    n = guest_insns(arch, pages, 1)
    args = [HEAP, pages, m.arch.page_size, 1]
    out["b_pages"] = pages
    if arch in ("x86-pae", "arm", "s390"):
        raw = Raw(m, walk=True)

        def c_walk() -> float:
            m.reset()  # the same memory image on both sides
            raw.flush()
            return raw.free(args)
        ptemu_free(m), c_walk()
        pairs = [(ptemu_free(m), c_walk()) for _ in range(reps)]
        out["b_ptemu_ips"] = n / statistics.median(p for p, _ in pairs)
        out["b_cwalk_ips"] = n / statistics.median(r for _, r in pairs)
        out["b_ratio"] = median_ratio([(r, p) for p, r in pairs])
        out["b_us_per_miss"] = 1e6 * statistics.median(p for p, _ in pairs) / pages
        out["b_cwalk_us_per_miss"] = 1e6 * statistics.median(r for _, r in pairs) / pages
    else:
        out["b_ptemu_ips"] = n / statistics.median(ptemu_free(m) for _ in range(reps))
        out["b_ratio"] = None  # no Unicorn MMU to compare with
    # (c) stepped and (d) in quanta, under the scheduler with every checker
    for q, key in ((1, "c"), (quantum, "d")):
        # long enough that the end-of-run audit is small against the run
        pages, rounds = 8, (30 if quick else 300) * (1 if q == 1 else (4 if quick else 20))
        m = sweep_machine(arch, pages, rounds, explore=True)
        raw = Raw(m, walk=False)
        args = [HEAP, pages, m.arch.page_size, rounds]
        a = m.arch
        step = (lambda pc, a=a, uc=raw.uc: a.step_count(uc, pc)) if q == 1 else \
            (lambda pc, a=a, uc=raw.uc, q=q: a.slice_count(uc, pc, q))
        ptemu_stepped(m, q), raw.stepped(args, step)
        pairs = []
        for _ in range(reps):
            steps, dt = ptemu_stepped(m, q)
            rn, rt = raw.stepped(args, step)
            pairs.append((dt, rt))
        ni = guest_insns(arch, pages, rounds)
        out[f"{key}_ptemu_ips"] = ni / statistics.median(p for p, _ in pairs)
        out[f"{key}_raw_ips"] = rn / statistics.median(r for _, r in pairs)
        # ratio of instruction rates (ptemu steps also count its walks)
        out[f"{key}_ratio"] = statistics.median((rt / rn) / (dt / ni) for dt, rt in pairs)
        out[f"{key}_steps"] = steps
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", action="append", choices=ARCHS,
                    help="an arch to measure (repeatable; default: all five)")
    ap.add_argument("--reps", type=int, default=5, help="measured pairs per figure (median)")
    ap.add_argument("--quantum", type=int, default=1000, help="instructions per step in (d)")
    ap.add_argument("--quick", action="store_true",
                    help="small working sets and 3 pairs: seconds, for tests")
    args = ap.parse_args(argv)
    if args.reps < 1 or args.quantum < 2:
        print("bench_mmu: --reps must be >= 1 and --quantum >= 2", file=sys.stderr)
        return 2
    reps = min(args.reps, 3) if args.quick else args.reps
    rows = [bench_arch(a, reps, args.quantum, args.quick) for a in args.arch or ARCHS]

    def f(v: float | None, scale: float = 1e6, fmt: str = ".1f") -> str:
        return "-" if v is None else format(v / scale, fmt)
    print(f"{'arch':<8} {'a ptemu':>8} {'a raw':>8} {'a':>6} | {'b ptemu':>8} {'b Cwalk':>8} "
          f"{'us/miss':>7} {'C us':>6} {'b':>6} | {'c ptemu':>7} {'c raw':>7} {'c':>5} | "
          f"{'d ptemu':>7} {'d raw':>7} {'d':>5}   (M instr/s; ratios ptemu/raw)")
    for r in rows:
        print(f"{r['arch']:<8} {f(r['a_ptemu_ips']):>8} {f(r['a_raw_ips']):>8} "
              f"{r['a_ratio']:>6.2f} | {f(r['b_ptemu_ips'], 1e6, '.2f'):>8} "
              f"{f(r.get('b_cwalk_ips'), 1e6, '.2f'):>8} {f(r.get('b_us_per_miss'), 1, '.2f'):>7} "
              f"{f(r.get('b_cwalk_us_per_miss'), 1, '.2f'):>6} {f(r['b_ratio'], 1, '.3f'):>6} | "
              f"{f(r['c_ptemu_ips'], 1e6, '.3f'):>7} {f(r['c_raw_ips'], 1e6, '.3f'):>7} "
              f"{r['c_ratio']:>5.2f} | {f(r['d_ptemu_ips']):>7} {f(r['d_raw_ips']):>7} "
              f"{r['d_ratio']:>5.2f}")
    print(json.dumps({r["arch"]: {k: r[k] for k in ("a_ratio", "b_ratio", "c_ratio", "d_ratio")}
                      for r in rows}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
