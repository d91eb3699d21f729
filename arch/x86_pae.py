"""x86-32 PAE: 3-level tables of 64-bit entries, PDPTEs latched at CR3 load.

Owns every x86-PAE bit (Intel SDM vol. 3A, 4.4 "PAE paging"; Linux
arch/x86/include/asm/pgtable-3level*.h and pgtable_types.h), the hardware
walk with its A/D updates, the order in which Linux writes the two halves
of an entry (before and after 6.2), and the Unicorn/Keystone/Capstone glue
for 32-bit guests.

Linux's view: pgd = the 4-entry PDPT (shift 30), p4d/pud folded, pmd = the
page directory (512 x 8 B, shift 21), pte = 512 x 8 B (shift 12).
`pgd_alloc` preallocates all four PMD pages, so a PDPTE never changes after
the mm is created, which is what lets the CPU latch them at CR3 load: a
vCPU's walks use the four PDPTE registers `load_root` latched (SDM 4.4.1),
not memory; `flush_tlb_mm` (a CR3 reload) latches them again.

The walk checks every reserved bit the SDM has (4.4.2): MAXPHYADDR
(option `maxphyaddr`, default 36) bounds every address field, and XD is
reserved while EFER.NXE is off (option `nxe`, default on).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import capstone
import keystone
import unicorn
from unicorn import x86_const as ux

from arch import UnknownArch
from arch.base import (
    PERM_R,
    PERM_W,
    PERM_X,
    Access,
    Arch,
    CallConv,
    Level,
    MemOp,
    Prot,
    PteSetBits,
    Walk,
    WalkStep,
)
from arch.radix import Descend, Geometry, RadixLevel, Step, WalkState, radix_walk

# Entry bits (SDM table 4-8..4-11; Linux _PAGE_BIT_*).
P = 1 << 0
RW = 1 << 1
US = 1 << 2
PWT = 1 << 3
PCD = 1 << 4
A = 1 << 5
D = 1 << 6
PSE = 1 << 7
G = 1 << 8
SPECIAL = 1 << 9
NX = 1 << 63
PFN_MASK = 0x000F_FFFF_FFFF_F000  # bits 12..51
HUGE_MASK = 0x000F_FFFF_FFE0_0000  # bits 21..51 of a 2 MiB PDE
MASK64 = (1 << 64) - 1
SWP_TYPE_BITS = 5
SWP_TYPE_MASK = (1 << SWP_TYPE_BITS) - 1
SWP_OFFSET_FIRST_BIT = 9  # _PAGE_BIT_PROTNONE + 1
SWP_OFFSET_SHIFT = SWP_OFFSET_FIRST_BIT + SWP_TYPE_BITS
# Hardware-walk masks (SDM 4.4.2 tables 4-8..4-11), see X86Pae.__init__ for
# the ones that depend on MAXPHYADDR and EFER.NXE.
CR3_PDPT = 0xFFFF_FFE0  # CR3[31:5]: the 32-byte-aligned PDPT
PDPTE_RSVD_LOW = 0x1E6  # PDPTE bits 8:5 and 2:1
HUGE_RSVD = 0x1F_E000  # 2 MiB PDE bits 20:13 (bit 12 is PAT)
HUGE_RSVD_LOW = 0x1F_F000  # what a 2 MiB frame address leaves out: PAT and 20:13
MAXPHYADDR_DEFAULT = 36  # a PAE-era part (Unicorn's TCG CPU has 40)

GEOMETRY = Geometry((RadixLevel("pgd", 30, 2, 8), RadixLevel("pmd", 21, 9, 8),
                     RadixLevel("pte", 12, 9, 8)))
_FLAG_NAMES = ((P, "P"), (RW, "RW"), (US, "US"), (PWT, "PWT"), (PCD, "PCD"), (A, "A"),
               (D, "D"), (PSE, "PS"), (G, "G"), (SPECIAL, "SPECIAL"), (NX, "NX"))

XCHG64 = (6, 2)  # the first Linux writing whole PAE entries with pxx_xchg64

# Linux's _KERNPG_TABLE | _PAGE_USER: what pmd_populate writes.
PAGE_TABLE = P | RW | US | A | D



@dataclass(frozen=True)
class PaeRoot:
    """A vCPU's root registers in PAE mode: CR3 and the four PDPTEs it latched."""

    cr3: int
    pdptes: tuple[int, int, int, int]


