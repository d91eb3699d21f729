"""A secondary MMU: a device- or KVM-like shadow TLB over an mm's page tables.

Not Linux code but the subscriber Linux's mmu notifier contract is written
for (include/linux/mmu_notifier.h, v6.12; KVM's kvm_mmu_notifier_*, HMM's
mmu_interval notifiers): a per-mm cache of translations the device fills by
its own walk of the real page tables in guest memory and drops when told.

- The TLB caches leaf translations (page -> physical page); a page-walk cache
  (PWC) remembers, per PMD range, the PTE table a leaf was found in, so a
  later miss in that range reads the pte straight from the cached table, as
  an IOMMU's paging-structure cache does. A table is cached only along with
  a present leaf reached through it.
- `invalidate_range_start` drops every TLB and PWC entry in the range, and
  from then until the matching `invalidate_range_end` no fill may complete
  (KVM's mmu_invalidate_in_progress; HMM's mmu_interval_read_retry()).
  `invalidate_sem` models both: an invalidation holds it shared from start
  to end; a fill holds it exclusive while it walks and installs, so an
  invalidation also waits for a fill walk in flight (an IOMMU completes
  in-flight walks before it acknowledges an invalidation).
- A miss walks pgd..pmd..pte with plain reads (the device takes no Linux
  lock and no RCU read lock: only the invalidation protocol keeps it off
  freed tables). A none or non-present pte is faulted in as hmm_vma_fault()
  does, handle_mm_fault() under mmap_read_lock with the device's lock
  dropped, then the access retries.
- Every read the device makes through its caches is a `SecondaryLoad`
  naming the translation used and the step it was filled at; the
  secondary-mmu checker (emu/check/secondary.py) flags one whose page or
  cached table was freed after that fill: an invalidation that never came.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from arch.base import Access
from emu.kernel import steps as s
from emu.kernel.mmu_notifier import MmuNotifierRange
from emu.kernel.sync import RwSem

if TYPE_CHECKING:
    from emu.kernel import Kernel
    from emu.kernel.mm import MM

EFAULT = 14
EEXIST = 17
FAULT_RETRIES = 4  # a device access gives up (-EFAULT) after this many faults


@dataclass
class ShadowEntry:
    """One cached translation: the physical address and the step of the walk that found it."""

    pa: int
    filled: int
    table: int | None = None  # the PTE table it came through (None: a huge pmd)


@dataclass
class SecondaryMMU:
    """The device's state for one mm, and its mmu notifier hooks."""

    name: str = "secondary0"
    tlb: dict[int, ShadowEntry] = field(default_factory=dict)  # page va -> leaf
    pwc: dict[int, ShadowEntry] = field(default_factory=dict)  # pmd range va -> table
    invalidate_sem: RwSem = field(default_factory=lambda: RwSem("secondary invalidate"))
    invalidations: int = 0  # invalidate_range_start calls seen (for traces and tests)
    fills: int = 0
    reads: int = 0

    def drop(self, start: int, end: int, pmd_size: int) -> int:
        """Forget every translation and cached table covering [start, end)."""
        gone = [va for va in self.tlb if start <= va < end]
        for va in gone:
            del self.tlb[va]
        tables = [va for va in self.pwc if va < end and start < va + pmd_size]
        for va in tables:
            del self.pwc[va]
        return len(gone) + len(tables)

    # ---- mmu_notifier_ops -------------------------------------------------------------
    def invalidate_range_start(self, k: Kernel, rng: MmuNotifierRange) -> s.KernelGen:
        yield s.DownRead(self.invalidate_sem)
        name = self.name
        pmd_size = k.arch.pmd_size
        start, end = rng.start, rng.end

        def drop() -> int:
            dev = _device(k, rng.mm, name)
            dev.invalidations += 1
            return dev.drop(start, end, pmd_size)

        yield s.KernelAtomic(drop, f"{name} invalidate [{start:#x}, {end:#x}): drop translations")

    def invalidate_range_end(self, k: Kernel, rng: MmuNotifierRange) -> s.KernelGen:
        yield s.UpRead(self.invalidate_sem)


def _device(k: Kernel, mm: MM, name: str) -> SecondaryMMU:
    """The mm's device called `name`, looked up now (steps must not hold copied objects)."""
    return next(d for d in mm.mmu_notifiers if isinstance(d, SecondaryMMU) and d.name == name)


