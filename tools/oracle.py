"""Differential oracle: ptemu's functional translate against Unicorn's own MMU.

Unicorn's hardware MMU (UC_TLB_CPU: QEMU's own page walkers) works for
x86 PAE, s390 DAT and ARMv7 short descriptors (shared/reference/
unicorn_facts.md section 5). For each of them a per-arch plugin
(tools/oracle_<arch>.py) builds *hostile* address spaces in one memory
image, written from raw bits, never with ptemu's own encoders:

- garbage entries (random 64/32-bit values) next to well-formed ones,
  and well-formed ones with random bits flipped, every permission and
  every reserved / must-be-zero bit included;
- tables aliased across levels (a page table also used as a page
  directory, a root inside a table) and sub-tables shared by several
  parents;
- pointers to tables and frames outside memory (up to the format's
  widest physical address); for x86-PAE a second RAM region at 4 GiB
  holds tables and frames, so pointers' high words matter;
- several roots per image: for s390 every ASCE type (region-first,
  -second, -third, segment), every table length, the real-space and
  private-space bits; for arm several DACRs; for x86 several CR3s.

Every probe picks one of those roots, a privilege (user or supervisor:
CPL3/CPL0, USR/SVC, problem/supervisor state), an access (read, write,
fetch) and an address (guided into the populated parts of the tables, or
random), and asks both sides: ptemu's `Arch.translate_functional` and
Unicorn's `uc_vmem_translate` (through ctypes; the Python binding does not
wrap it). They agree when both fault or both give the same physical
address. A disagreement that is a known Unicorn deviation from the
architecture is counted apart, as a documented exception (each plugin's
`deviation`, each with a test in tests/test_oracle.py); anything else is a
mismatch.

Run:  python tools/oracle.py [ARCH ...] [--probes N] [--seeds S]
      (default: arm s390 x86-pae, 10,000 probes x seeds 1-5 each)

Figures (10,000 probes per seed, seeds 1-5; documented deviations count
as agreement; "translated" = probes both sides mapped to the same address,
the rest faulted on both sides):

    arch     this tree, seeds 1-5           the walkers before issue 13, seeds 1-5
    x86-pae  100.00% (782-1636 translated)  86.31 91.95 87.65 90.49 90.95 %
    s390     100.00% (900-1452 translated)  88.85 90.51 89.53 85.81 86.31 %
    arm      100.00% (2736-3172 translated) 100.00% (unchanged)

Documented deviations seen per seed: x86-pae pdpte-rsvd-2:1/8:5 0-527,
s390 pte-bit55-without-iep 11-175, arm pa>=4GiB-truncated 112-240.

Exit status 1 if any probe disagrees, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import ctypes
import random
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import unicorn  # noqa: E402
from unicorn.unicorn_py3.unicorn import uclib  # noqa: E402

from arch.base import Access, Arch, MemoryImage, PteRead, Translation, WalkResult  # noqa: E402

# Plugins (tools/oracle_<arch>.py) `import oracle`: when this file runs as a
# script, that name must be this module, not a second copy of it.
sys.modules.setdefault("oracle", sys.modules[__name__])

_PROT = {Access.READ: unicorn.UC_PROT_READ, Access.WRITE: unicorn.UC_PROT_WRITE,
         Access.FETCH: unicorn.UC_PROT_EXEC}

uclib.uc_vmem_translate.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int,
                                    ctypes.POINTER(ctypes.c_uint64)]
uclib.uc_vmem_translate.restype = ctypes.c_int


def uc_translate(uc: unicorn.Uc, va: int, access: Access) -> int | None:
    """Unicorn's own translation of `va` (None: its MMU faults)."""
    out = ctypes.c_uint64()
    err = uclib.uc_vmem_translate(uc._uch, va, _PROT[access], ctypes.byref(out))
    return out.value if err == 0 else None


# ---- physical memory: regions, some above 4 GiB -----------------------------------


