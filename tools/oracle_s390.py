"""Differential oracle plugin for s390 (z/Architecture DAT, every ASCE type).

Hostile images, written from raw bits (PoP chapter 3, pgtable_facts.md
7.2, not ptemu's encoders): region-first, -second and -third tables and
segment tables of four 4 KiB blocks, 2 KiB page tables, drawn from pools
so that an entry may point to a table of the wrong type, into the middle
of another table, to a table shared with other parents, or outside
storage. Entries are well formed for their level, or garbage, or carry
flipped bits: invalid, protection, IEP, FC, common-segment/-region,
TT, TF, TL, the must-be-zero bit 52 and any other of the 64.

Address spaces: ASCEs of every designation type (region-first, -second,
-third, segment) with every table length, private space on or off,
real space sometimes, other control bits at random. Probes run in
supervisor and problem state (DAT does not look at it: both must agree
with the same walk).

Unicorn's s390x CPU has no EDAT facility in any model and only the "max"
model has IEP, so the walker is compared with `edat=False, iep=True` and
`storage_size` = the mapped memory (its addressing exception for a
frame beyond storage). EDAT's 1 MiB and 2 GiB frames are covered by
golden tests in tests/test_s390.py.
"""

from __future__ import annotations

import random

import oracle
import unicorn
from unicorn import s390x_const as us

from arch import get_arch
from arch import s390 as S
from arch.base import Access, Fault, WalkResult

MEM = 16 << 20
CRST = 4 << 12  # a region or segment table: 4 blocks of 512 entries
PT = 2048
PSW_PROBLEM = 1 << 48  # PSW bit 15: problem state
MASK64 = (1 << 64) - 1

# Which table an entry of each level points to, and that table's entry kind.
CHILD = {"r1": "r2", "r2": "r3", "r3": "seg", "seg": "pt"}
TT = {"r1": 0x0C, "r2": 0x08, "r3": 0x04, "seg": 0x00}
DT = TT  # the ASCE's designation type has the same encoding
# VA index fields (shift, bits) from each table type down.
FIELDS = {"r1": (53, 11), "r2": (42, 11), "r3": (31, 11), "seg": (20, 11), "pt": (12, 8)}
ORDER = ("r1", "r2", "r3", "seg", "pt")


def _walker(iep: bool) -> S.S390:
    return get_arch("s390", edat=False, iep=iep, storage_size=MEM)  # type: ignore[return-value]


def _next_region(e: int) -> int | None:
    return None if e & S.REG_INVALID else e & S.REG_ORIGIN


def _next_segment(e: int) -> int | None:
    return None if e & S.SEG_INVALID else e & S.SEG_ORIGIN


