"""x86-32 PAE: 3-level tables of 64-bit entries, PDPTEs latched at CR3 load.

Owns every x86-PAE bit (Intel SDM vol. 3A, 4.4 "PAE paging"; Linux
arch/x86/include/asm/pgtable-3level*.h and pgtable_types.h), the hardware
walk with its A/D updates, the order in which Linux writes the two halves
of an entry (before and after 6.2), and the Unicorn/Keystone/Capstone glue
for 32-bit guests.

Linux's view: pgd = the 4-entry PDPT (shift 30), p4d/pud folded, pmd = the
page directory (512 x 8 B, shift 21), pte = 512 x 8 B (shift 12).
`pgd_alloc` preallocates all four PMD pages, so a PDPTE never changes after
the mm is created, which is what lets the CPU latch them at CR3 load.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

import capstone
import keystone
import unicorn
from unicorn import x86_const as ux

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
    PteRead,
    PteSetBits,
    Translation,
    Walk,
)

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
_FLAG_NAMES = ((P, "P"), (RW, "RW"), (US, "US"), (PWT, "PWT"), (PCD, "PCD"), (A, "A"),
               (D, "D"), (PSE, "PS"), (G, "G"), (SPECIAL, "SPECIAL"), (NX, "NX"))

XCHG64 = (6, 2)  # the first Linux writing whole PAE entries with pxx_xchg64

# Linux's _KERNPG_TABLE | _PAGE_USER: what pmd_populate writes.
PAGE_TABLE = P | RW | US | A | D

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
    # ptemu is the hypervisor: remote flushes are paravirt, as with Xen, which
    # is why x86 selects MMU_GATHER_RCU_TABLE_FREE under PARAVIRT.
    tlb_flush_kind: ClassVar[str] = "paravirt"

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
        return bool(val & (P | (G if level == "pte" else 0)))

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

    def pmd_trans_huge(self, val: int) -> bool:
        return bool(val & P) and bool(val & PSE)

    def mk_pmd_huge(self, pa: int, prot: Prot) -> int:
        return self.mk_pte(pa & HUGE_MASK, prot) | PSE

    def pmd_huge_pa(self, val: int) -> int:
        return val & HUGE_MASK

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
    def walk(self, root: int, va: int, access: Access, user: bool = True) -> Walk:
        pgd, pmd_l, pte_l = self.levels
        # The PDPTE: real PAE latches the four at CR3 load; ptemu's Linux
        # never changes them after pgd_alloc, so reading the entry here is
        # equivalent and keeps one walker for tools.
        pdpte = yield PteRead(root + pgd.index(va) * 8, 8, "pgd")
        if not pdpte & P:
            return Fault(va, access, "pgd", "not-present")
        pmd_table = pdpte & PFN_MASK
        pde_pa = pmd_table + pmd_l.index(va) * 8
        pde = yield PteRead(pde_pa, 8, "pmd")
        if not pde & P:
            return Fault(va, access, "pmd", "not-present")
        if pde & PSE:
            return (yield from self._leaf(va, access, user, pde, pde_pa, "pmd", 1 << 21,
                                          pde & HUGE_MASK, (root, pmd_table), pde))
        if not pde & A:
            msg = PteSetBits(pde_pa, 8, A, "pmd", pde)
            pde = yield msg
            if not msg.took(pde):
                return Fault(va, access, "pmd", "changed")  # the walk starts again
        pte_table = pde & PFN_MASK
        pte_pa = pte_table + pte_l.index(va) * 8
        pte = yield PteRead(pte_pa, 8, "pte")
        if not pte & P:
            return Fault(va, access, "pte", "not-present")
        return (yield from self._leaf(va, access, user, pte, pte_pa, "pte", 4096,
                                      pte & PFN_MASK, (root, pmd_table, pte_table), pde))

    def _leaf(self, va: int, access: Access, user: bool, leaf: int, leaf_pa: int, level: str,
              size: int, pa_base: int, tables: tuple[int, ...], pde: int) -> Walk:
        # Rights are the AND of all levels (U/S, R/W) and the OR of NX.
        writable = bool(leaf & RW) and bool(pde & RW)
        usr = bool(leaf & US) and bool(pde & US)
        nx = bool(leaf & NX) or bool(pde & NX)
        if user and not usr:
            return Fault(va, access, level, "protection")
        if access == Access.WRITE and not writable:
            return Fault(va, access, level, "protection")
        if access == Access.FETCH and nx:
            return Fault(va, access, level, "protection")
        want = A | (D if access == Access.WRITE else 0)
        if leaf & want != want:
            msg = PteSetBits(leaf_pa, 8, want, level, leaf)
            leaf = yield msg
            if not msg.took(leaf):
                return Fault(va, access, level, "changed")  # the walk starts again
        perms = PERM_R | (0 if nx else PERM_X)
        # Grant write only once D is set, so the first store re-walks and
        # sets it, as the hardware does.
        if writable and leaf & D:
            perms |= PERM_W
        va_base = va & ~(size - 1)
        return Translation(va_base, pa_base, size, perms, tables, leaf_pa)

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