class PhysImage(MemoryImage):
    """Guest physical memory as (base, bytes) regions, for both sides.

    Slicing reads and writes bytes by physical address (a slice must lie in
    one region); `read` raises IndexError outside every region, which
    `translate_functional` reports as "outside-ram".
    """

    def __init__(self, regions: Sequence[tuple[int, bytearray | memoryview]]) -> None:
        self.regions = list(regions)

    def _at(self, pa: int, size: int) -> tuple[bytearray | memoryview, int]:
        for base, data in self.regions:
            if base <= pa and pa + size <= base + len(data):
                return data, pa - base
        raise IndexError(pa)

    def read(self, pa: int, size: int) -> bytes:
        data, off = self._at(pa, size)
        return bytes(data[off:off + size])

    def __getitem__(self, s: slice) -> bytes:
        return self.read(s.start, s.stop - s.start)

    def __setitem__(self, s: slice, value: bytes) -> None:
        data, off = self._at(s.start, s.stop - s.start)
        data[off:off + len(value)] = value


# ---- what a plugin builds ---------------------------------------------------------


@dataclass(frozen=True)
class TableLevel:
    """One level of the guided address sampler: which VA bits index it, and
    where an entry's next table would be if the entry were a pointer."""

    shift: int
    bits: int
    entry_size: int
    next_table: Callable[[int], int | None] | None  # None: the last level

    def index(self, va: int) -> int:
        return (va >> self.shift) & ((1 << self.bits) - 1)


@dataclass
class Context:
    """One address space a CPU can be switched to.

    `root` is what the root register holds (CR3, an ASCE, TTBR0) and what
    `translate_functional` takes; `arch` is the walker configured as the
    CPU is (arm's DACR); `first` is where the guided sampler starts and
    `levels` the indexes from there (they depend on the s390 ASCE type);
    `regs` what the plugin loads into the CPU besides the root.
    """

    arch: Arch
    root: int
    first: int
    levels: tuple[TableLevel, ...]
    regs: dict[str, int] = field(default_factory=dict)
    label: str = ""


@dataclass
class Case:
    """A hostile memory image and the address spaces defined over it."""

    mem: PhysImage
    contexts: list[Context]
    # table physical address -> the indexes written in it (the sampler's guide)
    filled: dict[int, list[int]]


class Plugin:
    """What an arch's oracle provides (subclassed in tools/oracle_<arch>.py)."""

    arch_name = ""
    mem_size = 16 << 20
    # (base, size) of each RAM region; x86-PAE adds one above 4 GiB
    regions: tuple[tuple[int, int], ...] = ((0, 16 << 20),)
    cpu_model: int | None = None

    def new_image(self) -> PhysImage:
        return PhysImage([(base, bytearray(size)) for base, size in self.regions])

    def build(self, rng: random.Random) -> Case:
        raise NotImplementedError

    def cpu(self, uc: unicorn.Uc, user: bool) -> None:
        """Put a fresh CPU (memory already mapped) in the mode the probes need."""
        raise NotImplementedError

    def enter(self, uc: unicorn.Uc, ctx: Context) -> None:
        """Switch the CPU to `ctx` (load its root and registers, flush the TLB)."""
        raise NotImplementedError

    def random_va(self, rng: random.Random, ctx: Context) -> int:
        return rng.getrandbits(32)

    def deviation(self, case: Case, ctx: Context, va: int, acc: Access, user: bool,
                  ours: WalkResult, theirs: int | None) -> str | None:
        """The name of the documented Unicorn deviation this disagreement is, if any."""
        return None


PLUGINS: dict[str, Plugin] = {}


def register(plugin: Plugin) -> Plugin:
    PLUGINS[plugin.arch_name] = plugin
    return plugin


def load_plugins() -> None:
    """Per-arch oracle modules (tools/oracle_<arch>.py) register themselves on import."""
    import importlib
    for path in sorted(Path(__file__).resolve().parent.glob("oracle_*.py")):
        importlib.import_module(path.stem)


# ---- hostile table helpers shared by the plugins ----------------------------------------