class S390Oracle(oracle.Plugin):
    arch_name = "s390"
    mem_size = MEM
    cpu_model = us.UC_CPU_S390X_MAX  # the only model with IEP

    def build(self, rng: random.Random) -> oracle.Case:
        mem = self.new_image()
        filled: dict[int, list[int]] = {}
        slots = rng.sample(range(1, MEM // CRST), 48)
        pools: dict[str, list[int]] = {
            "r1": [s * CRST for s in slots[0:6]], "r2": [s * CRST for s in slots[6:12]],
            "r3": [s * CRST for s in slots[12:20]], "seg": [s * CRST for s in slots[20:32]],
        }
        # page tables: 2 KiB halves of the remaining slots' pages
        pts = []
        for s in slots[32:48]:
            pts += [s * CRST + k * PT for k in rng.sample(range(8), 3)]
        pools["pt"] = pts
        every = [t for v in pools.values() for t in v]

        def put(pa: int, val: int) -> None:
            mem[pa:pa + 8] = (val & MASK64).to_bytes(8, "big")

        def outside() -> int:
            return rng.randrange(MEM, 1 << rng.choice((32, 40, 52, 64)))

        def target(level: str) -> int:
            r = rng.random()
            if r < 0.85:
                return rng.choice(pools[CHILD[level]])
            if r < 0.9:
                return rng.choice(every) + rng.choice((0, 0, PT, 4096))  # wrong type / mid-table
            if r < 0.93:
                return rng.randrange(MEM >> 11) << 11
            return outside()

        def pick(p: float, bit: int) -> int:
            return bit if rng.random() < p else 0

        def entry(level: str) -> int:
            r = rng.random()
            if r < 0.03:
                return rng.getrandbits(64)
            if level in ("r1", "r2", "r3"):
                tt = TT[level] if rng.random() < 0.88 else rng.choice(tuple(TT.values()))
                tf = 0 if rng.random() < 0.85 else rng.randrange(4)
                tl = 3 if rng.random() < 0.85 else rng.randrange(4)
                val = ((target(level) & S.REG_ORIGIN) | tt | (tf << 6) | tl
                       | pick(0.04, S.REG_INVALID) | pick(0.1, S.REG_PROTECT)
                       | pick(0.06, S.REG_COMMON) | pick(0.08, S.REG_LARGE) | pick(0.08, S.REG_NOEXEC))
                return oracle.flip_bits(rng, val, 64, 0.25)
            if level == "seg":
                tt = 0 if rng.random() < 0.9 else rng.choice((4, 8, 12))
                val = ((target(level) & S.SEG_ORIGIN) | tt | pick(0.04, S.SEG_INVALID)
                       | pick(0.12, S.SEG_PROTECT) | pick(0.08, S.SEG_COMMON)
                       | pick(0.08, S.SEG_LARGE) | pick(0.1, S.SEG_NOEXEC))
                return oracle.flip_bits(rng, val, 64, 0.25)
            frame = rng.randrange(MEM >> 12) << 12 if rng.random() < 0.85 else outside() & ~0xFFF
            val = (frame | pick(0.05, S.PAGE_INVALID) | pick(0.2, S.PAGE_PROTECT)
                   | pick(0.25, S.PAGE_NOEXEC) | pick(0.04, S.PAGE_BIT52) | rng.getrandbits(8))
            return oracle.flip_bits(rng, val, 64, 0.25)

        for level, tables in pools.items():
            n = 256 if level == "pt" else 2048
            for t in tables:
                idx = rng.sample(range(n), 32)
                filled[t] = idx
                for i in idx:
                    put(t + 8 * i, entry(level))
        contexts = []
        for kind in ("r1", "r2", "r3", "seg"):
            for _ in range(4):
                origin = rng.choice(pools[kind]) if rng.random() < 0.9 else rng.choice(every)
                tl = rng.randrange(4) if rng.random() < 0.3 else 3
                asce = (origin & S.ASCE_ORIGIN) | DT[kind] | tl
                asce |= pick(0.5, S.ASCE_PRIVATE) | pick(0.08, S.ASCE_REAL_SPACE)
                for bit in (S.ASCE_ALT_EVENT, S.ASCE_SPACE_SWITCH, 0x200, 0x10):
                    asce |= pick(0.3, bit)
                first = ORDER.index(kind)
                levels = []
                for lv in ORDER[first:]:
                    shift, bits = FIELDS[lv]
                    nxt = None if lv == "pt" else _next_segment if lv == "seg" else _next_region
                    levels.append(oracle.TableLevel(shift, bits, 8, nxt))
                iep = rng.random() < 0.7
                contexts.append(oracle.Context(_walker(iep), asce, origin & S.ASCE_ORIGIN,
                                               tuple(levels), {"iep": iep},
                                               f"asce={asce:#x} iep={int(iep)}"))
        return oracle.Case(mem, contexts, filled)

    def random_va(self, rng: random.Random, ctx: oracle.Context) -> int:
        return rng.getrandbits(rng.choice((31, 42, 53, 64))) & ~0xFFF

    def cpu(self, uc: unicorn.Uc, user: bool) -> None:
        uc.reg_write(us.UC_S390X_REG_PSWM, S.PSW_DAT | S.PSW_64BIT | (PSW_PROBLEM if user else 0))

    def enter(self, uc: unicorn.Uc, ctx: oracle.Context) -> None:
        cr0 = uc.reg_read(us.UC_S390X_REG_CR0)
        uc.reg_write(us.UC_S390X_REG_CR0, cr0 | S.CR0_IEP if ctx.regs["iep"] else cr0 & ~S.CR0_IEP)
        uc.reg_write(us.UC_S390X_REG_CR1, ctx.root)
        uc.ctl(unicorn.UC_CTL_TLB_FLUSH, unicorn.UC_CTL_IO_WRITE)

    def deviation(self, case: oracle.Case, ctx: oracle.Context, va: int, acc: Access, user: bool,
                  ours: WalkResult, theirs: int | None) -> str | None:
        if ctx.regs["iep"] or not (isinstance(ours, Fault) and ours.level == "pte"):
            return None
        pte = oracle.last_entry(ctx.arch, case.mem, ctx.root, va, acc, user)
        if pte and oracle.agrees_without(case, ctx, pte, S.PAGE_NOEXEC, va, acc, user, theirs):
            return "pte-bit55-without-iep"
        return None


oracle.register(S390Oracle())