_REGS = {
    "eax": ux.UC_X86_REG_EAX, "ebx": ux.UC_X86_REG_EBX, "ecx": ux.UC_X86_REG_ECX,
    "edx": ux.UC_X86_REG_EDX, "esi": ux.UC_X86_REG_ESI, "edi": ux.UC_X86_REG_EDI,
    "ebp": ux.UC_X86_REG_EBP, "esp": ux.UC_X86_REG_ESP,
}


class X86Pae(Arch):
    name: ClassVar[str] = "x86-pae"
    page_size: ClassVar[int] = 4096
    uc_page_size: ClassVar[int] = 4096
    byteorder: ClassVar[str] = "little"
    va_bits: ClassVar[int] = 32
    levels: ClassVar[tuple[Level, ...]] = (
        Level("pgd", 30, 4, 8),
        Level("pmd", 21, 512, 8),
        Level("pte", 12, 512, 8),
    )
    callconv: ClassVar[CallConv] = CallConv(
        trap="int 0x80", intno=0x80, nr_reg="eax",
        arg_regs=("ebx", "ecx", "edx", "esi", "edi"), ret_reg="eax")
    uc_arch: ClassVar[int] = unicorn.UC_ARCH_X86
    uc_mode: ClassVar[int] = unicorn.UC_MODE_32
    ks_arch: ClassVar[int] = keystone.KS_ARCH_X86
    ks_mode: ClassVar[int] = keystone.KS_MODE_32
    cs_arch: ClassVar[int] = capstone.CS_ARCH_X86
    cs_mode: ClassVar[int] = capstone.CS_MODE_32
    code_base: ClassVar[int] = 0x0800_0000
    stack_top: ClassVar[int] = 0xBF00_0000
    word_size: ClassVar[int] = 4
    split_pmd_ptlocks: ClassVar[bool] = True  # ARCH_ENABLE_SPLIT_PMD_PTLOCK for X86_PAE
    have_move_pmd: ClassVar[bool] = True  # select HAVE_MOVE_PMD (arch/x86/Kconfig)
    # ptemu is the hypervisor: remote flushes are paravirt, as with Xen, which
    # is why x86 selects MMU_GATHER_RCU_TABLE_FREE under PARAVIRT.
    tlb_flush_kind: ClassVar[str] = "paravirt"

    def __init__(self, maxphyaddr: int = MAXPHYADDR_DEFAULT, nxe: bool = True,
                 **unknown: Any) -> None:
        if unknown:
            raise UnknownArch(f"x86-pae has no arch option {', '.join(sorted(unknown))!r} "
                              "(it has maxphyaddr, nxe)")
        if not isinstance(maxphyaddr, int) or not 32 <= maxphyaddr <= 52:
            raise UnknownArch(f"x86-pae arch option maxphyaddr must be 32..52, got {maxphyaddr!r}")
        # MAXPHYADDR (CPUID 80000008H:EAX[7:0]) bounds every physical address
        # in an entry; the bits from it to 62 are reserved, and XD (63) too
        # while EFER.NXE = 0 (SDM 4.4.2).
        self.maxphyaddr = maxphyaddr
        self.nxe = bool(nxe)
        above = ((1 << 64) - 1) & ~((1 << maxphyaddr) - 1)
        self._pa_mask = ((1 << maxphyaddr) - 1) & ~0xFFF
        self._pdpte_rsvd = above | PDPTE_RSVD_LOW  # XD is reserved in a PDPTE
        self._rsvd = (above & ~NX) | (0 if self.nxe else NX)

    def ram_limit(self) -> int:
        """RAM may reach MAXPHYADDR: every table, PDPTE, PDE and PTE address field does."""
        return 1 << self.maxphyaddr

    # ---- root -------------------------------------------------------------
    def alloc_root(self, alloc_table: Callable[[str, int], int],
                   store: Callable[[int, int, int], None]) -> int:
        # pgd_alloc(): the PDPT and, preallocated, all four PMD pages (the
        # CPU latches PDPTEs at CR3 load, so they must not change later).
        pdpt = alloc_table("pgd", 32)
        for i in range(4):
            store(pdpt + 8 * i, 8, alloc_table("pmd", 4096) | P)
        return pdpt

    # ---- Linux's view of entries ---------------------------------------------
    def entry_none(self, level: str, val: int) -> bool:
        return val == 0

    def entry_present(self, level: str, val: int) -> bool:
        # _PAGE_PROTNONE (= G when P is clear) also counts as present to Linux.
        if level == "pgd":
            return bool(val & P)
        if level == "pmd":
            return bool(val & (P | PSE))  # pmd_present(): a splitting THP too
        return bool(val & (P | G))

    def mk_table_entry(self, level: str, table_pa: int) -> int:
        if level == "pgd":
            return (table_pa & PFN_MASK) | P
        return (table_pa & PFN_MASK) | PAGE_TABLE

    def table_pa(self, level: str, val: int) -> int:
        return val & PFN_MASK

    def entry_bad(self, level: str, val: int) -> bool:
        if level == "pgd":
            return bool(val & ~(PFN_MASK | P | PWT | PCD))
        if level == "pmd":
            if self.pmd_trans_huge(val):
                return False
            flags = val & ~PFN_MASK
            return (flags & ~(US | A)) != (P | RW | D)
        return False

    def mk_pte(self, pa: int, prot: Prot) -> int:
        val = (pa & PFN_MASK) | P | A
        if prot.user:
            val |= US
        if prot.write:
            val |= RW
        if not prot.exec:
            val |= NX
        return val

    def pte_pa(self, val: int) -> int:
        return val & PFN_MASK

    def pte_write(self, val: int) -> bool:
        return bool(val & RW)

    def pte_mkyoung(self, val: int) -> int:
        return val | A

    def pte_mkdirty(self, val: int) -> int:
        return val | D

    def pte_wrprotect(self, val: int) -> int:
        return val & ~RW  # no shadow stacks on 32-bit: no SavedDirty games

    def pte_mkwrite(self, val: int) -> int:
        return val | RW

    def pmd_trans_huge(self, val: int) -> bool:
        # pmd_present() counts PSE too: a pmd pmdp_invalidate() left (P clear)
        # is still a huge pmd to Linux while a split is under way
        return bool(val & PSE) and bool(val & (P | PSE))

    def pmd_mkinvalid(self, val: int) -> int:
        return val & ~(P | G)  # pmd_mkinvalid(): clear _PAGE_PRESENT and _PAGE_PROTNONE

    def pmd_huge_valid(self, val: int) -> bool:
        return bool(val & P) and bool(val & PSE)

    def mk_pmd_huge(self, pa: int, prot: Prot) -> int:
        return self.mk_pte(pa & HUGE_MASK, prot) | PSE

    def pmd_huge_pa(self, val: int) -> int:
        return val & HUGE_MASK

    # ---- swap ptes (arch/x86/include/asm/pgtable-3level.h, v4.19+ with the
    # L1TF inversion of 2018): the 64-bit pte holds the type in its top five
    # bits and the offset inverted from bit 9 (above _PAGE_BIT_PROTNONE) up,
    # so the HIGH word carries type and most of the offset: a swap pte read
    # half old, half new is two different entries.
    swap_offset_bits: ClassVar[int] = 27  # the 32-bit swp_entry_t keeps 27 bits of offset

    def mk_swap_pte(self, swp_type: int, offset: int) -> int:
        inv = (~offset & MASK64) << SWP_OFFSET_SHIFT & MASK64
        return (inv >> SWP_TYPE_BITS) | ((swp_type & SWP_TYPE_MASK) << (64 - SWP_TYPE_BITS))

    def swap_pte_entry(self, val: int) -> tuple[int, int]:
        swp_type = val >> (64 - SWP_TYPE_BITS)
        offset = ((~val & MASK64) << SWP_TYPE_BITS & MASK64) >> SWP_OFFSET_SHIFT
        # __pte_to_swp_entry() goes through the 32-bit swp_entry_t: type | offset << 5
        return swp_type, offset & ((1 << (32 - SWP_TYPE_BITS)) - 1)

    # Linux's entry writes (pgtable-3level.h, CONFIG_SMP), which changed in
    # 6.2 with Peter Zijlstra's "x86/mm/pae: Be consistent with
    # pXXp_get_and_clear()", "Use WRITE_ONCE()" and "Don't (ab)use atomic64":
    #   set_pte            high, smp_wmb, low (present bit last)     all versions
    #   pte_clear/pmd_clear low, smp_wmb, high (present bit first)    all versions
    #   p{te,md}p_get_and_clear
    #     <= 6.1  xchg(low, 0), then read high, then high = 0
    #     6.2+    pxx_xchg64: one 64-bit exchange (try_cmpxchg64 loop)
    #   set_pmd/set_pud
    #     <= 6.1  set_64bit(): a cmpxchg8b loop, one atomic 64-bit store
    #     6.2+    pxx_xchg64: one 64-bit exchange
    def set_entry_ops(self, level: str, entry_pa: int, val: int) -> Sequence[MemOp]:
        if level == "pte":
            return (MemOp(entry_pa + 4, 4, val >> 32), MemOp(entry_pa, 4, val & 0xFFFF_FFFF))
        if level == "pmd" and self.since(XCHG64):
            return (MemOp(entry_pa, 8, val, "xchg"),)
        return (MemOp(entry_pa, 8, val),)

    def clear_entry_ops(self, level: str, entry_pa: int) -> Sequence[MemOp]:
        if level == "pgd":
            return (MemOp(entry_pa, 8, 0),)
        return (MemOp(entry_pa, 4, 0), MemOp(entry_pa + 4, 4, 0))

    def entry_ops(self, primitive: str, entry_pa: int, val: int = 0) -> Sequence[MemOp]:
        if primitive in ("ptep_get_and_clear", "pmdp_get_and_clear"):
            if self.since(XCHG64):
                return (MemOp(entry_pa, 8, 0, "xchg"),)
            # "xchg acts as a barrier before the setting of the high bits"
            return (MemOp(entry_pa, 4, 0, "xchg"), MemOp(entry_pa + 4, 4, 0, "load"),
                    MemOp(entry_pa + 4, 4, 0))
        if primitive == "pmdp_invalidate" and not val & P:
            # pgtable-3level.h pmdp_establish() of a non-present pmd: half by half,
            # "xchg acts as a barrier before setting of the high bits"
            return (MemOp(entry_pa, 4, val & 0xFFFF_FFFF, "xchg"),
                    MemOp(entry_pa + 4, 4, 0, "load"), MemOp(entry_pa + 4, 4, val >> 32))
        return super().entry_ops(primitive, entry_pa, val)

    def describe_entry(self, level: str, val: int) -> str:
        if val == 0:
            return "none"
        names = [n for bit, n in _FLAG_NAMES if val & bit]
        if level == "pmd" and val & PSE:
            target = f"huge {val & HUGE_MASK:#x}"
        elif level == "pte":
            target = f"page {val & PFN_MASK:#x}"
        else:
            target = f"table {val & PFN_MASK:#x}"
        return f"{target} {'|'.join(names)}"

    # ---- hardware walker ---------------------------------------------------------
    def hw_root(self, root: int) -> int:
        return root  # CR3 = the PDPT's physical address (bits 31:5)

    def load_root(self, hw_root: int, read: Callable[[int, int], int]) -> PaeRoot:
        """MOV to CR3 in PAE mode: the CPU latches the four PDPTEs (SDM 4.4.1).

        A present PDPTE with a reserved bit set makes the MOV fault (#GP)
        and nothing is latched; Linux never builds one, so that is a model
        bug and raises.
        """
        pdpt = hw_root & CR3_PDPT
        pdptes = tuple(read(pdpt + 8 * i, 8) for i in range(4))
        for i, e in enumerate(pdptes):
            if e & P and e & self._pdpte_rsvd:
                raise ValueError(f"MOV CR3 {hw_root:#x}: PDPTE{i} {e:#x} has reserved bits (#GP)")
        return PaeRoot(hw_root, pdptes)  # type: ignore[arg-type]

    def walk(self, root: int | PaeRoot, va: int, access: Access, user: bool = True) -> Walk:
        """PAE paging (SDM 4.4): PDPTE, PDE, then PTE unless the PDE maps 2 MiB.

        `root` is CR3 (the PDPTEs are then read from memory, as a fresh
        MOV CR3 would latch them) or the `PaeRoot` a vCPU latched with
        `load_root` (the PDPTEs are its registers, not memory).
        """
        st = WalkState(va & 0xFFFF_FFFF, access, user, [])
        if isinstance(root, PaeRoot):
            return (yield from radix_walk(GEOMETRY, root.cr3 & CR3_PDPT, st, self._decode,
                                          latched=root.pdptes[(st.va >> 30) & 3]))
        return (yield from radix_walk(GEOMETRY, root & CR3_PDPT, st, self._decode))

    def _decode(self, st: WalkState, e: int, epa: int) -> Generator[WalkStep, int, Step]:
        name = st.level.name
        if not e & P:
            return st.fault("not-present")
        if name == "pgd":
            if e & self._pdpte_rsvd:
                return st.fault("bad-entry")
            return Descend(e & self._pa_mask)
        if e & self._rsvd:
            return st.fault("bad-entry")
        # Rights are the AND of U/S and R/W over PDE and PTE, and the OR of XD.
        acc = st.acc
        acc["rw"] = acc.get("rw", True) and bool(e & RW)
        acc["us"] = acc.get("us", True) and bool(e & US)
        acc["nx"] = acc.get("nx", False) or bool(e & NX)
        if name == "pmd":
            if e & PSE:
                if e & HUGE_RSVD:
                    return st.fault("bad-entry")
                return (yield from self._leaf(st, e, epa, 1 << 21, e & self._pa_mask & ~HUGE_RSVD_LOW))
            if not e & A:
                msg = PteSetBits(epa, 8, A, name, e)
                if not msg.took((yield msg)):
                    return st.fault("changed")  # the walk starts again
            return Descend(e & self._pa_mask)
        return (yield from self._leaf(st, e, epa, 4096, e & self._pa_mask))

    def _leaf(self, st: WalkState, leaf: int, leaf_pa: int, size: int, pa_base: int) -> Walk:
        acc, access = st.acc, st.access
        nx = acc["nx"] and self.nxe
        if st.user and not acc["us"]:
            return st.fault("protection")
        # CR0.WP = 1 (Linux): supervisor writes honour R/W as user writes do.
        if access == Access.WRITE and not acc["rw"]:
            return st.fault("protection")
        if access == Access.FETCH and nx:
            return st.fault("protection")
        want = A | (D if access == Access.WRITE else 0)
        if leaf & want != want:
            msg = PteSetBits(leaf_pa, 8, want, st.level.name, leaf)
            leaf = yield msg
            if not msg.took(leaf):
                return st.fault("changed")  # the walk starts again
        perms = PERM_R | (0 if nx else PERM_X)
        # Grant write only once D is set, so the first store re-walks and
        # sets it, as the hardware does.
        if acc["rw"] and leaf & D:
            perms |= PERM_W
        return st.translation(pa_base, size, perms, leaf_pa)

    # ---- Unicorn glue ---------------------------------------------------------------
    def reg(self, name: str) -> int:
        return _REGS[name]

    def setup_cpu(self, uc: unicorn.Uc, cpu_index: int, root: int) -> None:
        # UC_MODE_32 starts in flat 32-bit protected mode at CPL0; paging is
        # ours (UC_TLB_VIRTUAL), so CR0/CR3 only matter to tell the story.
        uc.reg_write(ux.UC_X86_REG_CR3, root)

    def get_pc(self, uc: unicorn.Uc) -> int:
        return uc.reg_read(ux.UC_X86_REG_EIP)

    def set_pc(self, uc: unicorn.Uc, pc: int) -> None:
        uc.reg_write(ux.UC_X86_REG_EIP, pc)

    def set_sp(self, uc: unicorn.Uc, sp: int) -> None:
        uc.reg_write(ux.UC_X86_REG_ESP, sp)