def flip_bits(rng: random.Random, val: int, width: int, p: float) -> int:
    """`val`, or with probability p one (or now and then two) of its `width`
    bits flipped, any bit alike: permissions, type bits, reserved bits."""
    if rng.random() < p:
        for _ in range(1 if rng.random() < 0.75 else 2):
            val ^= 1 << rng.randrange(width)
    return val


def sample_va(rng: random.Random, mem: PhysImage, ctx: Context,
              filled: dict[int, list[int]], byteorder: str) -> int:
    """An address whose walk mostly goes through entries the builder wrote.

    At each level the index comes from the entries written in that table
    (if the table is one the builder filled) or is random; the next table
    is wherever the entry points, so aliases and shared tables are
    followed as the hardware would.
    """
    va = 0
    table: int | None = ctx.first
    for lv in ctx.levels:
        idx = None
        if table is not None and rng.random() < 0.97:
            done = filled.get(table)
            if done:
                idx = rng.choice(done)
        if idx is None:
            idx = rng.getrandbits(lv.bits)
        va |= idx << lv.shift
        if lv.next_table is None or table is None:
            continue
        try:
            e = int.from_bytes(mem.read(table + idx * lv.entry_size, lv.entry_size), byteorder)
        except IndexError:
            table = None
            continue
        table = lv.next_table(e)
    return va


def last_entry(arch: Arch, mem: PhysImage, root: int, va: int, acc: Access,
               user: bool) -> tuple[int, int] | None:
    """(physical address, size) of the last entry ptemu's walk of `va` read."""
    seen: list[tuple[int, int]] = []
    gen = arch.walk(root, va, acc, user)
    try:
        msg = next(gen)
        while True:
            value = int.from_bytes(mem.read(msg.pa, msg.size), arch.byteorder)
            if isinstance(msg, PteRead):
                seen.append((msg.pa, msg.size))
            else:  # an A/D update lands, as in translate_functional
                value |= msg.bits
            msg = gen.send(value)
    except (StopIteration, IndexError):
        pass
    return seen[-1] if seen else None


def agrees_without(case: Case, ctx: Context, entry: tuple[int, int], clear: int, va: int,
                   acc: Access, user: bool, theirs: int | None) -> bool:
    """Would ptemu give Unicorn's answer if the entry at `entry` had the bits
    `clear` cleared? That is how a documented deviation is told apart from
    a real mismatch: the bits Unicorn does not check are the only difference."""
    pa, size = entry
    bo = ctx.arch.byteorder
    raw = bytes(case.mem[pa:pa + size])
    val = int.from_bytes(raw, bo)
    if not val & clear:
        return False
    case.mem[pa:pa + size] = (val & ~clear).to_bytes(size, bo)
    try:
        again = ctx.arch.translate_functional(case.mem, ctx.root, va, acc, user)
    finally:
        case.mem[pa:pa + size] = raw
    return (again.pa(va) if isinstance(again, Translation) else None) == theirs


# ---- the comparison ---------------------------------------------------------------------


@dataclass
class Result:
    arch: str
    seed: int
    probes: int
    agree: int = 0
    mapped: int = 0  # of the agreeing probes, those both sides translated
    deviations: Counter[str] = field(default_factory=Counter)
    mismatches: list[str] = field(default_factory=list)

    @property
    def percent(self) -> float:
        return 100.0 * (self.agree + sum(self.deviations.values())) / self.probes

    def line(self) -> str:
        dev = ", ".join(f"{k} {v}" for k, v in sorted(self.deviations.items()))
        return (f"{self.arch} seed {self.seed}: {self.percent:.2f}% agree "
                f"({self.agree} identical of which {self.mapped} translated, {sum(self.deviations.values())} documented "
                f"Unicorn deviations{': ' + dev if dev else ''}, "
                f"{len(self.mismatches)} mismatches of {self.probes})")


