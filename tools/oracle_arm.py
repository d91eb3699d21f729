"""Differential oracle plugin for arm (ARMv7 short descriptors, no LPAE).

Hostile images over two TTBR0 roots: Linux-style PTE pages (the Linux
copies and the hardware copies `cpu_v7_set_pte_ext` derives, from ptemu's
encoders, then with bits flipped in either copy) next to raw hardware L2
tables of random small/large/fault descriptors, 1 MiB sections and
supersections (with PA[39:32] bits), garbage L1 and L2 words, page-table
pointers into the L1 table itself or into another table's middle (aliases
across levels), shared L2 tables, pointers outside memory, and random
domains. Each root is probed under several DACRs (Linux's, and random
ones with no-access, reserved and manager domains), in USR and in SVC
mode (user and privileged rights, PXN), against Unicorn's own MMU with
TTBCR = 0 and SCTLR.M = 1 (the binding's `cpr_write` takes el=0 for the
bank these registers live in; unicorn_facts.md section 5).

Documented deviation: `uc_vmem_translate` returns the physical address
truncated to 32 bits (measured; its CPU does use PA[39:32] of a
supersection, which tests/test_arm.py checks by execution). A probe where
ptemu's PA is above 4 GiB and Unicorn's is its low 32 bits is counted as
`pa>=4GiB-truncated`.
"""

from __future__ import annotations

import random

import oracle
import unicorn
from unicorn import arm_const as ua

from arch import arm as A
from arch.base import Access, Prot, Translation, WalkResult

MEM = 16 << 20
PAGE = 4096
CPSR_MODE_SVC = 0x13


def _next_l2(e: int) -> int | None:
    return e & A.TABLE_BASE if e & A.PMD_TYPE_MASK == A.PMD_TYPE_TABLE else None


LEVELS = (oracle.TableLevel(20, 12, 4, _next_l2), oracle.TableLevel(12, 8, 4, None))


