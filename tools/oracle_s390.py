"""Differential oracle plugin for s390 (z/Architecture DAT under a region-third ASCE).

Registers s390's table builder and CPU setup into tools/oracle.py. The
builder makes a random address space in one memory image: 16 KiB
region-third and segment tables and 2 KiB page tables (two per page, as
the halves allocator packs them) written with ptemu's own encoders
(`mk_table_entry`, `mk_pte`, `pte_mkdirty`, the arch's empty entries), then
flips random bits the DAT walk looks at: invalid, protect, IEP, the
must-be-zero bit 52, table type, TF/TL quarters, common-segment/-region,
FC (large) bits, and sets wild table origins outside RAM.

Unicorn's own MMU (UC_TLB_CPU) translates the same image with PSW.DAT on,
CR1 = the ASCE Linux builds (private space, region-third, TL 3) and CR0.IEP
set. Unicorn's s390x CPU has no EDAT facility in any model (a 1 MiB FC
segment entry is walked as a page-table pointer), and only the "max" model
has IEP; so the walker is compared with `edat=False, iep=True`, and the FC
bits the builder sets check that both sides ignore them without EDAT. The
EDAT paths (1 MiB and 2 GiB frames) are covered by golden tests instead.
"""

from __future__ import annotations

import importlib
import random
import sys

import unicorn
from unicorn import s390x_const as us

from arch import s390 as S
from arch.base import Arch, Prot


def _oracle():  # noqa: ANN202 - the oracle module
    """The oracle module that will run the comparison (the script itself when
    tools/oracle.py runs as __main__ and has not aliased itself)."""
    mod = sys.modules.get("oracle")
    if mod is None:
        main = sys.modules.get("__main__")
        mod = main if hasattr(main, "BUILDERS") and hasattr(main, "OracleCase") else \
            importlib.import_module("oracle")
    return mod


oracle = _oracle()

PAGE = 4096
CRST = 16384
HALF = 2048


def flip(rng: random.Random, val: int, bits: tuple[int, ...], p: float) -> int:
    for b in bits:
        if rng.random() < p:
            val ^= b
    return val


def _build_s390(rng: random.Random, arch: Arch, mem_size: int) -> oracle.OracleCase:
    assert isinstance(arch, S.S390)
    mem = bytearray(mem_size)
    nxt = [0x10000]

    def alloc(size: int) -> int:
        nxt[0] = -(-nxt[0] // size) * size
        pa = nxt[0]
        nxt[0] += size
        return pa

    def put(pa: int, val: int) -> None:
        mem[pa:pa + 8] = (val & S.MASK64).to_bytes(8, "big")

    def new_table(level: str) -> int:
        init = arch.table_init(level)
        pa = alloc(CRST if level != "pte" else HALF)
        mem[pa:pa + len(init)] = init
        return pa

    def wild() -> int:
        return rng.randrange(mem_size >> 12, 1 << 40) << 12  # outside RAM

    def frame() -> int:
        return rng.randrange(0x800, mem_size >> 12) << 12

    pud, pmd, pte = arch.levels
    root = new_table("pud")
    vas: list[int] = []
    for rtx in sorted(rng.sample(range(2048), 5)) + [0]:
        if rtx == 0 and any(v >> pud.shift == 0 for v in vas):
            continue
        base = rtx << pud.shift
        if rng.random() < 0.1:
            put(root + 8 * rtx, arch.mk_table_entry("pud", wild()))
            vas.append(base)
            continue
        seg = new_table("pmd")
        rtte = flip(rng, arch.mk_table_entry("pud", seg),
                    (S.REG_INVALID, S.REG_PROTECT, S.REG_LARGE, S.REG_COMMON, S.REG_NOEXEC, 0x08), 0.08)
        # TF/TL: usually Linux's 0/3, sometimes a narrower window
        if rng.random() < 0.2:
            tf = rng.randrange(4)
            rtte = (rtte & ~(S.REG_OFFSET | S.REG_LENGTH)) | (tf << 6) | rng.randrange(4)
        put(root + 8 * rtx, rtte)
        for sx in sorted(rng.sample(range(2048), 6)):
            va_seg = base | (sx << pmd.shift)
            r = rng.random()
            if r < 0.08:
                put(seg + 8 * sx, arch.mk_table_entry("pmd", wild()))
                vas.append(va_seg)
                continue
            if r < 0.2:
                # a THP-style large entry: without EDAT its origin is a page table
                ste = arch.mk_pmd_huge(rng.randrange(1, mem_size >> 20) << 20,
                                       Prot(write=rng.random() < 0.5, exec=rng.random() < 0.5))
                put(seg + 8 * sx, flip(rng, ste, (S.SEG_INVALID, S.SEG_PROTECT), 0.1))
                vas += [va_seg | (rng.randrange(256) << 12) for _ in range(3)]
                continue
            pt = new_table("pte")
            ste = flip(rng, arch.mk_table_entry("pmd", pt),
                       (S.SEG_INVALID, S.SEG_PROTECT, S.SEG_COMMON, S.SEG_NOEXEC, S.SEG_LARGE, 0x04), 0.06)
            put(seg + 8 * sx, ste)
            for px in sorted(rng.sample(range(256), 8)):
                prot = Prot(write=rng.random() < 0.7, exec=rng.random() < 0.4)
                val = arch.mk_pte(frame(), prot)
                if rng.random() < 0.6:
                    val = arch.pte_mkdirty(val)
                val = flip(rng, val, (S.PAGE_INVALID, S.PAGE_PROTECT, S.PAGE_NOEXEC), 0.12)
                val = flip(rng, val, (S.PAGE_BIT52,), 0.04)
                put(pt + 8 * px, val)
                vas.append(va_seg | (px << 12))
            vas.append(va_seg | (rng.randrange(256) << 12))  # often an empty pte
        vas.append(base | (rng.randrange(2048) << pmd.shift))  # often an empty segment entry
    vas.append(rng.randrange(1 << arch.va_bits, 1 << 50) & ~0xFFF)  # beyond the ASCE's reach
    return oracle.OracleCase(arch, mem, root, vas)


def _setup_s390(uc: unicorn.Uc, root: int) -> None:
    arch = S.S390(edat=False)
    uc.reg_write(us.UC_S390X_REG_PSWM, S.PSW_DAT | S.PSW_64BIT)
    uc.reg_write(us.UC_S390X_REG_CR0, uc.reg_read(us.UC_S390X_REG_CR0) | S.CR0_IEP)
    uc.reg_write(us.UC_S390X_REG_CR1, arch.asce(root))
    uc.ctl(unicorn.UC_CTL_TLB_FLUSH, unicorn.UC_CTL_IO_WRITE)


oracle.BUILDERS["s390"] = _build_s390
oracle.SETUPS["s390"] = _setup_s390
oracle.USER_MODE["s390"] = False  # DAT has no user/supervisor bit; separate ASCEs instead
oracle.ARCH_OPTIONS["s390"] = {"edat": False, "iep": True}
oracle.CPU_MODELS["s390"] = us.UC_CPU_S390X_MAX  # the only model with IEP
