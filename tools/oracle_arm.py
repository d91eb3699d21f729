"""Differential oracle plugin for arm (ARMv7 short descriptors, no LPAE).

Registers arm's table builder and CPU setup into tools/oracle.py. The
builder makes a random address space in one memory image: Linux-style PTE
pages written with ptemu's own encoders (`mk_table_entry`, `mk_pte`,
`set_entry_ops`, so the hardware copies are what `cpu_v7_set_pte_ext`
derives) with random Linux bit flips, raw hardware L2 tables with random
small/large/fault descriptors, 1 MiB sections, supersections, garbage fault
entries, random domains and wild table pointers. Unicorn's own MMU
(UC_TLB_CPU) is set up on the same image: TTBR0 = root, TTBCR = 0, the DACR
ptemu's walker assumes, SCTLR.M = 1 (unicorn_facts.md section 5: the
binding's `cpr_write` takes el=0 for the bank these registers live in).

The oracle CPU runs in USR mode, as guest programs do, so AP's user checks
are compared; `compare_privileged()` runs the same comparison in SVC mode
(privileged rights and PXN).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import oracle
import unicorn
from unicorn import arm_const as ua

from arch import arm as A
from arch.base import Arch, Prot

PAGE = 4096


def _build_arm(rng: random.Random, arch: Arch, mem_size: int) -> oracle.OracleCase:
    assert isinstance(arch, A.Arm)
    mem = bytearray(mem_size)
    nxt = [0x20000]

    def alloc() -> int:
        pa = nxt[0]
        nxt[0] += PAGE
        return pa

    def put(pa: int, val: int) -> None:
        mem[pa:pa + 4] = (val & A.WORD).to_bytes(4, "little")

    def get(pa: int) -> int:
        return int.from_bytes(mem[pa:pa + 4], "little")

    def rand_page() -> int:
        return rng.randrange(0x400, mem_size // PAGE) * PAGE

    def domain() -> int:
        # mostly the four client domains of Linux's DACR, sometimes a no-access one
        return (rng.randrange(4) if rng.random() < 0.8 else rng.randrange(16)) << A.PMD_DOMAIN_SHIFT

    def flip(val: int, bits: list[int], p: float) -> int:
        for b in bits:
            if rng.random() < p:
                val ^= b
        return val

    root = 0x10000  # 16 KiB-aligned
    vas: list[int] = []
    l1_bits = [A.PMD_PXNTABLE, A.PMD_BIT4, 1 << 3, 1 << 9, 1 << 6, 1 << 7, A.PMD_TYPE_SECT]
    linux_bits = [A.L_PTE_PRESENT, A.L_PTE_YOUNG, A.L_PTE_DIRTY, A.L_PTE_RDONLY, A.L_PTE_USER,
                  A.L_PTE_XN, A.L_PTE_NONE, A.L_PTE_SHARED, 1 << 4]
    hw_bits = [A.PTE_EXT_XN, A.PTE_TYPE_SMALL, A.PTE_EXT_AP0, A.PTE_EXT_AP1, A.PTE_EXT_APX,
               A.PTE_EXT_NG, A.PTE_BUFFERABLE]
    kinds = ["linux", "raw-table", "section", "supersection", "fault", "wild"]
    for pair in rng.sample(range(2048), 120):
        kind = rng.choices(kinds, weights=[5, 3, 3, 1, 1, 1])[0]
        va_pair = pair << 21
        l1_pa = root + pair * 8
        if kind == "linux":
            page = alloc()
            for op in arch.set_entry_ops("pmd", l1_pa, arch.mk_table_entry("pmd", page)):
                put(op.pa, op.value)
            for half in (0, 4):
                if rng.random() < 0.3:  # another domain, PXN off, a stray bit...
                    val = flip(get(l1_pa + half), l1_bits, 0.3) & ~A.PMD_DOMAIN_MASK
                    put(l1_pa + half, val | domain())
            for pti in rng.sample(range(512), 16):
                prot = Prot(write=rng.random() < 0.7, exec=rng.random() < 0.5,
                            user=rng.random() < 0.9)
                pte = arch.mk_pte(rand_page(), prot)
                pte = arch.pte_mkdirty(pte) if rng.random() < 0.6 else pte
                pte = flip(pte, linux_bits, 0.1)
                ptep = page + pti * 4
                for op in arch.set_entry_ops("pte", ptep, pte):
                    put(op.pa, op.value)
                if rng.random() < 0.15:
                    put(ptep + A.PTE_HWTABLE_OFF, flip(get(ptep + A.PTE_HWTABLE_OFF), hw_bits, 0.3))
                vas.append(va_pair | (pti << 12))
            vas.append(va_pair | (rng.randrange(512) << 12))  # usually empty
        elif kind == "raw-table":
            for half in (0, 1):
                table = alloc() + rng.randrange(4) * 1024
                l1 = table | A.PMD_TYPE_TABLE | domain() | (A.PMD_PXNTABLE if rng.random() < 0.5 else 0)
                put(l1_pa + 4 * half, l1)
                for idx in rng.sample(range(256), 12):
                    d = rng.getrandbits(32)
                    t = rng.choices([0, A.PTE_TYPE_LARGE, A.PTE_TYPE_SMALL, 3], weights=[1, 2, 4, 2])[0]
                    base = rand_page() & (A.LARGE_BASE if t == A.PTE_TYPE_LARGE else A.SMALL_BASE)
                    low = A.LARGE_BASE ^ A.WORD if t == A.PTE_TYPE_LARGE else 0xFFF
                    put(table + idx * 4, base | (d & low & ~3) | t)
                    vas.append(va_pair | (half << 20) | (idx << 12))
        elif kind == "section":
            for half in (0, 1):
                d = rng.getrandbits(32)
                t = rng.choice([A.PMD_TYPE_SECT, 3])
                base = rng.randrange(mem_size >> 20) << 20
                d &= 0xFFFFF & ~(A.PMD_SECT_SUPER | A.PMD_DOMAIN_MASK | 3)
                put(l1_pa + 4 * half, base | d | domain() | t)
                vas += [va_pair | (half << 20) | (rng.randrange(256) << 12) for _ in range(3)]
        elif kind == "supersection":
            d = rng.getrandbits(32)
            put(l1_pa, (d & 0xFFFF & ~3) | A.PMD_SECT_SUPER | rng.choice([2, 3]))
            vas += [va_pair | (rng.randrange(256) << 12) for _ in range(3)]
        elif kind == "fault":
            put(l1_pa, rng.getrandbits(32) & ~3)
            put(l1_pa + 4, 0)
            vas.append(va_pair)
            vas.append(va_pair | (1 << 20))
        else:  # a table pointer outside RAM
            put(l1_pa, (rng.randrange(mem_size, 1 << 32) & A.TABLE_BASE) | A.PMD_TYPE_TABLE
                | (A.DOMAIN_USER << A.PMD_DOMAIN_SHIFT))
            vas.append(va_pair | (rng.randrange(256) << 12))
    # No supersection may carry extended base bits (PA[39:32] in bits 20-23 and
    # 5-8): Unicorn's CPU honours them, but uc_vmem_translate truncates the PA
    # to 32 bits (measured), so tests/test_arm.py checks them by execution.
    for i in range(4096):
        d = get(root + 4 * i)
        if d & A.PMD_TYPE_SECT and d & A.PMD_SECT_SUPER:
            put(root + 4 * i, d & ~A.SUPERSECTION_EXT)
    return oracle.OracleCase(arch, mem, root, vas)


def _setup_mmu(uc: unicorn.Uc, root: int) -> None:
    # cpr_write(coproc, opc1, crn, crm, opc2, el, is_64, value)
    uc.cpr_write(15, 0, 2, 0, 0, 0, False, root)  # TTBR0
    uc.cpr_write(15, 0, 2, 0, 2, 0, False, 0)  # TTBCR: N = 0, short descriptors
    uc.cpr_write(15, 0, 3, 0, 0, 0, False, A.DACR_USER)  # DACR
    sctlr = uc.cpr_read(15, 0, 1, 0, 0, 0, False)
    uc.cpr_write(15, 0, 1, 0, 0, 0, False, sctlr | 1)  # SCTLR.M (AFE stays 0)


def _set_mode(uc: unicorn.Uc, mode: int) -> None:
    cpsr = uc.reg_read(ua.UC_ARM_REG_CPSR)
    uc.reg_write(ua.UC_ARM_REG_CPSR, (cpsr & ~A.CPSR_MODE_MASK) | mode)
    uc.ctl(unicorn.UC_CTL_TLB_FLUSH, unicorn.UC_CTL_IO_WRITE)


def _setup_arm_user(uc: unicorn.Uc, root: int) -> None:
    _setup_mmu(uc, root)
    _set_mode(uc, A.CPSR_MODE_USR)


CPSR_MODE_SVC = 0x13


def _setup_arm_svc(uc: unicorn.Uc, root: int) -> None:
    _setup_mmu(uc, root)
    _set_mode(uc, CPSR_MODE_SVC)


oracle.BUILDERS["arm"] = _build_arm
oracle.SETUPS["arm"] = _setup_arm_user
oracle.USER_MODE["arm"] = True  # the CPU runs in USR mode: AP user rights apply


@contextmanager
def _privileged() -> Iterator[None]:
    saved = oracle.SETUPS["arm"], oracle.USER_MODE["arm"]
    oracle.SETUPS["arm"], oracle.USER_MODE["arm"] = _setup_arm_svc, False
    try:
        yield
    finally:
        oracle.SETUPS["arm"], oracle.USER_MODE["arm"] = saved


def compare_privileged(n: int, seed: int = 1) -> tuple[int, list[str]]:
    """The same comparison with the CPU in SVC mode (privileged rights, PXN)."""
    with _privileged():
        return oracle.compare("arm", n, seed)
