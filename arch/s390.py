"""s390 (z/Architecture DAT): region/segment tables of 2048 entries, 2 KiB page tables.

Owns every s390 bit (z/Architecture Principles of Operation, SA22-7832,
chapter 3 "Dynamic Address Translation"; Linux
arch/s390/include/asm/pgtable.h as of v6.5-v6.12), the DAT walk, the order
of its checks, and the Unicorn/Keystone/Capstone glue for 64-bit guests.

Linux's view, a 3-level user address space (asce_limit 4 TiB, what a new mm
gets): pud = the region-third table (2048 x 8 B = 16 KiB, shift 31), pmd =
the segment table (2048 x 8 B, shift 20), pte = the page table (256 x 8 B =
2 KiB mapping 1 MiB). The ASCE (CR1) designates the region-third table
with table length 3 (`asce`, what `hw_root` gives a vCPU); the walk
itself takes any ASCE: region-first, -second, -third or segment
designation, any table length, private and real space. Region and
segment tables are four contiguous frames.

Empty entries are not zero: an empty PTE is INVALID (0x400), an empty
segment entry 0x20, an empty region-third entry TT=R3|I (0x24). There are
no hardware referenced/changed bits in the tables: Linux keeps an old page
INVALID and a clean page PROTECTed and makes them young/dirty in the fault
handler. Invalidation is IPTE/IDTE, which purges the TLBs of every CPU as
part of the instruction: a remote flush never waits for an interrupt.

Page-table allocation follows the kernel version (`[kernel] version`): two
2 KiB tables per page up to v6.7 ("halves"), one per page from v6.8
("full-page"). `[arch_options] pgtable = "halves"` or `"full-page"`
overrides the version's choice, unless the scenario names a version that
contradicts it, which is refused. The algorithms live in
emu/kernel/pgalloc_s390.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Generator
from typing import Any, ClassVar

import capstone
import keystone
import unicorn
from unicorn import s390x_const as us

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
    Translation,
    Walk,
    WalkStep,
)
from arch.radix import Descend, Geometry, RadixLevel, Step, WalkState, radix_walk

MASK64 = (1 << 64) - 1

# ---- page-table entry (PoP 3.3.2 "page-table entries"; pgtable.h _PAGE_*) ----
PAGE_INVALID = 0x400  # hardware I
PAGE_PROTECT = 0x200  # hardware P
PAGE_NOEXEC = 0x100  # hardware IEP (instruction-execution protection)
PAGE_BIT52 = 0x800  # must be zero for DAT (Linux: _PAGE_LARGE of hugetlb ptes)
PAGE_PRESENT = 0x001  # software bits from here on
PAGE_SOFT_DIRTY = 0x002
PAGE_YOUNG = 0x004
PAGE_DIRTY = 0x008
PAGE_READ = 0x010
PAGE_WRITE = 0x020
PAGE_SPECIAL = 0x040
PAGE_MASK = ~0xFFF & MASK64
SWP_OFFSET_MASK = (1 << 52) - 1  # __SWP_OFFSET_MASK
PTE_EMPTY = PAGE_INVALID

# ---- segment-table entry (PoP 3.3.2; _SEGMENT_ENTRY_*) -------------------------
SEG_ORIGIN = ~0x7FF & MASK64  # page-table origin: 2 KiB aligned
SEG_LARGE_ORIGIN = ~0xFFFFF & MASK64  # segment-frame absolute address (EDAT-1)
SEG_LARGE = 0x400  # FC: the entry maps a 1 MiB frame (EDAT-1)
SEG_PROTECT = 0x200
SEG_NOEXEC = 0x100
SEG_INVALID = 0x20
SEG_COMMON = 0x10  # CS: common segment, illegal in a private space
SEG_TYPE = 0x0C  # TT: must be 00 in a segment-table entry
# software bits of a large segment entry (v6.5-v6.12 values)
SEG_DIRTY = 0x2000
SEG_YOUNG = 0x1000
SEG_SOFT_DIRTY = 0x4000
SEG_READ = 0x0001
SEG_WRITE = 0x0002
SEG_EMPTY = SEG_INVALID
SEG_BITS = 0xFFFF_FFFF_FFFF_FE33  # _SEGMENT_ENTRY_BITS: what a table pointer may hold

# ---- region-table entry (PoP 3.3.2; _REGION_ENTRY_*) ----------------------------
REG_ORIGIN = ~0xFFF & MASK64
REG_LARGE_ORIGIN = ~0x7FFF_FFFF & MASK64  # region-frame absolute address (EDAT-2)
REG_LARGE = 0x400  # FC in a region-third entry: a 2 GiB frame (EDAT-2)
REG_PROTECT = 0x200
REG_NOEXEC = 0x100
REG_OFFSET = 0xC0  # TF: first valid quarter of the next table
REG_INVALID = 0x20
REG_COMMON = 0x10  # CR: common region, illegal in a private space
REG_TYPE = 0x0C  # TT
REG_TYPE_R3 = 0x04
REG_LENGTH = 0x03  # TL: last valid quarter of the next table
REG3_ENTRY = REG_TYPE_R3 | REG_LENGTH  # _REGION3_ENTRY: what pud_populate writes
REG3_EMPTY = REG_TYPE_R3 | REG_INVALID
REG_BITS = 0xFFFF_FFFF_FFFF_F22F  # _REGION_ENTRY_BITS

# ---- ASCE (PoP 3.2.1.7 "address-space-control element"; _ASCE_*) ------------------
ASCE_ORIGIN = ~0xFFF & MASK64
ASCE_PRIVATE = 0x100
ASCE_ALT_EVENT = 0x80
ASCE_SPACE_SWITCH = 0x40
ASCE_REAL_SPACE = 0x20  # R: the address is real, no DAT
ASCE_TYPE_MASK = 0x0C  # DT: 11 region-first, 10 -second, 01 -third, 00 segment
ASCE_TYPE_R3 = 0x04
ASCE_TABLE_LENGTH = 0x03
# _ASCE_USER_BITS: every Linux user ASCE is a private space
ASCE_USER_BITS = ASCE_SPACE_SWITCH | ASCE_PRIVATE | ASCE_ALT_EVENT

# The DAT levels, root first, with Linux's names for a 5-level mm (pgd =
# region-first ... pmd = segment table, pte = page table) and the table
# type each region level's entries must carry.
GEOMETRY = Geometry((RadixLevel("pgd", 53, 11, 8), RadixLevel("p4d", 42, 11, 8),
                     RadixLevel("pud", 31, 11, 8), RadixLevel("pmd", 20, 11, 8),
                     RadixLevel("pte", 12, 8, 8)))
REGION_TT = {"pgd": 0x0C, "p4d": 0x08, "pud": REG_TYPE_R3}

# PSW mask: DAT on (T), extended + basic addressing (64-bit; without EA|BA
# Unicorn truncates addresses to 24 bits).
PSW_DAT = 1 << 58
PSW_64BIT = 0x1_8000_0000
# Control register 0: enhanced DAT 1 and instruction-execution protection.
CR0_EDAT = 0x80_0000
CR0_IEP = 0x10_0000

# dump names: hardware bits upper case, Linux's software bits lower case
_PTE_NAMES = ((PAGE_INVALID, "I"), (PAGE_PROTECT, "P"), (PAGE_NOEXEC, "IEP"), (PAGE_BIT52, "B52"),
              (PAGE_PRESENT, "pr"), (PAGE_YOUNG, "y"), (PAGE_DIRTY, "d"), (PAGE_READ, "r"),
              (PAGE_WRITE, "w"), (PAGE_SPECIAL, "sp"), (PAGE_SOFT_DIRTY, "sd"))
_SEG_NAMES = ((SEG_LARGE, "FC"), (SEG_PROTECT, "P"), (SEG_NOEXEC, "IEP"), (SEG_INVALID, "I"),
              (SEG_COMMON, "CS"))
_SEG_LARGE_NAMES = ((SEG_YOUNG, "y"), (SEG_DIRTY, "d"), (SEG_READ, "r"), (SEG_WRITE, "w"),
                    (SEG_SOFT_DIRTY, "sd"))
_REG_NAMES = ((REG_LARGE, "FC"), (REG_PROTECT, "P"), (REG_NOEXEC, "IEP"), (REG_INVALID, "I"),
              (REG_COMMON, "CR"))
_REGS = {f"r{i}": getattr(us, f"UC_S390X_REG_R{i}") for i in range(16)}

POLICIES = ("halves", "full-page")
FULL_PAGE_PTE = (6, 8)  # the first Linux giving each PTE table a page of its own

# A label definition at the start of a line, and a name token elsewhere.
_LABEL_DEF = re.compile(r"^\s*([A-Za-z_.$][\w.$]*)\s*:")
_NAME = re.compile(r"(?<![\w.$%\\])([A-Za-z_.$][\w.$]*)(?![\w.$])")


class S390(Arch):
    name: ClassVar[str] = "s390"
    page_size: ClassVar[int] = 4096
    uc_page_size: ClassVar[int] = 4096
    byteorder: ClassVar[str] = "big"
    va_bits: ClassVar[int] = 42
    levels: ClassVar[tuple[Level, ...]] = (
        Level("pud", 31, 2048, 8),  # region-third table
        Level("pmd", 20, 2048, 8),  # segment table
        Level("pte", 12, 256, 8),  # page table
    )
    callconv: ClassVar[CallConv] = CallConv(
        trap="svc 0", intno=2, nr_reg="r1",
        arg_regs=("r2", "r3", "r4", "r5", "r6"), ret_reg="r2")
    uc_arch: ClassVar[int] = unicorn.UC_ARCH_S390X
    uc_mode: ClassVar[int] = unicorn.UC_MODE_BIG_ENDIAN
    ks_arch: ClassVar[int] = keystone.KS_ARCH_SYSTEMZ
    ks_mode: ClassVar[int] = keystone.KS_MODE_BIG_ENDIAN
    cs_arch: ClassVar[int] = capstone.CS_ARCH_SYSZ
    cs_mode: ClassVar[int] = capstone.CS_MODE_BIG_ENDIAN
    # Text and stacks below 2 GiB share one region-third entry (one segment table);
    # scenarios place their VMAs in the first few dozen MiB.
    code_base: ClassVar[int] = 0x0800_0000
    stack_top: ClassVar[int] = 0x7F00_0000
    word_size: ClassVar[int] = 8
    # ARCH_ENABLE_SPLIT_PMD_PTLOCK (PGTABLE_LEVELS > 2), and split PTE locks
    split_pmd_ptlocks: ClassVar[bool] = True
    tlb_flush_kind: ClassVar[str] = "broadcast"  # IPTE/IDTE purge every CPU's TLB
    rcu_table_free: ClassVar[bool] = True  # MMU_GATHER_RCU_TABLE_FREE, always
    extra_tlb_sizes: ClassVar[tuple[int, ...]] = (1 << 31,)  # EDAT-2 region frames

    def __init__(self, pgtable: str | None = None, edat: bool = True, iep: bool = True,
                 storage_size: int | None = None, **unknown: Any) -> None:
        if unknown:
            raise UnknownArch(f"s390 has no arch option {', '.join(sorted(unknown))!r} "
                              "(it has pgtable, edat, iep, storage_size)")
        if storage_size is not None and (not isinstance(storage_size, int) or storage_size <= 0):
            raise UnknownArch(f"s390 arch option storage_size must be a positive byte count, "
                              f"got {storage_size!r}")
        # Where storage ends: a DAT table or frame beyond it is an
        # addressing exception (None: not checked, as before).
        self.storage_size = storage_size
        if pgtable is not None and pgtable not in POLICIES:
            raise UnknownArch(f"s390 arch option pgtable must be one of {', '.join(POLICIES)}, "
                              f"got {pgtable!r}")
        self._pgtable_option = pgtable
        self.pgtable_policy = pgtable or self._pgtable_of(None)
        # EDAT-1/-2 (large segment and region frames) and IEP are machine
        # facilities Linux switches on in CR0 where installed (z10+, z14+).
        self.edat = bool(edat)
        self.iep = bool(iep)
        self._init = {lv.name: self.empty_entry(lv.name).to_bytes(8, "big") * lv.entries
                      for lv in self.levels}

    @staticmethod
    def _pgtable_of(version: tuple[int, int] | None) -> str:
        # "halves": two 2 KiB tables per page (Linux <= 6.7); "full-page": one
        # table per page (6.8+, d08d4e7cd6bf "s390/mm: use full 4KB page for 2KB PTE")
        return "halves" if version is not None and version < FULL_PAGE_PTE else "full-page"

    def use_kernel_version(self, version: tuple[int, int] | None, given: bool) -> None:
        super().use_kernel_version(version, given)
        by_version = self._pgtable_of(version)
        option = self._pgtable_option
        if option is not None and given and option != by_version:
            v = f"{version[0]}.{version[1]}" if version else "the newest"
            raise UnknownArch(
                f"s390 arch option pgtable = {option!r} contradicts [kernel] version {v}, "
                f"which has {by_version!r} (halves up to 6.7, full-page from 6.8); "
                "drop one of them")
        self.pgtable_policy = option or by_version

    # ---- root -------------------------------------------------------------
    def alloc_root(self, alloc_table: Callable[[str, int], int],
                   store: Callable[[int, int, int], None]) -> int:
        # pgd_alloc() -> crst_table_alloc() + crst_table_init(_REGION3_ENTRY_EMPTY):
        # 16 KiB, filled with empty entries by the allocator's table_init.
        return alloc_table("pud", self.level("pud").table_bytes)

    def asce(self, root: int) -> int:
        """The ASCE Linux loads for a 3-level user mm (mm->context.asce)."""
        return (root & ASCE_ORIGIN) | ASCE_USER_BITS | ASCE_TYPE_R3 | ASCE_TABLE_LENGTH

    # ---- empty entries and new tables ---------------------------------------------
    def empty_entry(self, level: str) -> int:
        return {"pud": REG3_EMPTY, "pmd": SEG_EMPTY, "pte": PTE_EMPTY}[level]

    def table_init(self, level: str) -> bytes | None:
        return self._init[level]

    # ---- Linux's view of entries ---------------------------------------------
    def entry_none(self, level: str, val: int) -> bool:
        return val == self.empty_entry(level)

    def entry_present(self, level: str, val: int) -> bool:
        if level == "pud":
            return bool(val & REG_ORIGIN)  # pud_present(): an origin is there
        if level == "pmd":
            return val != SEG_EMPTY  # pmd_present()
        return bool(val & PAGE_PRESENT)  # pte_present(): software bit

    def mk_table_entry(self, level: str, table_pa: int) -> int:
        if level == "pud":
            return (table_pa & REG_ORIGIN) | REG3_ENTRY  # pud_populate()
        return table_pa & SEG_ORIGIN  # pmd_populate(): _SEGMENT_ENTRY is 0

    def table_pa(self, level: str, val: int) -> int:
        return val & (REG_ORIGIN if level == "pud" else SEG_ORIGIN)

    def entry_bad(self, level: str, val: int) -> bool:
        if level == "pud":
            typ = val & REG_TYPE
            if typ > REG_TYPE_R3 or (typ == REG_TYPE_R3 and val & REG_LARGE):
                return True  # pud_large(): a 2 GiB frame is no table
            if typ < REG_TYPE_R3:
                return False
            return bool(val & ~REG_BITS)
        if level == "pmd":
            # pmd_bad(): a large entry is "bad" to table walkers, as on x86
            if val & SEG_TYPE or val & SEG_LARGE:
                return True
            return bool(val & ~SEG_BITS)
        return False

    def mk_pte(self, pa: int, prot: Prot) -> int:
        # mk_pte_phys() with PAGE_RO/RX/RW/RWX: present, readable, and both
        # INVALID (old) and PROTECT (clean) until pte_mkyoung/pte_mkdirty;
        # mk_pte_phys itself makes it young.
        val = (pa & PAGE_MASK) | PAGE_PRESENT | PAGE_READ | PAGE_INVALID | PAGE_PROTECT
        if prot.write:
            val |= PAGE_WRITE
        if not prot.exec and self.iep:
            val |= PAGE_NOEXEC
        return self.pte_mkyoung(val)

    def pte_pa(self, val: int) -> int:
        return val & PAGE_MASK

    def pte_write(self, val: int) -> bool:
        return bool(val & PAGE_WRITE)

    def pte_mkyoung(self, val: int) -> int:
        val |= PAGE_YOUNG
        if val & PAGE_READ:
            val &= ~PAGE_INVALID
        return val

    def pte_mkdirty(self, val: int) -> int:
        val |= PAGE_DIRTY | PAGE_SOFT_DIRTY
        if val & PAGE_WRITE:
            val &= ~PAGE_PROTECT
        return val

    def pte_wrprotect(self, val: int) -> int:
        return (val & ~PAGE_WRITE) | PAGE_PROTECT

    def pte_mkwrite(self, val: int) -> int:
        val |= PAGE_WRITE
        if val & PAGE_DIRTY:
            val &= ~PAGE_PROTECT
        return val

    def pmd_trans_huge(self, val: int) -> bool:
        return val != SEG_EMPTY and bool(val & SEG_LARGE)

    def supports_huge_pmd(self) -> bool:
        return self.edat  # a 1 MiB segment frame needs EDAT-1

    def mk_pmd_huge(self, pa: int, prot: Prot) -> int:
        # A THP segment entry, young and (if writable) dirty from the start:
        # the model has no huge-pmd access-flag fault (huge_pmd_set_accessed),
        # so it must not be left INVALID or PROTECTed for one.
        val = (pa & SEG_LARGE_ORIGIN) | SEG_LARGE | SEG_READ | SEG_YOUNG
        if prot.write:
            val |= SEG_WRITE | SEG_DIRTY | SEG_SOFT_DIRTY
        else:
            val |= SEG_PROTECT
        if not prot.exec and self.iep:
            val |= SEG_NOEXEC
        return val

    # ---- swap ptes (arch/s390/include/asm/pgtable.h mk_swap_pte, v6.x):
    # (pte & 0x201) == 0x200: invalid and protected, not present; offset in
    # IBM bits 0-51 (<< 12), type in bits 57-61 (<< 2).
    swap_offset_bits: ClassVar[int] = 52

    def mk_swap_pte(self, swp_type: int, offset: int) -> int:
        return (PAGE_INVALID | PAGE_PROTECT | ((offset & SWP_OFFSET_MASK) << 12)
                | ((swp_type & 0x1F) << 2))

    def swap_pte_entry(self, val: int) -> tuple[int, int]:
        return (val >> 2) & 0x1F, (val >> 12) & SWP_OFFSET_MASK

    def pmd_huge_pa(self, val: int) -> int:
        return val & SEG_LARGE_ORIGIN

    def pmd_mkinvalid(self, val: int) -> int:
        return val | SEG_INVALID  # pmdp_invalidate(): pmd_val | _SEGMENT_ENTRY_INVALID

    def pmd_huge_valid(self, val: int) -> bool:
        return self.pmd_trans_huge(val) and not val & SEG_INVALID

    def pmd_mkdirty(self, val: int) -> int:
        val |= SEG_DIRTY | SEG_SOFT_DIRTY
        if val & SEG_WRITE:
            val &= ~SEG_PROTECT
        return val

    def pmd_dirty(self, val: int) -> bool:
        return bool(val & SEG_DIRTY)

    def pmd_huge_write(self, val: int) -> bool:
        return bool(val & SEG_WRITE)  # pmd_write(): _SEGMENT_ENTRY_WRITE

    thp_deposit: ClassVar[str] = "list"  # arch/s390/mm/pgtable.c: a list_head in the table

    def describe_entry(self, level: str, val: int) -> str:
        if val == self.empty_entry(level):
            return "none"
        if level == "pte":
            names = [n for bit, n in _PTE_NAMES if val & bit]
            return f"page {val & PAGE_MASK:#x} {'|'.join(names)}"
        if level == "pmd":
            if val & SEG_LARGE:
                names = [n for bit, n in _SEG_NAMES + _SEG_LARGE_NAMES if val & bit]
                return f"huge {val & SEG_LARGE_ORIGIN:#x} {'|'.join(names)}"
            origin = val & SEG_ORIGIN
            half = f" (2K half +{origin & 0xFFF:#x})"
            names = [n for bit, n in _SEG_NAMES if val & bit]
            return f"ptable {origin:#x}{half} {'|'.join(names)}".rstrip()
        names = [n for bit, n in _REG_NAMES if val & bit]
        tt = {0x0: "TT=0", 0x4: "R3", 0x8: "TT=R2", 0xC: "TT=R1"}[val & REG_TYPE]
        tf, tl = (val & REG_OFFSET) >> 6, val & REG_LENGTH
        return (f"segtable {val & REG_ORIGIN:#x} {tt} TF={tf} TL={tl} "
                f"{'|'.join(names)}").rstrip()

    # ---- the DAT walk -----------------------------------------------------------
    def hw_root(self, root: int) -> int:
        return self.asce(root)

    def walk(self, root: int, va: int, access: Access, user: bool = True) -> Walk:
        """DAT under the ASCE `root` (PoP 3.3.4; QEMU mmu_translate_asce's order).

        The ASCE's designation type picks the first table, its table
        length bounds the first index; every region entry's TF/TL bound
        the next index. Invalid bits and length violations are
        translation exceptions ("not-present"); a wrong table type, a set
        must-be-zero bit, a common segment (or EDAT-2 common region) under
        a private-space ASCE, or an index above the ASCE's type are
        specification / ASCE-type exceptions ("bad-entry"); a table or
        frame beyond `storage_size` is an addressing exception
        ("outside-ram"). Protection is judged once a frame was found,
        from the P bits of the path (region P only with EDAT-1) and the
        leaf's IEP. DAT has no user/supervisor distinction: `user` is
        ignored. A real-space ASCE translates every address to itself.
        """
        asce = root & MASK64
        va &= MASK64
        st = WalkState(va, access, user, [])
        st.acc["private"] = bool(asce & ASCE_PRIVATE)
        if asce & ASCE_REAL_SPACE:
            return self._frame(st, va & PAGE_MASK, 4096, True, False, 0)
        first = 3 - ((asce & ASCE_TYPE_MASK) >> 2)
        top = GEOMETRY.levels[first]
        if va >> (top.shift + top.bits):
            return st.fault("bad-entry", top.name)  # ASCE-type exception
        if top.index(va) >> (top.bits - 2) > asce & ASCE_TABLE_LENGTH:
            return st.fault("not-present", top.name)  # first table too short
        return (yield from radix_walk(GEOMETRY, asce & ASCE_ORIGIN, st, self._decode, first,
                                      storage=self.storage_size))

    def _decode(self, st: WalkState, e: int, epa: int) -> Generator[WalkStep, int, Step]:
        name = st.level.name
        acc = st.acc
        if name == "pte":
            if e & PAGE_INVALID:
                return st.fault("not-present")
            # Bit 52 must be zero; so must bit 55 (IEP) without the facility:
            # Linux clears _PAGE_NOEXEC wherever !MACHINE_HAS_NX (mk_pte_phys,
            # ptep_modify_prot_commit). Unicorn ignores it then (a documented
            # deviation in tools/oracle_s390.py).
            if e & PAGE_BIT52 or (e & PAGE_NOEXEC and not self.iep):
                return st.fault("bad-entry")
            protect = acc.get("protect", False) or bool(e & PAGE_PROTECT)
            return self._frame(st, e & PAGE_MASK, 4096, not protect, bool(e & PAGE_NOEXEC), epa)
        if name == "pmd":  # segment-table entry
            if e & SEG_INVALID:
                return st.fault("not-present")
            if e & SEG_TYPE or (e & SEG_COMMON and acc["private"]):
                return st.fault("bad-entry")
            protect = acc.get("protect", False) or bool(e & SEG_PROTECT)
            if self.edat and e & SEG_LARGE:
                return self._frame(st, e & SEG_LARGE_ORIGIN, 1 << 20, not protect,
                                   bool(e & SEG_NOEXEC), epa)
            acc["protect"] = protect
            return Descend(e & SEG_ORIGIN)
        # a region-first, -second or -third entry
        if e & REG_INVALID:
            return st.fault("not-present")
        if e & REG_TYPE != REGION_TT[name]:
            return st.fault("bad-entry")
        if name == "pud" and self.edat and e & REG_COMMON and acc["private"]:
            return st.fault("bad-entry")  # EDAT-2 common region in a private space
        protect = acc.get("protect", False) or bool(self.edat and e & REG_PROTECT)
        if name == "pud" and self.edat and e & REG_LARGE:
            return self._frame(st, e & REG_LARGE_ORIGIN, 1 << 31, not protect,
                               bool(e & REG_NOEXEC), epa)
        # The next index's top two bits must lie in [TF, TL] of the entry.
        nxt = GEOMETRY.levels[st.depth + 1]
        quarter = nxt.index(st.va) >> (nxt.bits - 2)
        if quarter < (e & REG_OFFSET) >> 6 or quarter > e & REG_LENGTH:
            return st.fault("not-present", nxt.name)
        acc["protect"] = protect
        return Descend(e & REG_ORIGIN)
        yield  # a generator (DAT sets no bits in the tables)

    def _frame(self, st: WalkState, pa_base: int, size: int, writable: bool, noexec: bool,
               leaf_pa: int) -> Translation | Fault:
        executable = not (self.iep and noexec)
        if st.access == Access.WRITE and not writable:
            return st.fault("protection")
        if st.access == Access.FETCH and not executable:
            return st.fault("protection")
        if self.storage_size is not None and (pa_base | (st.va & (size - 1))) >= self.storage_size:
            return st.fault("outside-ram")  # addressing exception: no such frame
        perms = PERM_R | (PERM_W if writable else 0) | (PERM_X if executable else 0)
        return st.translation(pa_base, size, perms, leaf_pa)

    # ---- Unicorn glue -----------------------------------------------------------------
    def reg(self, name: str) -> int:
        return _REGS[name]

    def setup_cpu(self, uc: unicorn.Uc, cpu_index: int, root: int) -> None:
        # Translation is ours (UC_TLB_VIRTUAL): PSW DAT stays off so Unicorn
        # never walks; CR1 holds the ASCE only to tell the story.
        uc.reg_write(us.UC_S390X_REG_PSWM, PSW_64BIT)
        uc.reg_write(us.UC_S390X_REG_CR1, self.asce(root))

    def get_pc(self, uc: unicorn.Uc) -> int:
        return uc.reg_read(us.UC_S390X_REG_PC)

    def set_pc(self, uc: unicorn.Uc, pc: int) -> None:
        uc.reg_write(us.UC_S390X_REG_PC, pc)

    def set_sp(self, uc: unicorn.Uc, sp: int) -> None:
        uc.reg_write(us.UC_S390X_REG_R15, sp)

    def after_trap(self, uc: unicorn.Uc) -> None:
        # Unicorn reports the svc with the PC still on it; step over its 2 bytes.
        self.set_pc(uc, self.get_pc(uc) + 2)

    # ---- guest assembly -------------------------------------------------------------------
    def guest_asm_prelude(self) -> str:
        # Keystone has no svc mnemonic: "svc N" becomes the instruction's bytes.
        return ".macro svc num\n.byte 0x0a, \\num\n.endm\n"

    def prepare_guest_asm(self, text: str, base: int) -> str:
        """Compensate Keystone's SystemZ PC-relative fixups.

        For a label operand of a PC-relative instruction (j, jne, brctg,
        larl, jg, ...) Keystone's encoding is short by `base` plus the bytes
        of all instructions (not data) before the branch; a numeric operand
        it range-checks before making it relative. So every label reference
        in an instruction becomes `(label + base + I)`, with I measured by
        assembling the instructions before it (s390 instruction lengths do
        not depend on operand values). Data directives, and macros made of
        them (`svc`), do not count; `.quad label` is encoded right as is.
        """
        lines = [line.split("#", 1)[0] for line in text.splitlines()]
        labels = {m.group(1) for m in map(_LABEL_DEF.match, lines) if m}
        if not labels:
            return text
        data_macros: set[str] = set()
        macro: list[str] | None = None
        kind: list[str] = []  # per line: "macro" (a definition), "data" or "insn"
        for line in lines:
            words = line.split()
            if words and words[0] == ".macro":
                macro = words[1:2]
                body: list[str] = []
                kind.append("macro")
            elif macro is not None:
                if words and words[0] == ".endm":
                    if body and all(w.startswith(".") for w in body):
                        data_macros.add(macro[0])
                    macro = None
                elif words:
                    body.append(words[0])
                kind.append("macro")
            else:
                m = _LABEL_DEF.match(line)
                rest = (line[m.end():] if m else line).split()
                is_data = bool(rest) and (rest[0].startswith(".") or rest[0] in data_macros)
                kind.append("data" if is_data else "insn")

        def refs(line: str) -> tuple[str, str] | None:
            m = _LABEL_DEF.match(line)
            head, rest = (line[: m.end()], line[m.end():]) if m else ("", line)
            if any(t in labels for t in _NAME.findall(rest)):
                return head, rest
            return None

        def subst(rest: str, value: str) -> str:
            return _NAME.sub(lambda t: value.format(t.group(1)) if t.group(1) in labels
                             else t.group(1), rest)

        # Instructions only, label references as 0 (forward ones would not assemble).
        measured = []
        for line, k in zip(lines, kind, strict=True):
            r = refs(line) if k == "insn" else None
            if k == "data":
                m = _LABEL_DEF.match(line)
                measured.append(line[: m.end()] if m else "")
            else:
                measured.append(r[0] + subst(r[1], "0") if r else line)
        ks = keystone.Ks(self.ks_arch, self.ks_mode)
        out = []
        for i, (line, k) in enumerate(zip(lines, kind, strict=True)):
            r = refs(line) if k == "insn" else None
            if r is None:
                out.append(line)
                continue
            try:
                enc, _ = ks.asm("\n".join(measured[:i]) + "\n", base)
            except keystone.KsError:
                return text  # let the real assembly report the error
            skew = base + len(enc or b"")
            out.append(r[0] + subst(r[1], "({} + " + f"{skew:#x})"))
        return "\n".join(out) + "\n"
