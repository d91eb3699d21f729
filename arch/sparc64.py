"""sparc64 (sun4v): 8 KiB pages, four levels of 1024 x 8 B, a software TLB refill via a TSB.

Owns every sun4v TTE/PTE bit (Linux arch/sparc/include/asm/pgtable_64.h,
"SUN4V pte bits"; protections from sun4v_pgprot_init() in
arch/sparc/mm/init_64.c), the TSB layout (arch/sparc/include/asm/tsb.h),
the TLB-miss path as Linux runs it (arch/sparc/kernel/tsb.S: probe the 8K
TSB, then the huge TSB, then USER_PGTABLE_WALK_TL1 over the Linux tables
with physical loads, then fill the TSB), TSB invalidation on TLB flushes
(flush_tsb_user in arch/sparc/mm/tsb.c), and the Unicorn / Keystone /
Capstone glue for 64-bit big-endian SPARC V9 guests, including delay slots.

Linux's view: pgd (shift 43), pud (33), pmd (23), pte (13), each one 8 KiB
page of 1024 entries, so user VAs have 53 bits. Upper entries hold the
physical address of the next table and nothing else (pmd_set = __pa, so
pmd_bad = any sub-page bit set). `pgtable_t` is `pte_t *` and tables never
share a page, so the kernel's default "page" allocation policy (and its
generic call_rcu pte_free_defer) is sparc64's.

The TSB. Linux keeps a per-mm TSB (mm->context.tsb_block[]) and puts its
address in a per-CPU scratchpad register at context switch; ptemu's walk
only gets the root, so the root is one block of three 8 KiB frames that
alloc_root allocates together:

    root + 0x0000   pgd
    root + 0x2000   8K TSB: 512 x (tag, TTE), indexed by va bits 13..21
    root + 0x4000   huge TSB: 512 x (tag, TTE), indexed by va bits 22..30

(All three frames carry the "pgd" label in the frame allocator; the
audit counts the whole block as live through `root_block_bytes`.) A tag is
the TAG TARGET with context 0 (per-mm TSBs): va >> 22. Empty slots hold
the INVALID tag bit, as tsb_init() writes them. The hardware walker reads
a slot with one 16-byte load (TSB_LOAD_QUAD is an atomic quad load).

THP: a PMD maps 8 MiB, but the largest TTE is 4 MiB; the miss handler
fabricates the TTE for the half the VA is in (pmd & ~4M | va & 4M), so a
translation of a huge pmd is 4 MiB (`extra_tlb_sizes`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, ClassVar

import capstone
import keystone
import unicorn
from unicorn import sparc_const as us

from arch.base import (
    PERM_R,
    PERM_W,
    PERM_X,
    Access,
    Arch,
    CallConv,
    Fault,
    Level,
    MemoryImage,
    Prot,
    PteRead,
    PteWrite,
    Translation,
    Walk,
)

PAGE_SHIFT = 13
PAGE_SIZE = 1 << PAGE_SHIFT
SUBPAGE_MASK = PAGE_SIZE - 1
VA_BITS = 53  # PGDIR_SHIFT + PGDIR_BITS; Unicorn's sparc64 MMU needs nothing smaller

# Bits common to sun4u and sun4v (pgtable_64.h).
V = 1 << 63  # _PAGE_VALID; also _PAGE_R, the "young" bit the TLB-miss path requires
SPECIAL = 1 << 57
PMD_HUGE = 1 << 56
# sun4v bits.
NFO = 1 << 62
MOD = 1 << 61  # software dirty
ACC = 1 << 60  # software accessed
READ = 1 << 59  # software readable
WRITE = 1 << 58  # software writable: pte_write()
PADDR_MASK = 0x00FF_FFFF_FFFF_E000  # paddr[55:13]
IE = 1 << 12
E = 1 << 11
CP = 1 << 10
CV = 1 << 9
P = 1 << 8  # privileged page
EXEC = 1 << 7
W = 1 << 6  # hardware writable: set only when WRITE and MOD both are
PRESENT = 1 << 4  # Linux's pte_present(); the hardware looks at V
SZ_MASK = 0x7
SZ4MB = 0x3  # _PAGE_SZHUGE_4V

_FLAG_NAMES = ((V, "V"), (NFO, "NFO"), (MOD, "MOD"), (ACC, "ACC"), (READ, "R"), (WRITE, "WRITE"),
               (SPECIAL, "SPECIAL"), (PMD_HUGE, "PMD_HUGE"), (IE, "IE"), (E, "E"), (CP, "CP"),
               (CV, "CV"), (P, "P"), (EXEC, "EXEC"), (W, "W"), (PRESENT, "PRESENT"))

# The TSB (tsb.h).
REAL_HPAGE_SHIFT = 22
REAL_HPAGE_SIZE = 1 << REAL_HPAGE_SHIFT
TSB_ENTRIES = 512
TSB_ENTRY = 16
TSB_TAG_LOCK = 1 << 47
TSB_TAG_INVALID = 1 << 46
TSB_OFFSET = PAGE_SIZE  # 8K TSB, from the root
HUGE_TSB_OFFSET = 2 * PAGE_SIZE  # huge (4 MiB) TSB, from the root
ROOT_BLOCK = 3 * PAGE_SIZE
_MASK64 = (1 << 64) - 1

# Unicorn register ids by the names the calling convention uses.
_REGS: dict[str, int] = {}
for _bank in ("g", "o", "l", "i"):
    for _n in range(8):
        _REGS[f"{_bank}{_n}"] = getattr(us, f"UC_SPARC_REG_{_bank.upper()}{_n}")
_REGS["sp"] = us.UC_SPARC_REG_O6
_REGS["fp"] = us.UC_SPARC_REG_I6
# What save_regs() keeps: every integer register Unicorn exposes (%g0 is 0).
_SAVED_REGS = tuple(_REGS[f"{b}{n}"] for b in "goli" for n in range(8) if f"{b}{n}" != "g0")

STACK_BIAS = 2047  # SPARC V9 ABI: %sp holds the frame address minus 2047


def tsb_tag(va: int) -> int:
    """The TAG TARGET of `va` with context 0: what a TSB slot must hold to hit."""
    return va >> REAL_HPAGE_SHIFT


# ---- instruction decoding (SPARC V9 manual, appendix E opcode maps) ---------------------

_OP2_BRANCHES = (1, 2, 5, 6)  # BPcc, Bicc, FBPfcc, FBfcc
_OP3_JMPL, _OP3_RETURN, _OP3_TCC = 0x38, 0x39, 0x3A


def step_len(word: int) -> int:
    """Instructions that must run together starting with `word`: 2 for a delayed
    control transfer (it and its delay slot), else 1.

    An annulled branch-always / branch-never skips its delay slot whatever the
    condition codes say, so it runs alone; a conditional annulled branch runs
    its slot only when taken, which ptemu cannot tell without reading %ccr
    (Unicorn does not expose it), so the guest assembler refuses those.
    """
    op = word >> 30
    if op == 1:  # CALL
        return 2
    if op == 0:
        op2 = (word >> 22) & 7
        if op2 in _OP2_BRANCHES:
            annul = (word >> 29) & 1
            cond = (word >> 25) & 0xF
            if annul and cond in (0, 8):
                return 1
            return 2
        if op2 == 3 and not (word >> 28) & 1:  # BPr: brz, brnz, ...
            return 2
        return 1
    if op == 2 and (word >> 19) & 0x3F in (_OP3_JMPL, _OP3_RETURN):
        return 2
    return 1


def is_control_transfer(word: int) -> bool:
    """Does execution after `word` leave straight-line order (branch, call, jump, trap)?"""
    if step_len(word) == 2:
        return True
    op = word >> 30
    if op == 0 and (word >> 22) & 7 in _OP2_BRANCHES:
        return True  # annulled ba,a / bn,a
    return op == 2 and (word >> 19) & 0x3F == _OP3_TCC


# ---- guest assembly checks --------------------------------------------------------------

_LABEL = re.compile(r"^\s*(?:[A-Za-z_.$][\w.$]*|\d+)\s*:")
_COND = r"(?:a|n|ne|nz|e|z|g|le|ge|l|gu|leu|cc|geu|cs|lu|pos|neg|vc|vs)"
_BRANCH = re.compile(rf"^(?:b{_COND}?|br(?:z|lez|lz|nz|gz|gez)|"
                     r"fb(?:a|n|u|g|ug|l|ul|lg|ne|nz|e|z|ue|ge|uge|le|ule|o)?)$")
_UNCONDITIONAL = {"b", "ba", "bn", "fba", "fbn"}
_JUMPS = {"call", "jmp", "jmpl", "ret", "retl", "return", "rett"}
# Every register-indirect jump raises mem_address_not_aligned (trap 0x34)
# in Unicorn 2.1.4's sparc64, whatever the target: measured with
# `jmpl %g3+8, %g0` to an aligned address.
_INDIRECT_JUMPS = {"jmp", "jmpl", "ret", "retl", "rett"}
_TRAP = re.compile(rf"^t{_COND}$")
_WINDOW_OPS = {"save", "restore", "return", "flushw", "saved", "restored"}
_MULTI_INSN = {"set", "setuw", "setsw", "setx"}


def _statements(text: str) -> list[tuple[int, str]]:
    """(line number, statement) for every instruction or directive, labels removed."""
    out = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("!", 1)[0]
        if line.lstrip().startswith("#"):
            continue
        for stmt in line.split(";"):
            while True:
                m = _LABEL.match(stmt)
                if not m:
                    break
                stmt = stmt[m.end():]
            stmt = stmt.strip()
            if stmt:
                out.append((lineno, stmt))
    return out


def _split(stmt: str) -> tuple[str, set[str], str]:
    """(base mnemonic, suffixes such as a/pt/pn, operands) of a statement."""
    head, _, operands = stmt.replace("\t", " ").partition(" ")
    parts = head.lower().split(",")
    return parts[0], set(parts[1:]), operands.strip()


def _is_memory_access(base: str, operands: str) -> bool:
    """Loads, stores, atomics, prefetches and flush: everything that translates an address."""
    if "[" in operands or base in ("flush", "ldstub", "swap"):
        return True
    if base == "stbar":
        return False
    return base.startswith(("ld", "st", "cas", "prefetch"))


class Sparc64(Arch):
    name: ClassVar[str] = "sparc64"
    page_size: ClassVar[int] = PAGE_SIZE
    uc_page_size: ClassVar[int] = PAGE_SIZE  # Unicorn's sparc64 TLB granule is 8 KiB too
    byteorder: ClassVar[str] = "big"
    va_bits: ClassVar[int] = VA_BITS
    levels: ClassVar[tuple[Level, ...]] = (
        Level("pgd", 43, 1024, 8),
        Level("pud", 33, 1024, 8),
        Level("pmd", 23, 1024, 8),
        Level("pte", 13, 1024, 8),
    )
    # ta 0x6d is Linux's 64-bit system call trap (arch/sparc/kernel/ttable_64.S).
    callconv: ClassVar[CallConv] = CallConv(
        trap="ta 0x6d", intno=0x100 + 0x6D, nr_reg="g1",
        arg_regs=("o0", "o1", "o2", "o3", "o4"), ret_reg="o0")
    uc_arch: ClassVar[int] = unicorn.UC_ARCH_SPARC
    uc_mode: ClassVar[int] = unicorn.UC_MODE_SPARC64 | unicorn.UC_MODE_BIG_ENDIAN
    ks_arch: ClassVar[int] = keystone.KS_ARCH_SPARC
    ks_mode: ClassVar[int] = keystone.KS_MODE_SPARC64 | keystone.KS_MODE_BIG_ENDIAN
    cs_arch: ClassVar[int] = capstone.CS_ARCH_SPARC
    cs_mode: ClassVar[int] = capstone.CS_MODE_V9 | capstone.CS_MODE_BIG_ENDIAN
    code_base: ClassVar[int] = 0x0000_0000_0010_0000
    # High in the 53-bit space, so stacks use other pgd/pud slots than the heap.
    stack_top: ClassVar[int] = 0x000F_FFFF_0000_0000
    word_size: ClassVar[int] = 8
    extra_tlb_sizes: ClassVar[tuple[int, ...]] = (REAL_HPAGE_SIZE,)
    # The refill runs in the TL1 trap handler with interrupts off, so a
    # cross-call TLB flush waits for it (tlb_flush_kind "ipi").
    software_walker: ClassVar[bool] = True

    def __init__(self) -> None:
        # The root each vCPU runs on (setup_cpu, by Unicorn instance: each
        # process has its own) and the guest's instruction words by address,
        # for delay-slot decoding. Guest text is never written and each vCPU's
        # text has its own addresses, so a word read once stays right.
        self._fetch_roots: dict[int, int] = {}
        self._insns: dict[int, int] = {}

    # ---- root -------------------------------------------------------------------
    def alloc_root(self, alloc_table: Callable[[str, int], int],
                   store: Callable[[int, int, int], None]) -> int:
        # pgd_alloc() plus tsb_grow() for both TSBs, as one block (see the
        # module docstring); tsb_init() marks every slot invalid.
        root = alloc_table("pgd", ROOT_BLOCK)
        for tsb in (root + TSB_OFFSET, root + HUGE_TSB_OFFSET):
            for i in range(TSB_ENTRIES):
                store(tsb + i * TSB_ENTRY, 8, TSB_TAG_INVALID)
        return root

    def root_block_bytes(self) -> int:
        return ROOT_BLOCK

    # ---- Linux's view of entries ------------------------------------------------------
    def entry_none(self, level: str, val: int) -> bool:
        return val == 0

    def entry_present(self, level: str, val: int) -> bool:
        if level == "pte":
            return bool(val & PRESENT)
        return val != 0  # pmd_present/pud_present/p4d_present: any value

    def mk_table_entry(self, level: str, table_pa: int) -> int:
        return table_pa  # pmd_set/pud_set/p4d_set store __pa(table)

    def table_pa(self, level: str, val: int) -> int:
        return val & PADDR_MASK

    def entry_bad(self, level: str, val: int) -> bool:
        if level == "pte":
            return False
        if level == "pmd" and self.pmd_trans_huge(val):
            return False  # pmd_bad() is only asked of non-huge pmds
        return bool(val & SUBPAGE_MASK)

    def mk_pte(self, pa: int, prot: Prot) -> int:
        # PAGE_SHARED / PAGE_COPY of sun4v_pgprot_init(): valid, present,
        # cacheable, accessed and readable; WRITE/EXEC from the VMA.
        val = (pa & PADDR_MASK) | V | PRESENT | CP | CV | ACC | READ
        if prot.write:
            val |= WRITE
        if prot.exec:
            val |= EXEC
        if not prot.user:
            val |= P
        return val

    def pte_pa(self, val: int) -> int:
        return val & PADDR_MASK

    def pte_write(self, val: int) -> bool:
        return bool(val & WRITE)

    def pte_mkyoung(self, val: int) -> int:
        return val | ACC | V  # _PAGE_ACCESSED_4V | _PAGE_R

    def pte_mkdirty(self, val: int) -> int:
        # The hardware W bit is set only when the pte is writable too
        # (pte_mkdirty -> __pte_mkhwwrite).
        val |= MOD
        return val | W if val & WRITE else val

    def pte_wrprotect(self, val: int) -> int:
        return val & ~(WRITE | W)  # the hardware W bit goes with the software one

    def pte_mkwrite(self, val: int) -> int:
        val |= WRITE
        return val | W if val & MOD else val

    def pmd_trans_huge(self, val: int) -> bool:
        return bool(val & PMD_HUGE)

    def mk_pmd_huge(self, pa: int, prot: Prot) -> int:
        # pmd_mkhuge(mk_pmd()): a pte with the 4 MiB size code and PMD_HUGE.
        # Writable huge pmds are made dirty up front: the model's huge-pmd
        # fault does not dirty a clean one (Linux's touch_pmd would), and
        # without W the hardware faults every store.
        val = self.mk_pte(pa & ~(self.pmd_size - 1), prot) | SZ4MB | PMD_HUGE
        return self.pte_mkdirty(val) if prot.write else val

    # ---- swap ptes (arch/sparc/include/asm/pgtable_64.h, v6.x): the type at
    # PAGE_SHIFT (8 bits), the offset above it; the low 13 bits, which hold
    # both formats' PRESENT bits, stay clear.
    swap_offset_bits: ClassVar[int] = 63 - PAGE_SHIFT - 8  # below _PAGE_VALID

    def mk_swap_pte(self, swp_type: int, offset: int) -> int:
        return ((swp_type & 0xFF) << PAGE_SHIFT) | (offset << (PAGE_SHIFT + 8))

    def swap_pte_entry(self, val: int) -> tuple[int, int]:
        return (val >> PAGE_SHIFT) & 0xFF, val >> (PAGE_SHIFT + 8)

    def pmd_huge_pa(self, val: int) -> int:
        return val & PADDR_MASK & ~(self.pmd_size - 1)

    def pmd_mkinvalid(self, val: int) -> int:
        return val & ~V  # pmdp_invalidate(): pmd_val & ~_PAGE_VALID

    def pmd_huge_valid(self, val: int) -> bool:
        return self.pmd_trans_huge(val) and bool(val & V)

    thp_deposit: ClassVar[str] = "list"  # arch/sparc/mm/tlb.c: a list_head in the table

    def describe_entry(self, level: str, val: int) -> str:
        if val == 0:
            return "none"
        if level == "pte" or (level == "pmd" and val & PMD_HUGE):
            names = [n for bit, n in _FLAG_NAMES if val & bit]
            if val & SZ_MASK:
                names.append(f"SZ{val & SZ_MASK}")
            kind = "huge" if level == "pmd" else "page"
            return f"{kind} {val & PADDR_MASK:#x} {'|'.join(names)}"
        bad = f" BAD sub-page bits {val & SUBPAGE_MASK:#x}" if val & SUBPAGE_MASK else ""
        return f"table {val & PADDR_MASK:#x}{bad}"

    # ---- the TLB-miss path -------------------------------------------------------------
    def walk(self, root: int, va: int, access: Access, user: bool = True) -> Walk:
        if va >> VA_BITS:
            # Beyond the 53 bits the tables cover (the sun4v VA hole traps).
            return Fault(va, access, "pgd", "not-present")
        tag = tsb_tag(va)
        # 1. The 8K TSB: what the TLB-miss trap vector probes first.
        tsb = root + TSB_OFFSET
        slot = tsb + ((va >> PAGE_SHIFT) & (TSB_ENTRIES - 1)) * TSB_ENTRY
        ent = yield PteRead(slot, TSB_ENTRY, "tsb")
        tte = ent & _MASK64
        if ent >> 64 == tag and tte & V:
            return self._tte_leaf(va, access, user, tte, PAGE_SIZE, (tsb,), slot + 8)
        # 2. The huge-page TSB (tsb_miss_page_table_walk).
        htsb = root + HUGE_TSB_OFFSET
        hslot = htsb + (tag & (TSB_ENTRIES - 1)) * TSB_ENTRY
        ent = yield PteRead(hslot, TSB_ENTRY, "tsb-huge")
        tte = ent & _MASK64
        if ent >> 64 == tag and tte & V:
            return self._tte_leaf(va, access, user, tte, REAL_HPAGE_SIZE, (htsb,), hslot + 8)
        # 3. USER_PGTABLE_WALK_TL1: physical loads; a zero entry ends the walk.
        #    Each entry is used as the next table's address as it is (the
        #    handler adds the index; it never masks).
        pgd_l, pud_l, pmd_l, pte_l = self.levels
        pgd = yield PteRead(root + pgd_l.index(va) * 8, 8, "pgd")
        if pgd == 0:
            return Fault(va, access, "pgd", "not-present")
        if pgd & 7:
            return Fault(va, access, "pgd", "bad-entry")  # the ldxa would trap unaligned
        pud = yield PteRead(pgd + pud_l.index(va) * 8, 8, "pud")
        if pud == 0:
            return Fault(va, access, "pud", "not-present")
        if pud & PMD_HUGE or pud & 7:
            return Fault(va, access, "pud", "bad-entry")  # PUD-sized pages are not modelled
        pmd_pa = pud + pmd_l.index(va) * 8
        pmd = yield PteRead(pmd_pa, 8, "pmd")
        if pmd == 0:
            return Fault(va, access, "pmd", "not-present")
        if pmd & PMD_HUGE:
            # USER_PGTABLE_CHECK_PMD_HUGE: an invalid huge pmd faults; a valid
            # one becomes the 4 MiB TTE of the half `va` falls in.
            if not pmd & V:
                return Fault(va, access, "pmd", "not-present")
            tte = (pmd & ~REAL_HPAGE_SIZE) | (va & REAL_HPAGE_SIZE)
            yield PteWrite(hslot, TSB_ENTRY, (tag << 64) | tte, "tsb-huge")
            return self._tte_leaf(va, access, user, tte, REAL_HPAGE_SIZE, (root, pgd, pud), pmd_pa)
        if pmd & 7:
            return Fault(va, access, "pmd", "bad-entry")
        pte_pa = pmd + pte_l.index(va) * 8
        pte = yield PteRead(pte_pa, 8, "pte")
        if not pte & V:  # brgez: not valid (none, old, or PROT_NONE) -> do_sparc64_fault
            return Fault(va, access, "pte", "not-present")
        # tsb_reload: TSB_LOCK_TAG, then the TTE, then the tag. With the tag
        # locked no other CPU can hit the slot, so one 16-byte store is the
        # same to every observer (and flushes wait for the walk: IPI).
        yield PteWrite(slot, TSB_ENTRY, (tag << 64) | pte, "tsb")
        return self._tte_leaf(va, access, user, pte, PAGE_SIZE, (root, pgd, pud, pmd), pte_pa)

    def _tte_leaf(self, va: int, access: Access, user: bool, tte: int, size: int,
                  tables: tuple[int, ...], leaf_pa: int) -> Fault | Translation:
        """Load `tte` into the TLB and check the access against it."""
        level = "pte" if size == PAGE_SIZE else "pmd"
        if access == Access.FETCH and not tte & EXEC:
            return Fault(va, access, level, "protection")  # tsb_itlb_load's EXEC test
        if user and tte & P:
            return Fault(va, access, level, "protection")
        if access == Access.WRITE and not tte & W:
            # fast_data_access_protection: the kernel sets MOD and W
            return Fault(va, access, level, "protection")
        perms = PERM_R | (PERM_W if tte & W else 0) | (PERM_X if tte & EXEC else 0)
        va_base = va & ~(size - 1)
        pa_base = tte & PADDR_MASK & ~(size - 1)
        return Translation(va_base, pa_base, size, perms, tables, leaf_pa)

    def flush_tsb(self, root: int, start: int, end: int, read: Callable[[int, int], int],
                  write: Callable[[int, int, int], None]) -> None:
        """flush_tsb_user(): invalidate the slots of both TSBs that map [start, end)."""
        if end <= start:
            return
        for base, shift in ((root + TSB_OFFSET, PAGE_SHIFT),
                            (root + HUGE_TSB_OFFSET, REAL_HPAGE_SHIFT)):
            first, last = start >> shift, (end - 1) >> shift
            if last - first < TSB_ENTRIES:
                # tsb_flush() per page: invalidate a slot only if its tag matches
                for vpn in range(first, last + 1):
                    slot = base + (vpn & (TSB_ENTRIES - 1)) * TSB_ENTRY
                    if read(slot, 8) == tsb_tag(vpn << shift):
                        write(slot, 8, TSB_TAG_INVALID)
                continue
            # a range wider than the TSB: look at every slot once
            for i in range(TSB_ENTRIES):
                slot = base + i * TSB_ENTRY
                tag = read(slot, 8)
                if tag & (TSB_TAG_LOCK | TSB_TAG_INVALID):
                    continue
                va = (tag << REAL_HPAGE_SHIFT) | ((i << shift) & (REAL_HPAGE_SIZE - 1))
                if va < end and start < va + (1 << shift):
                    write(slot, 8, TSB_TAG_INVALID)

    def tsb_entries(self, root: int, read: Callable[[int, int], int]) -> list[tuple[int, int, int]]:
        """(va, size, tte) of every valid slot of both TSBs, for checks and tools."""
        out = []
        for base, shift in ((root + TSB_OFFSET, PAGE_SHIFT),
                            (root + HUGE_TSB_OFFSET, REAL_HPAGE_SHIFT)):
            for i in range(TSB_ENTRIES):
                tag = read(base + i * TSB_ENTRY, 8)
                if tag & (TSB_TAG_LOCK | TSB_TAG_INVALID):
                    continue
                va = (tag << REAL_HPAGE_SHIFT) | ((i << shift) & (REAL_HPAGE_SIZE - 1))
                out.append((va, 1 << shift, read(base + i * TSB_ENTRY + 8, 8)))
        return out

    # ---- Unicorn glue ---------------------------------------------------------------------
    def reg(self, name: str) -> int:
        return _REGS[name]

    def setup_cpu(self, uc: unicorn.Uc, cpu_index: int, root: int) -> None:
        # Unicorn starts sparc64 in a state that runs user code as is; the
        # MMU is ours. Remember the root to read instruction words.
        self._fetch_roots[id(uc)] = root

    def get_pc(self, uc: unicorn.Uc) -> int:
        return uc.reg_read(us.UC_SPARC_REG_PC)

    def set_pc(self, uc: unicorn.Uc, pc: int) -> None:
        uc.reg_write(us.UC_SPARC_REG_PC, pc)  # Unicorn sets npc = pc + 4

    def set_sp(self, uc: unicorn.Uc, sp: int) -> None:
        uc.reg_write(us.UC_SPARC_REG_O6, sp - STACK_BIAS)

    def save_regs(self, uc: unicorn.Uc) -> Any:
        # context_save() keeps no sparc64 CPU state (unicorn64.c never sets
        # a context size), so read the register file. Unicorn exposes the
        # globals, the current window and the pc only: not %ccr, %y, CWP or
        # the other windows, which is why guests may not use save/restore
        # (check_guest_asm) and must set condition codes before testing them.
        return (tuple(uc.reg_read(r) for r in _SAVED_REGS), uc.reg_read(us.UC_SPARC_REG_PC))

    def restore_regs(self, uc: unicorn.Uc, saved: Any) -> None:
        regs, pc = saved
        for r, v in zip(_SAVED_REGS, regs, strict=True):
            uc.reg_write(r, v)
        uc.reg_write(us.UC_SPARC_REG_PC, pc)

    # ---- delay slots ----------------------------------------------------------------------
    def _insn_at(self, uc: unicorn.Uc, va: int) -> int | None:
        """The instruction word at `va`, read through the guest's own tables, or None."""
        word = self._insns.get(va)
        root = self._fetch_roots.get(id(uc))
        if word is not None or root is None:
            return word
        tr = self.translate_functional(_UcPhys(uc), root, va, Access.FETCH)
        if not isinstance(tr, Translation):
            return None
        try:
            word = int.from_bytes(uc.mem_read(tr.pa(va), 4), "big")
        except unicorn.UcError:
            return None
        self._insns[va] = word
        return word

    def step_count(self, uc: unicorn.Uc, pc: int) -> int:
        # Writing the pc (and emu_start's begin) sets npc = pc + 4, so a
        # delayed control transfer and its delay slot run in one emu_start.
        # A word we cannot read is on a page the fetch will miss on: nothing
        # runs, so 1 is as good as any.
        word = self._insn_at(uc, pc)
        return 1 if word is None else step_len(word)

    def slice_count(self, uc: unicorn.Uc, pc: int, quantum: int) -> int:
        # Straight-line code up to the first control transfer (and its delay
        # slot) is all a slice may cover: after a branch we could not tell
        # where the next words come from, and stopping between a branch and
        # its slot would lose the branch.
        n, va = 0, pc
        while n < quantum:
            word = self._insn_at(uc, va)
            if word is None:
                return max(n, 1)
            k = step_len(word)
            if n and n + k > quantum:
                return n
            if is_control_transfer(word):
                return n + k
            n, va = n + 1, va + 4
        return n

    def check_guest_asm(self, text: str, name: str) -> None:
        """Refuse what ptemu cannot step exactly on sparc64 (one line, naming the line).

        A fault restarts the faulting instruction at its own pc, and writing
        the pc resets npc, so: no memory access, trap, DCTI or multi-word
        pseudo-instruction in a delay slot; no conditional annulled branch;
        no register-window instruction (Unicorn cannot save or restore the
        other windows); no register-indirect jump (Unicorn 2.1 traps on
        them); no DCTI as the last word of a program or of an 8 KiB page (its
        delay slot would be fetched, and could miss, on the next).
        """
        from guest.asm import AsmError

        def refuse(lineno: int, stmt: str, why: str) -> AsmError:
            return AsmError(f"guest program {name} for sparc64: line {lineno}: `{stmt}` {why}")

        pending: tuple[int, str] | None = None
        for lineno, stmt in _statements(text):
            base, suffixes, operands = _split(stmt)
            if base in _WINDOW_OPS:
                raise refuse(lineno, stmt, "uses the register windows, which ptemu cannot "
                             "snapshot on sparc64 (Unicorn exposes neither CWP nor other windows)")
            if base in _INDIRECT_JUMPS:
                raise refuse(lineno, stmt, "is a register-indirect jump, which traps "
                             "(mem_address_not_aligned) in Unicorn 2.1's sparc64; use call "
                             "and branches")
            branch = bool(_BRANCH.match(base))
            dcti = branch or base in _JUMPS
            if pending is not None:
                dline, dstmt = pending
                why = None
                if _is_memory_access(base, operands):
                    why = "is a memory access"
                elif dcti:
                    why = "is a control transfer"
                elif _TRAP.match(base):
                    why = "is a trap"
                elif base in _MULTI_INSN:
                    why = "may assemble to two instructions"
                elif base.startswith("."):
                    why = "is a directive"
                if why:
                    raise refuse(lineno, stmt, f"{why} in the delay slot of `{dstmt}` (line "
                                 f"{dline}): a fault there could not be restarted exactly; "
                                 "move it out of the slot")
                pending = None
                continue
            if dcti:
                if branch and "a" in suffixes and base not in _UNCONDITIONAL:
                    raise refuse(lineno, stmt, "is a conditional annulled branch: whether its "
                                 "delay slot runs depends on %ccr, which ptemu cannot read; "
                                 "drop the ,a")
                pending = (lineno, stmt)
        if pending is not None:
            raise refuse(pending[0], pending[1], "has no delay slot instruction after it")
        # Programs are linked 8 KiB-aligned, so offsets from 0 tell page ends.
        try:
            code = bytes(keystone.Ks(self.ks_arch, self.ks_mode).asm(text, 0)[0] or b"")
        except keystone.KsError:
            return  # the real assembly reports it
        for off in range(PAGE_SIZE - 4, len(code) - 3, PAGE_SIZE):
            if step_len(int.from_bytes(code[off:off + 4], "big")) == 2:
                raise AsmError(f"guest program {name} for sparc64: the instruction at byte offset "
                               f"{off:#x} is a delayed control transfer in the last word of an "
                               "8 KiB page, so its delay slot would be fetched from the next page; "
                               "insert a nop before it")


class _UcPhys(MemoryImage):
    """Guest physical memory as one Unicorn instance sees it (for instruction words)."""

    def __init__(self, uc: unicorn.Uc) -> None:
        self.uc = uc

    def read(self, pa: int, size: int) -> bytes:
        try:
            return bytes(self.uc.mem_read(pa, size))
        except unicorn.UcError:
            raise IndexError(pa) from None
