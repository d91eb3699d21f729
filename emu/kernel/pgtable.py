"""The pte_offset_map family, pmdp_get_lockless and entry accessors.

Models mm/pgtable-generic.c and include/linux/pgtable.h as changed by the
seed series: `__pte_offset_map()` validates the pmd for itself and may fail
(seed 000, "mm/pgtable: allow pte_offset_map[_lock]() to fail"); it takes
rcu_read_lock(), dropped by `pte_unmap()` (seed 002, "mm/pgtable: add
rcu_read_lock() and rcu_read_unlock()s"); on PAE the pmd read is bracketed
by `pmdp_get_lockless_start/end()` (seed 002, "add PAE safety to
__pte_offset_map()"); `pte_offset_map_ro_nolock()` / `_rw_nolock()` replace
`pte_offset_map_nolock()` (seed 001, Qi Zheng's v4).

Split reads: where a pmd entry is wider than the CPU word (x86-PAE), a
lockless read is two loads, and `pmdp_get_lockless()` re-reads the low half
until it is stable; elsewhere it is one load.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from arch.base import PRIMITIVES
from emu.kernel import steps as s
from emu.kernel.sync import Spinlock

if TYPE_CHECKING:
    from arch.base import Arch
    from emu.kernel import Kernel
    from emu.kernel.mm import MM


def entry_reads_tear(arch: Arch) -> bool:
    """True where a pmd/pte is wider than a word (PAE): a lockless read is two loads."""
    if arch.pmd_read_tears is not None:
        return arch.pmd_read_tears
    return arch.level("pmd").entry_size > arch.word_size


class PgtableMixin:
    # ---- entry access ------------------------------------------------------
    def entry_size(self: Kernel, level: str) -> int:
        """sizeof(pte_t)/sizeof(pmd_t) at `level` (all versions)."""
        return self.arch.level(level).entry_size

    def split_entry_reads(self: Kernel) -> bool:
        """True where a pmd/pte is wider than a word (PAE): lockless reads tear."""
        return entry_reads_tear(self.arch)

    def read_entry(self: Kernel, level: str, pa: int, what: str = "") -> s.KernelGen:
        """An ordinary (READ_ONCE or locked) read of an entry (ptep_get/pmdp_get, all versions)."""
        return (yield s.Load(pa, self.entry_size(level), what or f"read {level}"))

    def set_entry(self: Kernel, level: str, pa: int, val: int, what: str = "") -> s.KernelGen:
        """set_pte()/set_pmd() (set_pte_at, pmd_populate, set_pmd_at), or a plain upper-level store.
        """
        if level in ("pte", "pmd"):
            yield from self.entry_primitive(f"set_{level}", pa, val, what or f"set {level}")
            return
        for op in self.arch.set_entry_ops(level, pa, val):
            yield s.Store(op.pa, op.size, op.value, what or f"set {level}")

    def clear_entry(self: Kernel, level: str, pa: int, what: str = "") -> s.KernelGen:
        """pte_clear()/pmd_clear(): the entry is emptied and nothing is returned."""
        if level in ("pte", "pmd"):
            yield from self.entry_primitive(f"{level}_clear", pa, 0, what or f"clear {level}")
            return
        for op in self.arch.clear_entry_ops(level, pa):
            yield s.Store(op.pa, op.size, op.value, what or f"clear {level}")

    def get_and_clear_entry(self: Kernel, level: str, pa: int, what: str,
                            old: int | None = None) -> s.KernelGen:
        """p{te,md}p_get_and_clear(): empty the entry and return what it held.

        Where the arch's primitive reads the entry (x86-PAE's xchg), the value
        comes from that read, so a hardware A/D update racing the clear is not
        lost. Elsewhere it is the generic read-then-clear: `old`, if the
        caller has just read the entry under its lock, is that read;
        otherwise the read is made here.
        """
        ops = self.arch.entry_ops(f"{level}p_get_and_clear", pa)
        if old is None and all(op.kind == "store" for op in ops):
            old = yield from self.read_entry(level, pa, what)
        got = yield from self.entry_primitive(f"{level}p_get_and_clear", pa, 0, what)
        return old if got is None else got

    def entry_primitive(self: Kernel, primitive: str, pa: int, val: int, what: str) -> s.KernelGen:
        """Run the arch's memory operations for one entry primitive, in Linux's order.

        Returns the entry's old value assembled from the operations that read
        it (exchanges and loads), or None if none did.
        """
        a = self.arch
        size = self.entry_size(PRIMITIVES[primitive])
        old = 0
        read = False
        for op in a.entry_ops(primitive, pa, val):
            if op.kind == "store":
                yield s.Store(op.pa, op.size, op.value, what)
                continue
            if op.kind == "xchg":
                got = yield s.Xchg(op.pa, op.size, op.value, what)
            else:
                got = yield s.Load(op.pa, op.size, what)
            offset = op.pa - pa
            shift = 8 * (offset if a.byteorder == "little" else size - offset - op.size)
            old |= got << shift
            read = True
        return old if read else None

    def entry_addr(self: Kernel, level: str, table_pa: int, addr: int) -> int:
        """pte_offset/pmd_offset arithmetic: where the entry for `addr` is in a table (all
        versions).
        """
        return self.arch.entry_pa(table_pa, self.arch.level(level), addr)

    # ---- pmdp_get_lockless ------------------------------------------------------
    def _halves(self: Kernel, pa: int) -> tuple[int, int]:
        """(low, high) word addresses of a split entry."""
        w = self.arch.word_size
        return (pa, pa + w) if self.arch.byteorder == "little" else (pa + w, pa)

    def entry_get_lockless(self: Kernel, level: str, pa: int) -> s.KernelGen:
        """p{te,md}p_get_lockless() (v6.2+, include/linux/pgtable.h): low, high, re-read low until
        stable where entries tear. ptemu uses it at every version; 6.1's gup READ_ONCE of a PAE pmd
        is what plain_two_load_read models.
        """
        name = f"{level}p_get_lockless"
        if not self.split_entry_reads():
            return (yield s.Load(pa, self.entry_size(level), name))
        lo_pa, hi_pa = self._halves(pa)
        w = self.arch.word_size
        while True:
            low = yield s.Load(lo_pa, w, f"{name} low")
            high = yield s.Load(hi_pa, w, f"{name} high")
            again = yield s.Load(lo_pa, w, f"{name} re-read low")
            if again == low:
                value = (high << (8 * w)) | low
                yield s.Observed(pa, self.entry_size(level), value, name)
                return value

    def pmdp_get_lockless(self: Kernel, pmd_pa: int) -> s.KernelGen:
        """pmdp_get_lockless() (v6.2+)."""
        return (yield from self.entry_get_lockless("pmd", pmd_pa))

    def ptep_get_lockless(self: Kernel, ptep: int) -> s.KernelGen:
        """ptep_get_lockless() (v6.2+)."""
        return (yield from self.entry_get_lockless("pte", ptep))

    def pmdp_get_lockless_start(self: Kernel) -> s.KernelGen:
        """pmdp_get_lockless_start() (v6.5, seed 002): local_irq_save where pmd reads tear."""
        if self.split_entry_reads():
            yield s.IrqDisable()

    def pmdp_get_lockless_end(self: Kernel) -> s.KernelGen:
        """pmdp_get_lockless_end() (v6.5, seed 002)."""
        if self.split_entry_reads():
            yield s.IrqEnable()

    def pmdp_get_lockless_sync(self: Kernel) -> s.KernelGen:
        """pmdp_get_lockless_sync() (v6.5, seed 002): wait out IRQs-off lockless readers of a pmd
        just cleared (PAE only).
        """
        if self.split_entry_reads():
            yield s.TlbRemoveTableSyncOne()

    # ---- locks -------------------------------------------------------------------
    def pte_lockptr(self: Kernel, mm: MM, pmdval: int) -> Spinlock:
        """pte_lockptr() (v6.6-v6.14): the split ptl in the table's ptdesc, or page_table_lock."""
        if not self.arch.split_pte_ptlocks:
            return mm.page_table_lock
        # the lock lives in the table page's ptdesc (shared where tables share a page)
        key = self.policy.ptlock_key(self, self.arch.table_pa("pmd", pmdval))
        return self.lock_for(key, f"ptl {key:#x}")

    def pmd_lockptr(self: Kernel, mm: MM, pmd_pa: int, addr: int) -> Spinlock:
        """pmd_lockptr() (v6.6-v6.14): the split pmd lock in the pmd table's ptdesc, or
        page_table_lock.
        """
        if not self.arch.split_pmd_ptlocks:
            return mm.page_table_lock
        lv = self.arch.level("pmd")
        key = self.policy.ptlock_key(self, pmd_pa - lv.index(addr) * lv.entry_size)
        return self.lock_for(key, f"pml {key:#x}")

    def pmd_lock(self: Kernel, mm: MM, pmd_pa: int, addr: int) -> s.KernelGen:
        """pmd_lock() (all versions)."""
        ptl = self.pmd_lockptr(mm, pmd_pa, addr)
        yield s.SpinLock(ptl)
        return ptl

    # ---- the pte_offset_map family ---------------------------------------------------
    def _pte_offset_map(self: Kernel, pmd_pa: int, addr: int) -> s.KernelGen:
        """Linux's __pte_offset_map() (v6.5+, seeds 000/002): (ptep, pmdval) with rcu_read_lock
        held, or None.
        """
        a = self.arch
        yield s.RcuReadLock()
        yield from self.pmdp_get_lockless_start()
        pmdval = yield from self.pmdp_get_lockless(pmd_pa)
        yield from self.pmdp_get_lockless_end()
        # Linux's order: none or migration, then trans-huge, then bad (which clears the
        # live entry)
        if self.pte_offset_map_nomap(pmdval):
            yield s.RcuReadUnlock()
            return None
        if a.entry_bad("pmd", pmdval) or not a.entry_present("pmd", pmdval):
            # pmd_clear_bad(): the live entry is cleared, not just the snapshot.
            yield s.Note(f"pmd_clear_bad: bad pmd {pmdval:#x} at {pmd_pa:#x}")
            yield from self.clear_entry("pmd", pmd_pa, "pmd_clear_bad")
            yield s.RcuReadUnlock()
            return None
        ptep = self.entry_addr("pte", a.table_pa("pmd", pmdval), addr)
        return (ptep, pmdval)

    def pte_offset_map_nomap(self: Kernel, pmdval: int) -> bool:
        """__pte_offset_map()'s nomap tests (v6.5+): pmd_none, is_pmd_migration_entry (a PMD
        migration entry is left alone, not taken for pmd_bad), pmd_trans_huge."""
        a = self.arch
        return (a.entry_none("pmd", pmdval) or self.is_pmd_migration_entry(pmdval)
                or a.pmd_trans_huge(pmdval))

    def pte_offset_map(self: Kernel, pmd_pa: int, addr: int) -> s.KernelGen:
        """pte_offset_map() (v6.5+): ptep with rcu_read_lock held, or None."""
        r = yield from self._pte_offset_map(pmd_pa, addr)
        return None if r is None else r[0]

    def pte_unmap(self: Kernel, ptep: int) -> s.KernelGen:
        """pte_unmap() (v6.5+): drops __pte_offset_map's rcu_read_lock."""
        yield s.RcuReadUnlock()

    def pte_offset_map_ro_nolock(self: Kernel, mm: MM, pmd_pa: int, addr: int) -> s.KernelGen:
        """pte_offset_map_ro_nolock() (v6.13; 6.5-6.12's pte_offset_map_nolock is the same steps):
        (ptep, ptl) for read-only use after taking ptl, or None.
        """
        r = yield from self._pte_offset_map(pmd_pa, addr)
        if r is None:
            return None
        ptep, pmdval = r
        return (ptep, self.pte_lockptr(mm, pmdval))

    def pte_offset_map_rw_nolock(self: Kernel, mm: MM, pmd_pa: int, addr: int) -> s.KernelGen:
        """pte_offset_map_rw_nolock() (v6.13; before, pte_offset_map_nolock with no pmdval, the same
        steps): (ptep, pmdval, ptl), or None. Callers recheck pmd_same/pte_same under ptl
        (rw_nolock_pmd_same says from which version).
        """
        r = yield from self._pte_offset_map(pmd_pa, addr)
        if r is None:
            return None
        ptep, pmdval = r
        return (ptep, pmdval, self.pte_lockptr(mm, pmdval))

    def pte_offset_map_lock(self: Kernel, mm: MM, pmd_pa: int, addr: int) -> s.KernelGen:
        """pte_offset_map_lock() (v6.5+): (ptep, ptl) with ptl held and the pmd rechecked, or None.
        """
        while True:
            r = yield from self._pte_offset_map(pmd_pa, addr)
            if r is None:
                return None
            ptep, pmdval = r
            ptl = self.pte_lockptr(mm, pmdval)
            yield s.SpinLock(ptl)
            now = yield from self.pmdp_get_lockless(pmd_pa)
            if now == pmdval:
                return (ptep, ptl)
            yield s.SpinUnlock(ptl)
            yield from self.pte_unmap(ptep)

    def pte_unmap_unlock(self: Kernel, ptep: int, ptl: Spinlock) -> s.KernelGen:
        """pte_unmap_unlock() (all versions)."""
        yield s.SpinUnlock(ptl)
        yield from self.pte_unmap(ptep)

    # ---- upper levels -----------------------------------------------------------------
    def upper_levels(self: Kernel) -> list[str]:
        """The levels above the pmd, root first (the arch's folding, all versions)."""
        names = [lv.name for lv in self.arch.levels]
        return names[: names.index("pmd")]

    def pmd_offset_alloc(self: Kernel, mm: MM, addr: int, alloc: bool) -> s.KernelGen:
        """pgd/p4d/pud_offset + __pud_alloc etc. (all versions): walk pgd..pud to the pmd entry for
        `addr`, allocating missing tables.

        Returns the pmd entry's physical address, or None (alloc=False and a
        level is empty). Upper tables are never freed while the mm lives, so
        these reads need no lock; populating takes page_table_lock.
        """
        a = self.arch
        table = mm.root
        names = [lv.name for lv in a.levels]
        for i, name in enumerate(self.upper_levels()):
            epa = self.entry_addr(name, table, addr)
            val = yield from self.read_entry(name, epa)
            if a.entry_none(name, val):
                if not alloc:
                    return None
                child = names[i + 1]
                new = yield from self.alloc_table(mm, child)
                yield s.SpinLock(mm.page_table_lock)
                val = yield from self.read_entry(name, epa)
                if a.entry_none(name, val):
                    val = a.mk_table_entry(name, new)
                    yield from self.set_entry(name, epa, val, f"{name}_populate")
                    new = None
                yield s.SpinUnlock(mm.page_table_lock)
                if new is not None:
                    yield from self.policy.free(self, mm, new, child)
            table = a.table_pa(name, val)
        return self.entry_addr("pmd", table, addr)

    def pte_alloc(self: Kernel, mm: MM, pmd_pa: int, addr: int) -> s.KernelGen:
        """__pte_alloc() + pmd_install() (v6.6-v6.14): give an empty pmd a PTE table (racing
        allocators lose).
        """
        new = yield from self.pte_alloc_one(mm)
        ptl = yield from self.pmd_lock(mm, pmd_pa, addr)
        cur = yield from self.read_entry("pmd", pmd_pa)
        if self.arch.entry_none("pmd", cur):
            self.mm_inc_nr_ptes(mm)
            yield from self.set_entry("pmd", pmd_pa, self.arch.mk_table_entry("pmd", new),
                                      "pmd_populate")
            new = None
        yield s.SpinUnlock(ptl)
        if new is not None:
            yield from self.pte_free(mm, new)