def live_image(plugin: Plugin, image: PhysImage) -> tuple[PhysImage, list[ctypes.Array]]:
    """`image` copied into host buffers Unicorn can map; the copy is what both
    sides then read (Unicorn's A/D write-backs land in it)."""
    bufs = [ctypes.create_string_buffer(bytes(data), len(data)) for _, data in image.regions]
    live = PhysImage([(base, memoryview(b).cast("B"))
                      for (base, _), b in zip(image.regions, bufs, strict=True)])
    return live, bufs


def _new_cpu(plugin: Plugin, arch: Arch, bufs: list[ctypes.Array], user: bool) -> unicorn.Uc:
    uc = unicorn.Uc(arch.uc_arch, arch.uc_mode)
    if plugin.cpu_model is not None:
        uc.ctl_set_cpu_model(plugin.cpu_model)
    uc.ctl_set_tcg_buffer_size(4 << 20)
    for (base, size), buf in zip(plugin.regions, bufs, strict=True):
        uc.mem_map_ptr(base, size, unicorn.UC_PROT_ALL, ctypes.addressof(buf))
    plugin.cpu(uc, user)
    return uc


def compare(arch_name: str, n: int = 10000, seed: int = 1) -> Result:
    """Run n probes over one seed's hostile image."""
    if arch_name not in PLUGINS:
        load_plugins()
    plugin = PLUGINS[arch_name]
    rng = random.Random(f"{arch_name}/{seed}")
    case = plugin.build(rng)
    view, bufs = live_image(plugin, case.mem)
    case.mem = view
    arch0 = case.contexts[0].arch
    cpus = {user: _new_cpu(plugin, arch0, bufs, user) for user in (False, True)}
    current: dict[bool, int] = {}
    res = Result(arch_name, seed, n)
    for _ in range(n):
        ci = rng.randrange(len(case.contexts))
        ctx = case.contexts[ci]
        user = rng.random() < 0.5
        acc = rng.choice(list(Access))
        if rng.random() < 0.1:
            va = plugin.random_va(rng, ctx)
        else:
            va = sample_va(rng, view, ctx, case.filled, arch0.byteorder)
        va |= rng.randrange(arch0.uc_page_size) & ~3
        uc = cpus[user]
        if current.get(user) != ci:
            plugin.enter(uc, ctx)
            current[user] = ci
        ours = ctx.arch.translate_functional(view, ctx.root, va, acc, user)
        theirs = uc_translate(uc, va, acc)
        uc.ctl(unicorn.UC_CTL_TLB_FLUSH, unicorn.UC_CTL_IO_WRITE)
        mine = ours.pa(va) if isinstance(ours, Translation) else None
        if mine == theirs:
            res.agree += 1
            res.mapped += mine is not None
            continue
        dev = plugin.deviation(case, ctx, va, acc, user, ours, theirs)
        if dev is not None:
            res.deviations[dev] += 1
            continue
        res.mismatches.append(
            f"{arch_name} seed {seed} {ctx.label} {'user' if user else 'supervisor'} "
            f"{acc.name} {va:#x}: ptemu {ours} unicorn "
            f"{'fault' if theirs is None else hex(theirs)}")
    return res


def main(argv: Sequence[str]) -> int:
    load_plugins()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("arches", nargs="*", help=f"arches to check (default: {' '.join(PLUGINS)})")
    ap.add_argument("--probes", type=int, default=10000, help="probes per seed (default 10000)")
    ap.add_argument("--seeds", type=int, default=5, help="seeds 1..S (default 5)")
    args = ap.parse_args(argv)
    unknown = [a for a in args.arches if a not in PLUGINS]
    if unknown or args.probes <= 0 or args.seeds <= 0:
        what = f"no oracle for {', '.join(unknown)} (have {', '.join(PLUGINS)})" if unknown \
            else "--probes and --seeds must be positive"
        print(f"oracle: {what}", file=sys.stderr)
        return 2
    rc = 0
    for name in args.arches or list(PLUGINS):
        for seed in range(1, args.seeds + 1):
            res = compare(name, args.probes, seed)
            print(res.line(), flush=True)
            for line in res.mismatches[:5]:
                print("  " + line)
            rc |= bool(res.mismatches)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
