"""ARMv7 with the 2-level short-descriptor format (no LPAE), as Linux uses it.

Owns every arm bit: the hardware first-level (L1) and second-level (L2)
descriptors (ARM ARM v7-A/R, B3.5 "Short-descriptor translation table
format", B3.7 "Memory access control"), Linux's own pte bits and how
`cpu_v7_set_pte_ext` derives a hardware entry from them
(arch/arm/mm/proc-v7-2level.S), the pmd pair `__pmd_populate` writes
(arch/arm/include/asm/pgalloc.h), the hardware walk, and the Unicorn /
Keystone / Capstone glue.

Layout (arch/arm/include/asm/pgtable-2level.h): the hardware L1 table has
4096 x 4-byte entries of 1 MiB each. Linux calls it the pgd and sees 2048
entries of 8 bytes, each a pair of L1 entries, with the pmd folded into it;
ptemu names that level "pmd" (shift 21), as the kernel model walks to the
pmd. One 4 KiB page holds a PTE table: Linux pt0 at +0, Linux pt1 at +1024
(together Linux's 512 x 4-byte ptes), hardware pt0 at +2048 and hardware pt1
at +3072 (256 x 4 bytes each, what the MMU reads). A pmd value in ptemu is
the pair as one little-endian 64-bit word: low = L1[2i], high = L1[2i+1].

The hardware has no accessed or dirty bits. Linux emulates them: a pte that
is not young gets a hardware entry of 0 (any access faults), one that is not
dirty gets a read-only hardware entry (the first write faults), and
handle_pte_fault() marks the Linux pte young/dirty, which rewrites both.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import ClassVar

import capstone
import keystone
import unicorn
from unicorn import arm_const as ua

from arch.base import (
    PERM_R,
    PERM_W,
    PERM_X,
    Access,
    Arch,
    CallConv,
    Fault,
    Level,
    MemOp,
    Prot,
    Translation,
    Walk,
    WalkStep,
)
from arch.radix import Descend, Geometry, RadixLevel, Step, WalkState, radix_walk

WORD = 0xFFFF_FFFF

# ---- Linux pte bits (pgtable-2level.h, L_PTE_*) --------------------------------
L_PTE_PRESENT = 1 << 0  # also L_PTE_VALID
L_PTE_YOUNG = 1 << 1
L_PTE_MT_SHIFT = 2
L_PTE_MT_MASK = 0xF << L_PTE_MT_SHIFT
L_PTE_MT_BUFFERABLE = 0x1 << L_PTE_MT_SHIFT
L_PTE_MT_WRITEALLOC = 0x7 << L_PTE_MT_SHIFT
L_PTE_DIRTY = 1 << 6
L_PTE_RDONLY = 1 << 7
L_PTE_USER = 1 << 8
L_PTE_XN = 1 << 9
L_PTE_SHARED = 1 << 10
L_PTE_NONE = 1 << 11
SWP_TYPE_SHIFT = 3  # __SWP_TYPE_SHIFT
SWP_OFFSET_SHIFT = 8  # __SWP_TYPE_BITS + __SWP_TYPE_SHIFT
_L_FLAG_NAMES = ((L_PTE_PRESENT, "PRESENT"), (L_PTE_YOUNG, "YOUNG"), (L_PTE_DIRTY, "DIRTY"),
                 (L_PTE_RDONLY, "RDONLY"), (L_PTE_USER, "USER"), (L_PTE_XN, "XN"),
                 (L_PTE_SHARED, "SHARED"), (L_PTE_NONE, "NONE"))

# ---- hardware L2 descriptors (ARM ARM B3.5.1; Linux PTE_*) ------------------------
PTE_TYPE_MASK = 0x3
PTE_TYPE_LARGE = 0x1  # 64 KiB page
PTE_TYPE_SMALL = 0x2  # 4 KiB page; bit 0 is then XN
PTE_EXT_XN = 1 << 0
PTE_BUFFERABLE = 1 << 2
PTE_CACHEABLE = 1 << 3
PTE_EXT_AP0 = 1 << 4
PTE_EXT_AP1 = 1 << 5
PTE_EXT_TEX_SHIFT = 6
PTE_EXT_APX = 1 << 9
PTE_EXT_SHARED = 1 << 10
PTE_EXT_NG = 1 << 11
LARGE_XN = 1 << 15
SMALL_BASE = 0xFFFF_F000
LARGE_BASE = 0xFFFF_0000
_HW_FLAG_NAMES = ((PTE_BUFFERABLE, "B"), (PTE_CACHEABLE, "C"), (PTE_EXT_AP0, "AP0"),
                  (PTE_EXT_AP1, "AP1"), (PTE_EXT_APX, "APX"), (PTE_EXT_SHARED, "S"),
                  (PTE_EXT_NG, "nG"))

# ---- hardware L1 descriptors (ARM ARM B3.5.1; Linux PMD_*) ------------------------
PMD_TYPE_MASK = 0x3
PMD_TYPE_FAULT = 0x0
PMD_TYPE_TABLE = 0x1
PMD_TYPE_SECT = 0x2  # 0x3 is a section with PXN where PXN is implemented
PMD_PXNTABLE = 1 << 2
PMD_BIT4 = 1 << 4
PMD_DOMAIN_SHIFT = 5
PMD_DOMAIN_MASK = 0xF << PMD_DOMAIN_SHIFT
TABLE_BASE = 0xFFFF_FC00
PMD_SECT_PXN = 1 << 0
PMD_SECT_B = 1 << 2
PMD_SECT_C = 1 << 3
PMD_SECT_XN = 1 << 4
PMD_SECT_AP0 = 1 << 10  # Linux: PMD_SECT_AP_WRITE
PMD_SECT_AP1 = 1 << 11  # Linux: PMD_SECT_AP_READ
PMD_SECT_APX = 1 << 15
PMD_SECT_S = 1 << 16
PMD_SECT_NG = 1 << 17
PMD_SECT_SUPER = 1 << 18
SECTION_BASE = 0xFFF0_0000
SUPERSECTION_BASE = 0xFF00_0000
SUPERSECTION_EXT = (0xF << 20) | (0xF << 5)  # PA[35:32], PA[39:36]

# Linux's domains (arch/arm/include/asm/domain.h, !CONFIG_IO_36) and the DACR
# a user task runs with on ARMv7 (DOMAIN_MANAGER is client without
# CONFIG_CPU_USE_DOMAINS; with SW PAN the user domain is client in user mode).
DOMAIN_KERNEL = 0
DOMAIN_USER = 1
DOMAIN_IO = 2
DOMAIN_VECTORS = 3
DOMAIN_NOACCESS = 0
DOMAIN_CLIENT = 1
DOMAIN_MANAGER = 3


def domain_val(dom: int, kind: int) -> int:
    return kind << (2 * dom)


DACR_USER = (domain_val(DOMAIN_USER, DOMAIN_CLIENT) | domain_val(DOMAIN_KERNEL, DOMAIN_CLIENT)
             | domain_val(DOMAIN_IO, DOMAIN_CLIENT) | domain_val(DOMAIN_VECTORS, DOMAIN_CLIENT))

# pmd_populate()'s prot for user tables on ARMv7 (arch/arm/mm/mmu.c
# user_pmd_table: _PAGE_USER_TABLE, plus PMD_PXNTABLE where ID_MMFR0 says the
# short descriptors have PXN, as on Unicorn's default Cortex-A15).
PAGE_USER_TABLE = PMD_TYPE_TABLE | PMD_BIT4 | (DOMAIN_USER << PMD_DOMAIN_SHIFT) | PMD_PXNTABLE

# What the MMU walks (TTBCR.N = 0): 4096 4-byte L1 entries of 1 MiB, then
# 256 4-byte L2 entries of 4 KiB.
GEOMETRY = Geometry((RadixLevel("pmd", 20, 12, 4), RadixLevel("pte", 12, 8, 4)))

# Linux pt0/pt1 take the first half of the page; the hardware copies follow
# (PTE_HWTABLE_OFF), and the second hardware table is 256 entries further.
PTE_HWTABLE_OFF = 2048
HW_TABLE_BYTES = 1024

# CPSR mode bits
CPSR_MODE_MASK = 0x1F
CPSR_MODE_USR = 0x10

_REGS = {**{f"r{i}": getattr(ua, f"UC_ARM_REG_R{i}") for i in range(13)},
         "sp": ua.UC_ARM_REG_SP, "lr": ua.UC_ARM_REG_LR, "pc": ua.UC_ARM_REG_PC}


def ap_perms(ap: int, user: bool) -> int:
    """Read/write rights of AP[2:0] = APX:AP1:AP0 for a client domain, SCTLR.AFE=0.

    ARM ARM B3.7.1 table B3-8 (ARMv6K and later; 0b100 is reserved, no access).
    """
    if ap in (0, 4):
        return 0
    if ap == 1:
        return 0 if user else PERM_R | PERM_W
    if ap == 2:
        return PERM_R if user else PERM_R | PERM_W
    if ap == 3:
        return PERM_R | PERM_W
    if ap == 5:
        return 0 if user else PERM_R
    return PERM_R  # 6, 7


class Arm(Arch):
    name: ClassVar[str] = "arm"
    page_size: ClassVar[int] = 4096
    uc_page_size: ClassVar[int] = 1024  # Unicorn's TARGET_PAGE_BITS for arm is 10
    byteorder: ClassVar[str] = "little"
    va_bits: ClassVar[int] = 32
    levels: ClassVar[tuple[Level, ...]] = (
        Level("pmd", 21, 2048, 8),
        Level("pte", 12, 512, 4),
    )
    callconv: ClassVar[CallConv] = CallConv(
        trap="svc #0", intno=2, nr_reg="r7",
        arg_regs=("r0", "r1", "r2", "r3", "r4"), ret_reg="r0")
    uc_arch: ClassVar[int] = unicorn.UC_ARCH_ARM
    uc_mode: ClassVar[int] = unicorn.UC_MODE_ARM
    ks_arch: ClassVar[int] = keystone.KS_ARCH_ARM
    ks_mode: ClassVar[int] = keystone.KS_MODE_ARM
    cs_arch: ClassVar[int] = capstone.CS_ARCH_ARM
    cs_mode: ClassVar[int] = capstone.CS_MODE_ARM
    code_base: ClassVar[int] = 0x0001_0000  # where arm ELF executables start
    stack_top: ClassVar[int] = 0xBF00_0000  # TASK_SIZE with the 3G/1G split
    word_size: ClassVar[int] = 4
    # Linux reads pmd_val(), one 32-bit word (the first of the pair): no tearing.
    pmd_read_tears: ClassVar[bool | None] = False
    # MMU_GATHER_RCU_TABLE_FREE is selected only with SMP + LPAE: here a
    # detached table is freed right after the flush IPI.
    rcu_table_free: ClassVar[bool] = False
    # ARMv5-style VIVT caches: update_mmu_cache() runs make_coherent() on the
    # other user mappings of a shared page (fault-armv.c).
    vivt_cache_aliasing: ClassVar[bool] = True
    # ...and with caches that alias Linux never splits the PTE locks
    # (mm/Kconfig: SPLIT_PTE_PTLOCKS depends on !ARM || CPU_CACHE_VIPT): every
    # table is locked by mm->page_table_lock, so adjust_pte() runs under the
    # fault's own lock (ptl == vmf->ptl) and two faults on aliases in
    # opposite mappings cannot deadlock on each other's ptl.
    split_pte_ptlocks: ClassVar[bool] = False
    # The implementation has PXN in short descriptors (ID_MMFR0.VMSA >= 4).
    has_pxn: ClassVar[bool] = True

    def __init__(self, dacr: int = DACR_USER) -> None:
        # The DACR the walker checks domains against (a CPU register, not memory).
        self.dacr = dacr

    # ---- root -------------------------------------------------------------
    def ram_limit(self) -> int:
        raise ValueError("arm: short-descriptor tables and TTBR0 carry 32-bit physical "
                         "addresses (LPAE, which reaches 40 bits, is not modelled): no RAM "
                         "above 4 GiB")

    def alloc_root(self, alloc_table: Callable[[str, int], int],
                   store: Callable[[int, int, int], None]) -> int:
        # pgd_alloc(): 16 KiB, 16 KiB-aligned (TTBR0 needs it with TTBCR.N=0);
        # user entries start empty. No kernel half is modelled.
        return alloc_table("pmd", 4096 * 4)

    # ---- Linux's view of entries ---------------------------------------------
    def entry_none(self, level: str, val: int) -> bool:
        # pmd_none() tests pmd_val(), the first word of the pair.
        return (val & WORD) == 0

    def entry_present(self, level: str, val: int) -> bool:
        if level == "pte":
            return bool(val & L_PTE_PRESENT)
        return (val & WORD) != 0  # pmd_present(pmd) = pmd_val(pmd)

    def mk_table_entry(self, level: str, table_pa: int) -> int:
        if level != "pmd":
            raise ValueError(f"arm has no {level} table entries")
        # __pmd_populate(): pmd[0] -> hardware pt0, pmd[1] -> hardware pt1.
        lo = ((table_pa & SMALL_BASE) + PTE_HWTABLE_OFF) | PAGE_USER_TABLE
        return ((lo + HW_TABLE_BYTES) << 32) | lo

    def table_pa(self, level: str, val: int) -> int:
        # pmd_page_vaddr(): the page, i.e. the Linux table, not the hardware one.
        return val & SMALL_BASE

    def entry_bad(self, level: str, val: int) -> bool:
        if level == "pmd":
            return bool(val & PMD_TYPE_SECT)  # pmd_bad() = pmd_leaf(): a section
        return False

    def mk_pte(self, pa: int, prot: Prot) -> int:
        # vm_get_page_prot(): _L_PTE_DEFAULT (present, young) | the memory type
        # of normal SMP memory (write-alloc, shared) | user/rdonly/xn.
        val = (pa & SMALL_BASE) | L_PTE_PRESENT | L_PTE_YOUNG | L_PTE_MT_WRITEALLOC | L_PTE_SHARED
        if prot.user:
            val |= L_PTE_USER
        if not prot.write:
            val |= L_PTE_RDONLY
        if not prot.exec:
            val |= L_PTE_XN
        return val

    def pte_pa(self, val: int) -> int:
        return val & SMALL_BASE

    def pte_write(self, val: int) -> bool:
        return not val & L_PTE_RDONLY

    def pte_mkyoung(self, val: int) -> int:
        return val | L_PTE_YOUNG

    def pte_mkdirty(self, val: int) -> int:
        return val | L_PTE_DIRTY

    # ---- swap ptes (arch/arm/include/asm/pgtable.h, v6.x): offset from bit
    # 8, type in bits 3-7, bit 2 the exclusive marker, bits 0-1 clear (not
    # present); the hardware copy of a non-present pte is 0.
    swap_offset_bits: ClassVar[int] = 24

    def mk_swap_pte(self, swp_type: int, offset: int) -> int:
        return (((swp_type & 0x1F) << SWP_TYPE_SHIFT) | (offset << SWP_OFFSET_SHIFT)) & WORD

    def swap_pte_entry(self, val: int) -> tuple[int, int]:
        return (val >> SWP_TYPE_SHIFT) & 0x1F, (val & WORD) >> SWP_OFFSET_SHIFT

    def pte_wrprotect(self, val: int) -> int:
        return val | L_PTE_RDONLY  # set_pte_ext() derives the hardware copy

    def pte_mkwrite(self, val: int) -> int:
        return val & ~L_PTE_RDONLY

    def pte_mkuncached(self, val: int) -> int:
        # fault-armv.c do_adjust_pte(): the memory type becomes shared_pte_mask
        # (L_PTE_MT_BUFFERABLE: normal, non-cacheable).
        return (val & ~L_PTE_MT_MASK) | L_PTE_MT_BUFFERABLE

    def hw_pte(self, val: int) -> int:
        """The hardware small-page entry cpu_v7_set_pte_ext() stores for Linux pte `val`.

        `ext` is PTE_EXT_NG for a valid user pte, as set_pte_at() passes for
        user addresses (all of ptemu's mappings are user mappings).
        """
        if not (val & L_PTE_YOUNG and val & L_PTE_PRESENT) or val & L_PTE_NONE:
            return 0  # old, not present, or PROT_NONE: the hardware must fault
        hw = val & ~(0x3F0 | PTE_TYPE_MASK)  # keeps pfn, B, C, S (and NONE's bit: 0 here)
        if val & L_PTE_USER:
            hw |= PTE_EXT_NG | PTE_EXT_AP1
        hw |= PTE_EXT_AP0 | PTE_TYPE_SMALL
        if val & (1 << 4):  # MT bit 2 is TEX[0] under TEX remap
            hw |= 1 << PTE_EXT_TEX_SHIFT
        if val & L_PTE_RDONLY or not val & L_PTE_DIRTY:
            hw |= PTE_EXT_APX  # read-only until Linux marks it dirty
        if val & L_PTE_XN:
            hw |= PTE_EXT_XN
        return hw

    def set_entry_ops(self, level: str, entry_pa: int, val: int) -> Sequence[MemOp]:
        if level == "pte":
            # set_pte_ext(): the Linux entry, then the hardware one 2048 bytes on.
            return (MemOp(entry_pa, 4, val & WORD),
                    MemOp(entry_pa + PTE_HWTABLE_OFF, 4, self.hw_pte(val & WORD)))
        # __pmd_populate() / pmd_clear(): pmdp[0], then pmdp[1], two word stores.
        return (MemOp(entry_pa, 4, val & WORD), MemOp(entry_pa + 4, 4, (val >> 32) & WORD))

    def describe_entry(self, level: str, val: int) -> str:
        if val == 0:
            return "none"
        if level == "pmd":
            return f"{self._describe_l1(val & WORD)} / {self._describe_l1(val >> 32)}"
        names = [n for bit, n in _L_FLAG_NAMES if val & bit]
        mt = (val & L_PTE_MT_MASK) >> L_PTE_MT_SHIFT
        return f"page {val & SMALL_BASE:#x} {'|'.join(names)} MT={mt:#x}"

    def _describe_l1(self, v: int) -> str:
        t = v & PMD_TYPE_MASK
        if t == PMD_TYPE_FAULT:
            return "fault" if v == 0 else f"fault {v:#x}"
        dom = (v & PMD_DOMAIN_MASK) >> PMD_DOMAIN_SHIFT
        if t == PMD_TYPE_TABLE:
            pxn = " PXN" if v & PMD_PXNTABLE else ""
            return f"hw table {v & TABLE_BASE:#x} dom{dom}{pxn}"
        size = "supersection" if v & PMD_SECT_SUPER else "section"
        return f"{size} {v & SECTION_BASE:#x}"

    def describe_hw_pte(self, hw: int) -> str:
        """Decoding of a hardware L2 entry, for dumps."""
        t = hw & PTE_TYPE_MASK
        if t == 0:
            return "fault" if hw == 0 else f"fault {hw:#x}"
        names = [n for bit, n in _HW_FLAG_NAMES if hw & bit]
        if t == PTE_TYPE_LARGE:
            return f"large {hw & LARGE_BASE:#x} {'|'.join(names)}"
        if hw & PTE_EXT_XN:
            names.append("XN")
        tex = (hw >> PTE_EXT_TEX_SHIFT) & 7
        return f"small {hw & SMALL_BASE:#x} {'|'.join(names)} TEX={tex}"

    def describe_hardware(self, level: str, entry_pa: int, read: Callable[[int, int], int]) -> str:
        if level != "pte":
            return ""
        hw_pa = entry_pa + PTE_HWTABLE_OFF
        hw = read(hw_pa, 4)
        return f"h/w [{hw_pa:#x}] = {hw:#010x} {self.describe_hw_pte(hw)}"

    # ---- hardware walker ---------------------------------------------------------
    def walk(self, root: int, va: int, access: Access, user: bool = True) -> Walk:
        """ARMv7 short-descriptor walk with TTBCR.N = 0 (TTBR0 covers all 4 GiB).

        The order of checks is the architecture's (B3.12.1): L1 type, domain
        (before the L2 read), then access permissions and execute-never.
        """
        st = WalkState(va & WORD, access, user, [])
        return (yield from radix_walk(GEOMETRY, root, st, self._decode))

    def _decode(self, st: WalkState, e: int, epa: int) -> Generator[WalkStep, int, Step]:
        if st.level.name == "pte":
            t2 = e & PTE_TYPE_MASK
            if t2 == 0:
                return st.fault("not-present")
            if t2 == PTE_TYPE_LARGE:
                size, base, xn = 1 << 16, e & LARGE_BASE, bool(e & LARGE_XN)
            else:
                size, base, xn = 1 << 12, e & SMALL_BASE, bool(e & PTE_EXT_XN)
            ap = ((e >> 4) & 3) | ((e >> 7) & 4)
            return self._leaf(st, st.acc["dom"], ap, xn, st.acc["pxn"], size, base, epa)
        t = e & PMD_TYPE_MASK
        if t == PMD_TYPE_FAULT or (t == 3 and not self.has_pxn):
            return st.fault("not-present")
        supersection = t != PMD_TYPE_TABLE and bool(e & PMD_SECT_SUPER)
        domain = 0 if supersection else (e & PMD_DOMAIN_MASK) >> PMD_DOMAIN_SHIFT
        dom = (self.dacr >> (2 * domain)) & 3
        if dom in (DOMAIN_NOACCESS, 2):  # 0b10 is reserved: a domain fault too
            return st.fault("protection")
        if t == PMD_TYPE_TABLE:
            st.acc["dom"] = dom
            st.acc["pxn"] = self.has_pxn and bool(e & PMD_PXNTABLE)
            return Descend(e & TABLE_BASE)
        if supersection:
            # PA[39:32] come from bits 20-23 and 5-8.
            high = ((e >> 20) & 0xF) | (((e >> 5) & 0xF) << 4)
            size, base = 1 << 24, (e & SUPERSECTION_BASE) | (high << 32)
        else:
            size, base = 1 << 20, e & SECTION_BASE
        ap = ((e >> 10) & 3) | ((e >> 13) & 4)
        pxn = bool(t == 3 and e & PMD_SECT_PXN)
        return self._leaf(st, dom, ap, bool(e & PMD_SECT_XN), pxn, size, base, epa)
        yield  # a generator (the MMU sets no bits: Linux emulates young/dirty)

    def _leaf(self, st: WalkState, dom: int, ap: int, xn: bool, pxn: bool, size: int, base: int,
              leaf_pa: int) -> Translation | Fault:
        user, va = st.user, st.va
        if dom == DOMAIN_MANAGER:
            perms = PERM_R | PERM_W | PERM_X  # no permission checks, XN ignored
        else:
            perms = ap_perms(ap, user)
            # Execution needs read permission, and no XN (nor PXN, privileged).
            if perms and not xn and not (pxn and not user):
                perms |= PERM_X
        if not perms & (PERM_R, PERM_W, PERM_X)[st.access]:
            return st.fault("protection")
        # ptemu's TLB model holds page-sized entries (and pmd-sized ones, which
        # are 2 MiB here): cache a 64 KiB page or a section 4 KiB at a time, a
        # subset of what the real TLB would hold.
        off = (va & ~(self.page_size - 1)) & (size - 1)
        return Translation(va & ~(self.page_size - 1), base + off, self.page_size, perms,
                           tuple(st.tables), leaf_pa)

    # ---- Unicorn glue ---------------------------------------------------------------
    def reg(self, name: str) -> int:
        return _REGS[name]

    def setup_cpu(self, uc: unicorn.Uc, cpu_index: int, root: int) -> None:
        # TTBR0 for the story only: translation is ptemu's (UC_TLB_VIRTUAL).
        # cpr_write's `el` selects the secure bank (unicorn_facts.md section 5).
        uc.cpr_write(15, 0, 2, 0, 0, 0, False, root)
        # Guest programs are user programs: drop from SVC (Unicorn's reset
        # mode) to USR, so `svc` is what a user task executes.
        cpsr = uc.reg_read(ua.UC_ARM_REG_CPSR)
        uc.reg_write(ua.UC_ARM_REG_CPSR, (cpsr & ~CPSR_MODE_MASK) | CPSR_MODE_USR)

    def get_pc(self, uc: unicorn.Uc) -> int:
        return uc.reg_read(ua.UC_ARM_REG_PC)

    def set_pc(self, uc: unicorn.Uc, pc: int) -> None:
        uc.reg_write(ua.UC_ARM_REG_PC, pc)

    def set_sp(self, uc: unicorn.Uc, sp: int) -> None:
        uc.reg_write(ua.UC_ARM_REG_SP, sp)