class SecondaryMmuMixin:
    def secondary_of(self: Kernel, mm: MM) -> SecondaryMMU | None:
        return next((d for d in mm.mmu_notifiers if isinstance(d, SecondaryMMU)), None)

    def secondary_attach(self: Kernel, mm: MM) -> s.KernelGen:
        """Attach a secondary MMU to mm (mmu_notifier_register); -EEXIST if one is."""
        if self.secondary_of(mm) is not None:
            return -EEXIST
        return (yield from self.mmu_notifier_register(mm, SecondaryMMU()))

    def secondary_read(self: Kernel, mm: MM, start: int, count: int, rounds: int) -> s.KernelGen:
        """The device agent: read `count` pages from start, `rounds` times, through the
        secondary MMU; returns the number of reads that got a translation."""
        dev = self.secondary_of(mm)
        if dev is None:
            return -EFAULT
        ps = self.arch.page_size
        done = 0
        for _ in range(rounds):
            for i in range(count):
                ok = yield from self.secondary_access(mm, dev, start + i * ps)
                done += ok
        return done

    def secondary_access(self: Kernel, mm: MM, dev: SecondaryMMU, va: int) -> s.KernelGen:
        """One device read of va: a TLB hit, or a fill by walk (faulting as needed)."""
        a = self.arch
        page = va - va % a.page_size
        for _ in range(FAULT_RETRIES):
            yield s.DownWrite(dev.invalidate_sem)
            hit = dev.tlb.get(page)
            if hit is None:
                hit = yield from self.secondary_fill(mm, dev, page)
            if hit is not None:
                yield s.SecondaryLoad(hit.pa + va % a.page_size, a.word_size, va, hit.filled,
                                      hit.table, f"{dev.name} read {va:#x}")
                yield s.UpWrite(dev.invalidate_sem)
                dev.reads += 1
                return 1
            yield s.UpWrite(dev.invalidate_sem)
            # hmm_vma_fault(): fault the page in, then walk again
            yield s.DownRead(mm.mmap_lock)
            vma = mm.find_vma(page)
            if vma is not None:
                yield from self._handle_mm_fault(mm, vma, page, Access.READ)
            yield s.UpRead(mm.mmap_lock)
            if vma is None:
                break
        yield s.Note(f"{dev.name}: no translation for {va:#x}")
        return 0

    def secondary_fill(self: Kernel, mm: MM, dev: SecondaryMMU, page: int) -> s.KernelGen:
        """The device's walk, with invalidate_sem held exclusive: a ShadowEntry installed, or
        None (nothing present: fault first)."""
        a = self.arch
        pmd_size = a.pmd_size
        base = page - page % pmd_size
        lv = a.level("pte")
        cached = dev.pwc.get(base)
        if cached is not None:
            ptep = self.entry_addr("pte", cached.pa, page)
            pte = yield s.SecondaryLoad(ptep, lv.entry_size, page, cached.filled, cached.pa,
                                        f"{dev.name} walk: pte from its cached table")
            table = cached.pa
        else:
            pmd_pa = yield from self.secondary_walk_to_pmd(mm, page)
            if pmd_pa is None:
                return None
            pmd = yield s.Load(pmd_pa, a.level("pmd").entry_size, f"{dev.name} walk: pmd")
            if a.entry_none("pmd", pmd) or not a.entry_present("pmd", pmd):
                return None
            if a.pmd_trans_huge(pmd) and not a.pmd_huge_valid(pmd):
                return None  # pmdp_invalidate()d: a split in progress; fault, and retry
            if a.pmd_trans_huge(pmd):
                entry = ShadowEntry(a.pmd_huge_pa(pmd) + page % pmd_size, self.step)
                dev.tlb[page] = entry
                dev.fills += 1
                return entry
            table = a.table_pa("pmd", pmd)
            pte = yield s.Load(self.entry_addr("pte", table, page), lv.entry_size,
                               f"{dev.name} walk: pte")
        if a.pte_none(pte) or not a.pte_present(pte):
            return None
        filled = self.step
        if cached is None:
            dev.pwc[base] = ShadowEntry(table, filled)
        entry = ShadowEntry(a.pte_pa(pte), filled, table)
        dev.tlb[page] = entry
        dev.fills += 1
        return entry

    def secondary_walk_to_pmd(self: Kernel, mm: MM, va: int) -> s.KernelGen:
        """The device's reads of the levels above the pmd: the pmd entry's address, or None."""
        a = self.arch
        table = mm.root
        for name in self.upper_levels():
            val = yield s.Load(self.entry_addr(name, table, va), a.level(name).entry_size,
                               f"secondary walk: {name}")
            if a.entry_none(name, val) or not a.entry_present(name, val):
                return None
            table = a.table_pa(name, val)
        return self.entry_addr("pmd", table, va)
