"""powerpc book3s64 with 64 KiB Linux pages: the radix tree (POWER9+) or hash-MMU tables.

Owns every book3s64 page-table bit and both geometries Linux uses with 64 KiB
pages, the walkers, and the Unicorn/Keystone/Capstone glue for big-endian
64-bit guests. Sources: Power ISA v3.0B Book III 6.7.10 ("Radix Tree
Translation") and 6.7.11 (storage protection); Linux
arch/powerpc/include/asm/book3s/64/{pgtable,radix,radix-64k,hash,hash-64k}.h
and pgalloc.h; arch/powerpc/mm/book3s64/{radix_pgtable,hash_utils}.c.

Since v4.7 hash and radix share one Linux PTE format (the radix hardware
format; hash keeps its HPTE bookkeeping in bits radix leaves to software):

    V 1<<63 (_PAGE_PRESENT)   leaf 1<<62 (_PAGE_PTE)   SW0 1<<61 (_PAGE_INVALID)
    PKEY 56..60   RPN 12..55   SW 0x800/0x400/0x200   R 0x100   C 0x80
    ATT 0x30 (cache attributes)   PRIV 8   read 4   read/write 2   exec 1

A non-leaf entry is V | next table's physical address | log2(its entries) in
the low five bits (NLS). Hash's Linux tables carry no NLS (HASH_*_VAL_BITS
is V alone); nothing but Linux's own `hash_page` reads them.

Geometry (index bits root first, each entry 8 B, big-endian):

    mmu="radix" (default)  13/9/9/5: pgd 64 KiB, pud 4 KiB, pmd 4 KiB, pte 256 B
                           shifts 39/30/21/16; PMD_SIZE 2 MiB
    mmu="hash"             8/10/10/8: pgd 2 KiB, pud 8 KiB, pmd 8 KiB (+8 KiB of
                           THP deposit pointers), pte 2 KiB (+2 KiB hash-slot
                           half); shifts 44/34/24/16; PMD_SIZE 16 MiB

With radix the POWER9 hardware walks the tree from the PGD (the process-table
entry's RPDB, with RPDS 13 and a 52-bit tree), follows each entry's NLS and
sets R, and C on a store, atomically (PteSetBits). With hash the hardware
walks only the HPT; ptemu's TLB model stands for the HPT and the walk here is
the software refill, `hash_page()` -> `__find_linux_pte()` ->
`__hash_page_64K()`, which runs with interrupts off (`software_walker`).

Simplified on purpose: no process/partition table (the root is the PGD), no
pkeys/AMR checks, no HPTE busy bit (H_PAGE_BUSY is never set, so the kernel
never spins on it), privileged (kernel) accesses are not restricted by the
PRIV bit under radix. In hash mode every address is in the user region,
where `__hash_page` checks kernel accesses as user ones (a PRIVILEGED pte
refuses both), and a leaf at the pmd (16 MiB hugetlb or THP) or pud is
hashed as `__hash_page_huge` / `__hash_page_thp` would.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Generator
from typing import ClassVar

import capstone
import keystone
import unicorn
from unicorn import ppc_const as up

from arch import UnknownArch
from arch.base import (
    PERM_R,
    PERM_W,
    PERM_X,
    Access,
    Arch,
    CallConv,
    Fault,
    Level,
    Prot,
    PteRead,
    PteSetBits,
    Translation,
    Walk,
    WalkStep,
)
from arch.radix import Descend, Geometry, RadixLevel, Step, WalkState, radix_walk

# ---- entry bits (book3s/64/pgtable.h; ISA v3.0B 6.7.10.1 figures 28-30) --------
V = 1 << 63  # _PAGE_PRESENT: radix Valid
LEAF = 1 << 62  # _PAGE_PTE: radix Leaf (a page, not a pointer)
INVALID = 1 << 61  # _PAGE_INVALID = _RPAGE_SW0: present to Linux while V is clear
PKEY_MASK = 0x1F << 56  # _RPAGE_PKEY_BIT0..4
SW1 = 0x800  # _PAGE_DEVMAP
SW2 = 0x400  # _PAGE_SPECIAL
SW3 = 0x200  # _PAGE_SOFT_DIRTY
R = 0x100  # _PAGE_ACCESSED: Reference, set by the radix walker
C = 0x80  # _PAGE_DIRTY: Change, set by the radix walker on a store
RSV1 = 0x40  # _RPAGE_RSV1 (hash: H_PAGE_BUSY)
ATT_MASK = 0x30  # _PAGE_SAO 0x10, _PAGE_NON_IDEMPOTENT 0x20, _PAGE_TOLERANT 0x30
PRIV = 0x8  # _PAGE_PRIVILEGED: EAA privilege
READ = 0x4  # _PAGE_READ: EAA read
WRITE = 0x2  # _PAGE_WRITE: EAA read/write
EXEC = 0x1  # _PAGE_EXEC: EAA execute

# Hardware RPN field: real address bits 12..55 (_RPAGE_PA_MAX 56).
HW_RPN_MASK = ((1 << 56) - 1) & ~0xFFF
# Linux's PTE_RPN_MASK: bits below _PAGE_PA_MAX (53), page aligned.
PA_MAX = 53
# A non-leaf entry: next-level base (NLB, bits 8..59) and size (NLS, bits 0..4).
NLB_MASK = 0x0FFF_FFFF_FFFF_FF00
NLS_MASK = 0x1F
MIN_NLS = 5  # ISA: a table has at least 32 entries (256 B, one radix PTE fragment)
# PMD/PUD/P4D_MASKED_BITS: what Linux strips from a pointer entry to find the table.
MASKED_BITS = 0xC000_0000_0000_00FF
# RADIX_P{MD,UD,GD}_BAD_BITS: leaf, SW0 and the reserved bits 5..7 of a pointer entry.
RADIX_BAD_BITS = 0x6000_0000_0000_00E0

# Hash-only software bits (hash-64k.h as of v6.x).
H_PAGE_COMBO = 0x1000  # _RPAGE_RPN0: a 64K page made of 4K HPTEs
H_PAGE_4K_PFN = 0x2000  # _RPAGE_RPN1; on a PMD: H_PAGE_THP_HUGE
H_PAGE_THP_HUGE = H_PAGE_4K_PFN
H_PAGE_BUSY = RSV1
H_PAGE_HASHPTE = 1 << 55  # _RPAGE_RPN43: the PTE has an HPTE in the hash table
H_PTE_NONE_MASK = H_PAGE_BUSY | H_PAGE_HASHPTE | H_PAGE_COMBO  # _PAGE_HPTEFLAGS
RADIX_PTE_NONE_MASK = C | R  # an empty PTE can still get an R/C write-back

_FLAG_NAMES = ((V, "V"), (LEAF, "L"), (INVALID, "INV"), (H_PAGE_HASHPTE, "HASHPTE"),
               (SW1, "DEVMAP"), (SW2, "SPECIAL"), (SW3, "SOFT_DIRTY"), (R, "R"), (C, "C"),
               (PRIV, "PRIV"), (READ, "r"), (WRITE, "w"), (EXEC, "x"))

# Page sizes the radix walker accepts a leaf at (ISA: 4K, 64K, 2M, 1G).
RADIX_LEAF_SHIFTS = (12, 16, 21, 30)
RADIX_TREE_BITS = 52  # RTS of Linux's process-table entries
HASH_EA_BITS = 52  # H_PGTABLE_EADDR_SIZE with 64K pages

GEOMETRY: dict[str, tuple[Level, ...]] = {
    "radix": (Level("pgd", 39, 1 << 13, 8), Level("pud", 30, 1 << 9, 8),
              Level("pmd", 21, 1 << 9, 8), Level("pte", 16, 1 << 5, 8)),
    "hash": (Level("pgd", 44, 1 << 8, 8), Level("pud", 34, 1 << 10, 8),
             Level("pmd", 24, 1 << 10, 8), Level("pte", 16, 1 << 8, 8)),
}
# Bytes Linux allocates per table (the fragment size where tables are
# fragments): radix PTE_FRAG 256 B and PMD_FRAG 4 KiB; hash PTE_FRAG 4 KiB
# (2 KiB of PTEs + 2 KiB real_pte_t hidx), PMD_FRAG 16 KiB (8 KiB of PMDs +
# 8 KiB of deposited-pgtable pointers, with THP); PUDs come from a kmem cache
# (8 KiB without hugetlb); the radix PGD is one page, the hash PGD 2 KiB.
ALLOC_BYTES: dict[str, dict[str, int]] = {
    "radix": {"pgd": 1 << 16, "pud": 1 << 12, "pmd": 1 << 12, "pte": 1 << 8},
    "hash": {"pgd": 1 << 11, "pud": 1 << 13, "pmd": 1 << 14, "pte": 1 << 12},
}

# EAA bits that permit each access: read/write implies read.
_EAA_ALLOWS = {Access.READ: READ | WRITE, Access.WRITE: WRITE, Access.FETCH: EXEC}

_REGS = {f"r{i}": up.UC_PPC_REG_0 + i for i in range(32)}
# MSR: SF (64-bit), EE, PR (problem state: user), IR/DR (translation on).
MSR_SF, MSR_EE, MSR_PR, MSR_IR, MSR_DR = 1 << 63, 1 << 15, 1 << 14, 1 << 5, 1 << 4
_BARE_REG = re.compile(r"(?<![%\w])r([0-9]|[12][0-9]|3[01])\b")


class PowerPC(Arch):
    name: ClassVar[str] = "powerpc"
    page_size: ClassVar[int] = 1 << 16
    uc_page_size: ClassVar[int] = 1 << 12  # QEMU's ppc64 TARGET_PAGE_BITS is 12
    byteorder: ClassVar[str] = "big"
    va_bits: ClassVar[int] = 52
    levels: ClassVar[tuple[Level, ...]] = GEOMETRY["radix"]
    callconv: ClassVar[CallConv] = CallConv(
        trap="sc", intno=8, nr_reg="r0", arg_regs=("r3", "r4", "r5", "r6", "r7"),
        ret_reg="r3")
    uc_arch: ClassVar[int] = unicorn.UC_ARCH_PPC
    uc_mode: ClassVar[int] = unicorn.UC_MODE_PPC64 | unicorn.UC_MODE_BIG_ENDIAN
    ks_arch: ClassVar[int] = keystone.KS_ARCH_PPC
    ks_mode: ClassVar[int] = keystone.KS_MODE_PPC64 | keystone.KS_MODE_BIG_ENDIAN
    cs_arch: ClassVar[int] = capstone.CS_ARCH_PPC
    cs_mode: ClassVar[int] = capstone.CS_MODE_64 | capstone.CS_MODE_BIG_ENDIAN
    # below every scenario VMA at k * pmd_size, also with hash's 16 MiB PMDs
    code_base: ClassVar[int] = 0x0040_0000
    stack_top: ClassVar[int] = 0x7FFF_FFFF_0000
    word_size: ClassVar[int] = 8
    pgtable_policy: ClassVar[str] = "fragments"
    split_pmd_ptlocks: ClassVar[bool] = True  # PPC_BOOK3S_64 selects ARCH_ENABLE_SPLIT_PMD_PTLOCK
    tlb_flush_kind: ClassVar[str] = "broadcast"  # tlbie reaches every CPU in hardware
    rcu_table_free: ClassVar[bool] = True

    def __init__(self, mmu: str = "radix", **unknown: object) -> None:
        if unknown:
            raise UnknownArch(f"powerpc has no arch option {', '.join(sorted(unknown))!s} "
                              "(known: mmu = \"radix\" | \"hash\")")
        if mmu not in GEOMETRY:
            raise UnknownArch(f"powerpc mmu must be 'radix' or 'hash', got {mmu!r}")
        self.mmu = mmu
        self.levels = GEOMETRY[mmu]
        # hash_page() refills from the Linux tables in software, IRQs off
        self.software_walker = mmu == "hash"
        self.collapse_flush_serializes = mmu == "hash"
        # arch_supports_page_table_move(): radix_enabled() (book3s64 pgtable.h)
        self.have_move_pmd = mmu == "radix"
        self._child = {p.name: c for p, c in zip(self.levels, self.levels[1:], strict=False)}
        # The radix walk's geometry: the root's index width is the process-table
        # entry's RPDS; below it each entry's NLS says (Descend(table, nls)).
        self._geometry = Geometry(tuple(RadixLevel(lv.name, lv.shift, lv.entries.bit_length() - 1, 8)
                                        for lv in GEOMETRY["radix"]))

    # ---- root -------------------------------------------------------------
    def alloc_root(self, alloc_table: Callable[[str, int], int],
                   store: Callable[[int, int, int], None]) -> int:
        # pgd_alloc(): radix__pgd_alloc takes one page; hash a PGT_CACHE object.
        return alloc_table("pgd", ALLOC_BYTES[self.mmu]["pgd"])

    def table_alloc_bytes(self, level: str) -> int:
        return ALLOC_BYTES[self.mmu][level]

    # ---- Linux's view of entries ---------------------------------------------
    @property
    def pte_rpn_mask(self) -> int:
        return ((1 << PA_MAX) - 1) & ~(self.page_size - 1)

    def entry_none(self, level: str, val: int) -> bool:
        if level == "pte":
            mask = H_PTE_NONE_MASK if self.mmu == "hash" else RADIX_PTE_NONE_MASK
            return val & ~mask == 0
        return val == 0

    def entry_present(self, level: str, val: int) -> bool:
        if level == "pte":
            # pte_present(): hardware-valid, or a leaf marked _PAGE_INVALID while
            # ptep_set_access_flags() has it temporarily invalid
            return val & (V | LEAF) == V | LEAF or val & (INVALID | LEAF) == INVALID | LEAF
        if level == "pmd":
            return bool(val & (V | INVALID))  # a splitting THP is still present
        return bool(val & V)

    def mk_table_entry(self, level: str, table_pa: int) -> int:
        # p{gd,ud,md}_populate(): __pa(table) | P{GD,UD,MD}_VAL_BITS
        val = V | (table_pa & NLB_MASK)
        if self.mmu == "radix":
            val |= self._child[level].entries.bit_length() - 1  # RADIX_*_VAL_BITS' NLS
        return val

    def table_pa(self, level: str, val: int) -> int:
        return val & ~MASKED_BITS

    def entry_bad(self, level: str, val: int) -> bool:
        if level == "pte":
            return False
        if level == "pmd" and self.pmd_trans_huge(val):
            return False
        if self.mmu == "radix":
            return bool(val & RADIX_BAD_BITS)
        if level == "pmd":
            return bool(val & (ALLOC_BYTES["hash"]["pte"] - 1))  # H_PMD_BAD_BITS
        if level == "pud":
            return bool(val & (ALLOC_BYTES["hash"]["pmd"] - 1))  # H_PUD_BAD_BITS
        return val == 0  # hash__p4d_bad

    def mk_pte(self, pa: int, prot: Prot) -> int:
        # pfn_pte(pfn, vm_page_prot) | _PAGE_PTE; _PAGE_BASE = PRESENT | ACCESSED,
        # and every user protection but PAGE_NONE includes _PAGE_READ
        val = (pa & self.pte_rpn_mask) | V | LEAF | R | READ
        if prot.write:
            val |= WRITE
        if prot.exec:
            val |= EXEC
        if not prot.user:
            val |= PRIV
        return val

    def pte_pa(self, val: int) -> int:
        return val & self.pte_rpn_mask

    def pte_write(self, val: int) -> bool:
        return bool(val & WRITE)

    def pte_mkyoung(self, val: int) -> int:
        return val | R

    def pte_mkdirty(self, val: int) -> int:
        return val | C | SW3  # pte_mkdirty() also sets _PAGE_SOFT_DIRTY

    def pte_wrprotect(self, val: int) -> int:
        return val & ~WRITE

    def pte_mkwrite(self, val: int) -> int:
        return val | WRITE

    def pmd_trans_huge(self, val: int) -> bool:
        if not self.entry_present("pmd", val):
            return False
        if self.mmu == "radix":
            return val & (LEAF | SW1) == LEAF  # radix__pmd_trans_huge: leaf, not devmap
        return val & (LEAF | H_PAGE_THP_HUGE) == LEAF | H_PAGE_THP_HUGE

    def mk_pmd_huge(self, pa: int, prot: Prot) -> int:
        val = self.mk_pte(pa & ~(self.pmd_size - 1), prot)
        return val | (H_PAGE_THP_HUGE if self.mmu == "hash" else 0)  # pmd_mkhuge()

    # ---- swap ptes and pmds (arch/powerpc/include/asm/book3s/64/pgtable.h,
    # v6.x, radix and hash alike): the type in the low five bits, the offset
    # at PAGE_SHIFT within PTE_RPN_MASK, and _PAGE_PTE set; _PAGE_PRESENT
    # and _PAGE_INVALID clear. A pmd migration entry is the same value
    # (pte_pmd): book3s64 selects ARCH_ENABLE_THP_MIGRATION.
    swap_offset_bits: ClassVar[int] = PA_MAX - 16

    def mk_swap_pte(self, swp_type: int, offset: int) -> int:
        return (swp_type & 0x1F) | ((offset << self.page_size.bit_length() - 1) & self.pte_rpn_mask) | LEAF

    def swap_pte_entry(self, val: int) -> tuple[int, int]:
        return val & 0x1F, (val & self.pte_rpn_mask) >> (self.page_size.bit_length() - 1)

    def mk_swap_pmd(self, swp_type: int, offset: int) -> int:
        return self.mk_swap_pte(swp_type, offset)

    def swap_pmd_entry(self, val: int) -> tuple[int, int]:
        return self.swap_pte_entry(val)

    def pmd_huge_pa(self, val: int) -> int:
        return val & self.pte_rpn_mask & ~(self.pmd_size - 1)

    def pmd_mkinvalid(self, val: int) -> int:
        # pmdp_invalidate(): pmd_hugepage_update(_PAGE_PRESENT -> _PAGE_INVALID)
        return (val & ~V) | INVALID

    def pmd_huge_valid(self, val: int) -> bool:
        return bool(val & V) and self.pmd_trans_huge(val)

    def pmd_dirty(self, val: int) -> bool:
        return bool(val & C)  # _PAGE_DIRTY: the hardware's C bit

    @property
    def thp_deposit(self) -> str:  # type: ignore[override]
        # radix__pgtable_trans_huge_deposit: a list_head in the table;
        # hash__pgtable_trans_huge_deposit: *(pmdp + PTRS_PER_PMD) = pgtable
        return "slot" if self.mmu == "hash" else "list"

    def describe_entry(self, level: str, val: int) -> str:
        if val == 0:
            return "none"
        if not val & LEAF and level != "pte":
            # a pointer: its low bits are the table address and NLS, not flags
            nls = f" NLS={val & NLS_MASK}" if self.mmu == "radix" else ""
            return f"table {val & ~MASKED_BITS:#x}{nls} {'V' if val & V else 'not valid'}"
        names = [n for bit, n in _FLAG_NAMES if val & bit]
        att = (val & ATT_MASK) >> 4
        if att:
            names.append(("", "SAO", "NON_IDEMPOTENT", "TOLERANT")[att])
        if val & PKEY_MASK:
            names.append(f"pkey{(val & PKEY_MASK) >> 56}")
        size = self.page_size if level == "pte" else 1 << self.level(level).shift
        target = f"page {val & self.pte_rpn_mask & ~(size - 1):#x}"
        if level != "pte":
            target = "huge " + target
        return f"{target} {'|'.join(names)}"

    # ---- walkers ----------------------------------------------------------------
    def walk(self, root: int, va: int, access: Access, user: bool = True) -> Walk:
        if self.mmu == "hash":
            return (yield from self._hash_page(root, va, access, user))
        return (yield from self._radix_walk(root, va, access, user))

    def _radix_walk(self, root: int, va: int, access: Access, user: bool) -> Walk:
        """ISA v3.0B 6.7.10.2: from the root, each PDE's NLS sizes the next table."""
        st = WalkState(va, access, user, [])
        if va >> RADIX_TREE_BITS:
            # outside the tree (or not quadrant 0): a segment interrupt in hardware
            return st.fault("not-present", "pgd")
        return (yield from radix_walk(self._geometry, root, st, self._radix_decode))

    def _radix_decode(self, st: WalkState, e: int, epa: int) -> Generator[WalkStep, int, Step]:
        lv = st.level
        if not e & V:
            return st.fault("not-present")
        if not e & LEAF:
            nls = e & NLS_MASK
            if nls < MIN_NLS or lv.shift - nls < 12:
                return st.fault("bad-entry")
            return Descend(e & NLB_MASK, nls)
        if lv.shift not in RADIX_LEAF_SHIFTS:
            return st.fault("bad-entry")
        # Storage protection (6.7.11): the EAA bits and the privilege bit.
        if st.user and e & PRIV:
            return st.fault("protection")
        if not e & _EAA_ALLOWS[st.access]:
            return st.fault("protection")
        want = R | (C if st.access == Access.WRITE else 0)
        if e & want != want:
            msg = PteSetBits(epa, 8, want, lv.name, e)
            e = yield msg
            if not msg.took(e):
                # the pte changed under the walk: the hardware walks again (here:
                # the fault path, which finds the current state)
                return st.fault("changed")
        return self._translation(st.va, e, 1 << lv.shift, tuple(st.tables), epa)

    def _translation(self, va: int, e: int, size: int, tables: tuple[int, ...],
                     leaf_pa: int) -> Translation:
        perms = (PERM_R if e & (READ | WRITE) else 0) | (PERM_X if e & EXEC else 0)
        # Write only once C is set, so the first store comes back to set it.
        if e & WRITE and e & C:
            perms |= PERM_W
        # The radix hardware takes RPN bits 12..55; hash_page builds the HPTE
        # from Linux's pte_pfn() (bits below 53: bit 55 is H_PAGE_HASHPTE).
        rpn = HW_RPN_MASK if self.mmu == "radix" else self.pte_rpn_mask
        pa_base = e & rpn & ~(size - 1)
        return Translation(va & ~(size - 1), pa_base, size, perms, tables, leaf_pa)

    def _hash_page(self, root: int, va: int, access: Access, user: bool) -> Walk:
        """The hash MMU's software refill: __find_linux_pte() then __hash_page_64K()."""
        if va >> HASH_EA_BITS:
            return Fault(va, access, "pgd", "not-present")
        table = root
        tables = [root]
        for lv in self.levels:
            epa = table + lv.index(va) * lv.entry_size
            e = yield PteRead(epa, 8, lv.name)
            if lv.name == "pte":
                size = self.page_size
                break
            if e == 0:
                return Fault(va, access, lv.name, "not-present")
            if lv.name == "pmd" and e & (V | INVALID) == INVALID:
                # pmd_is_serializing(): a THP split or collapse is in progress
                return Fault(va, access, lv.name, "not-present")
            if e & LEAF:
                # pmd_trans_huge() (a THP: __hash_page_thp) or pmd_is_leaf() /
                # pud_is_leaf() (hugetlb, hpage_shift = PMD/PUD_SHIFT:
                # __hash_page_huge): either way the leaf maps the level's size
                # and check_pte_access() judges it as it judges a pte.
                size = 1 << lv.shift
                break
            table = e & ~MASKED_BITS
            tables.append(table)
        # check_pte_access(): every bit asked for must be in the PTE, and
        # _PAGE_PRIVILEGED must match. __hash_page() asks for it only for a
        # kernel access to a kernel address; every address here is in
        # USER_REGION_ID (below 2^52), so kernel and user accesses alike are
        # checked as user accesses, and a PRIVILEGED pte refuses both.
        need = V | LEAF | READ | (WRITE if access == Access.WRITE else 0) \
            | (EXEC if access == Access.FETCH else 0)
        if need & ~e:
            return Fault(va, access, lv.name, "protection" if e & V else "not-present")
        if e & PRIV:
            return Fault(va, access, lv.name, "protection")
        # The cmpxchg loop sets ACCESSED (and DIRTY on a store); the HPTE insert
        # then leaves H_PAGE_HASHPTE behind (BUSY is not modelled).
        want = R | (C if access == Access.WRITE else 0) | H_PAGE_HASHPTE
        if e & want != want:
            msg = PteSetBits(epa, 8, want, lv.name, e)
            e = yield msg
            if not msg.took(e):
                # pte_xchg() failed: __hash_page_64K re-reads the pte, and a
                # cleared one fails check_pte_access() (return 1: page fault)
                return Fault(va, access, lv.name, "changed")
        return self._translation(va, e, size, tuple(tables), epa)

    # ---- Unicorn glue ---------------------------------------------------------------
    def reg(self, name: str) -> int:
        return _REGS[name]

    def setup_cpu(self, uc: unicorn.Uc, cpu_index: int, root: int) -> None:
        # 64-bit problem state with translation on; paging itself is ours
        # (UC_TLB_VIRTUAL). Never ctl_set_cpu_model(): it selects a 32-bit CPU.
        uc.reg_write(up.UC_PPC_REG_MSR, MSR_SF | MSR_EE | MSR_PR | MSR_IR | MSR_DR)

    def get_pc(self, uc: unicorn.Uc) -> int:
        return uc.reg_read(up.UC_PPC_REG_PC)

    def set_pc(self, uc: unicorn.Uc, pc: int) -> None:
        uc.reg_write(up.UC_PPC_REG_PC, pc)

    def set_sp(self, uc: unicorn.Uc, sp: int) -> None:
        uc.reg_write(up.UC_PPC_REG_1, sp)

    def check_guest_asm(self, text: str, name: str) -> None:
        # Keystone's PPC parser takes %r3 or 3 but rejects a bare r3 inside a
        # memory operand (and returns no code at all): say so up front.
        for lineno, line in enumerate(text.splitlines(), 1):
            code = line.split("#", 1)[0]
            m = _BARE_REG.search(code)
            if m:
                raise ValueError(f"guest program {name} for powerpc, line {lineno}: write "
                                 f"registers as %r{m.group(1)} (Keystone rejects bare r{m.group(1)})")