class ArmOracle(oracle.Plugin):
    arch_name = "arm"
    mem_size = MEM

    def build(self, rng: random.Random) -> oracle.Case:
        arch = A.Arm()
        mem = self.new_image()
        filled: dict[int, list[int]] = {}
        nxt = [0x40000]

        def alloc() -> int:
            pa = nxt[0]
            nxt[0] += PAGE
            return pa

        def put(pa: int, val: int) -> None:
            mem[pa:pa + 4] = (val & A.WORD).to_bytes(4, "little")

        def get(pa: int) -> int:
            return int.from_bytes(mem[pa:pa + 4], "little")

        def rand_page() -> int:
            return rng.randrange(0x40, MEM // PAGE) * PAGE if rng.random() < 0.9 \
                else rng.randrange(MEM, 1 << 32) & ~0xFFF

        def domain() -> int:
            return (rng.randrange(4) if rng.random() < 0.7 else rng.randrange(16)) << A.PMD_DOMAIN_SHIFT

        def flip(val: int, p: float) -> int:
            return oracle.flip_bits(rng, val, 32, p)

        roots = [0x10000, 0x20000]
        l2_tables: list[int] = []
        linux_bits = [A.L_PTE_PRESENT, A.L_PTE_YOUNG, A.L_PTE_DIRTY, A.L_PTE_RDONLY, A.L_PTE_USER,
                      A.L_PTE_XN, A.L_PTE_NONE, A.L_PTE_SHARED, 1 << 4]
        kinds = ["linux", "raw-table", "section", "supersection", "fault", "wild", "alias", "shared"]
        for root in roots:
            written: list[int] = []
            for pair in rng.sample(range(2048), 100):
                kind = rng.choices(kinds, weights=[5, 3, 3, 1, 1, 1, 1, 1])[0]
                if kind == "shared" and not l2_tables:
                    kind = "raw-table"
                l1_pa = root + pair * 8
                written += [2 * pair, 2 * pair + 1]
                if kind == "linux":
                    page = alloc()
                    for op in arch.set_entry_ops("pmd", l1_pa, arch.mk_table_entry("pmd", page)):
                        put(op.pa, op.value)
                    for half in (0, 4):
                        val = flip(get(l1_pa + half), 0.3)
                        if rng.random() < 0.3:
                            val = (val & ~A.PMD_DOMAIN_MASK) | domain()
                        put(l1_pa + half, val)
                    idx = rng.sample(range(512), 24)
                    for pti in idx:
                        prot = Prot(write=rng.random() < 0.7, exec=rng.random() < 0.5,
                                    user=rng.random() < 0.9)
                        pte = arch.mk_pte(rand_page(), prot)
                        pte = arch.pte_mkdirty(pte) if rng.random() < 0.6 else pte
                        for b in linux_bits:
                            if rng.random() < 0.08:
                                pte ^= b
                        ptep = page + pti * 4
                        for op in arch.set_entry_ops("pte", ptep, pte):
                            put(op.pa, op.value)
                        hw = ptep + A.PTE_HWTABLE_OFF
                        put(hw, flip(get(hw), 0.2))
                    for half in (0, 1):
                        t = page + A.PTE_HWTABLE_OFF + half * A.HW_TABLE_BYTES
                        filled[t] = [i - 256 * half for i in idx if i // 256 == half]
                        l2_tables.append(t)
                elif kind in ("raw-table", "alias", "shared"):
                    for half in (0, 1):
                        if kind == "raw-table":
                            table = alloc() + rng.randrange(4) * 1024
                        elif kind == "alias":  # the L1 table itself, or mid-way into an L2 table
                            table = rng.choice([root + rng.randrange(16) * 1024,
                                                rng.choice(l2_tables or [root]) + 512])
                        else:
                            table = rng.choice(l2_tables)
                        l1 = table | A.PMD_TYPE_TABLE | domain() | (A.PMD_PXNTABLE if rng.random() < 0.5 else 0)
                        put(l1_pa + 4 * half, flip(l1, 0.2))
                        if kind != "raw-table":
                            continue
                        idx = rng.sample(range(256), 16)
                        filled[table] = idx
                        l2_tables.append(table)
                        for i in idx:
                            d = rng.getrandbits(32)
                            t = rng.choices([0, A.PTE_TYPE_LARGE, A.PTE_TYPE_SMALL, 3], weights=[1, 2, 4, 2])[0]
                            base = rand_page() & (A.LARGE_BASE if t == A.PTE_TYPE_LARGE else A.SMALL_BASE)
                            low = A.LARGE_BASE ^ A.WORD if t == A.PTE_TYPE_LARGE else 0xFFF
                            put(table + i * 4, base | (d & low & ~3) | t)
                elif kind == "section":
                    for half in (0, 1):
                        d = rng.getrandbits(32)
                        t = rng.choice([A.PMD_TYPE_SECT, 3])
                        base = rng.randrange(MEM >> 20) << 20 if rng.random() < 0.9 \
                            else rng.randrange(1 << 12) << 20
                        d &= 0xFFFFF & ~(A.PMD_SECT_SUPER | A.PMD_DOMAIN_MASK | 3)
                        put(l1_pa + 4 * half, base | d | domain() | t)
                elif kind == "supersection":
                    d = rng.getrandbits(32)
                    val = (d & 0xFFFF & ~3) | A.PMD_SECT_SUPER | rng.choice([2, 3])
                    if rng.random() < 0.7:
                        val &= ~A.SUPERSECTION_EXT  # PA[39:32] = 0: below 4 GiB
                    put(l1_pa, val)
                    put(l1_pa + 4, val)
                elif kind == "fault":
                    put(l1_pa, rng.getrandbits(32) & ~3)
                    put(l1_pa + 4, rng.getrandbits(32))
                else:  # a table pointer outside RAM
                    put(l1_pa, (rng.randrange(MEM, 1 << 32) & A.TABLE_BASE) | A.PMD_TYPE_TABLE
                        | (A.DOMAIN_USER << A.PMD_DOMAIN_SHIFT))
            filled[root] = written
        dacrs = [A.DACR_USER, 0xFFFF_FFFF]  # Linux's, and every domain manager
        dacrs += [rng.getrandbits(32) for _ in range(3)]
        contexts = [oracle.Context(A.Arm(dacr=d), r, r, LEVELS, {"dacr": d},
                                   f"ttbr0={r:#x} dacr={d:#010x}")
                    for r in roots for d in dacrs]
        return oracle.Case(mem, contexts, filled)

    def cpu(self, uc: unicorn.Uc, user: bool) -> None:
        uc.cpr_write(15, 0, 2, 0, 2, 0, False, 0)  # TTBCR: N = 0, short descriptors
        sctlr = uc.cpr_read(15, 0, 1, 0, 0, 0, False)
        uc.cpr_write(15, 0, 1, 0, 0, 0, False, sctlr | 1)  # SCTLR.M (AFE stays 0)
        cpsr = uc.reg_read(ua.UC_ARM_REG_CPSR)
        mode = A.CPSR_MODE_USR if user else CPSR_MODE_SVC
        uc.reg_write(ua.UC_ARM_REG_CPSR, (cpsr & ~A.CPSR_MODE_MASK) | mode)

    def enter(self, uc: unicorn.Uc, ctx: oracle.Context) -> None:
        # cpr_write(coproc, opc1, crn, crm, opc2, el, is_64, value)
        uc.cpr_write(15, 0, 2, 0, 0, 0, False, ctx.root)  # TTBR0
        uc.cpr_write(15, 0, 3, 0, 0, 0, False, ctx.regs["dacr"])  # DACR
        uc.ctl(unicorn.UC_CTL_TLB_FLUSH, unicorn.UC_CTL_IO_WRITE)

    def deviation(self, case: oracle.Case, ctx: oracle.Context, va: int, acc: Access, user: bool,
                  ours: WalkResult, theirs: int | None) -> str | None:
        if isinstance(ours, Translation) and ours.pa(va) >> 32 and theirs == ours.pa(va) & A.WORD:
            return "pa>=4GiB-truncated"
        return None


oracle.register(ArmOracle())
