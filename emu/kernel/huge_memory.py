"""Anonymous THP: a PMD-mapped anon folio's life, and the PTE table kept with it.

Models mm/huge_memory.c and the arches' deposit code as of v6.12 (each
routine names its version; none differs from v6.6 in what ptemu sees):

- `do_huge_pmd_anonymous_page()`: a fault on an empty pmd of a THP-eligible
  anon VMA (VM_HUGEPAGE: the scenario's `thp = true` or MADV_HUGEPAGE)
  allocates a PMD-sized folio and a PTE table, and under `pmd_lock` maps the
  folio with one huge pmd and deposits the table with it
  (`pgtable_trans_huge_deposit`), counting it in nr_ptes. The huge zero page
  is not modelled: read faults allocate too (sysfs use_zero_page=0).
- the deposit, per arch (`Arch.thp_deposit`): the generic pmd_huge_pte list
  in the pmd table's struct page (x86); a list_head written into the
  deposited table's first two entries and cleared by the withdraw (s390,
  sparc64, powerpc radix); a pointer in the pmd table's second half, the
  fragment zeroed by the withdraw (powerpc hash, hash__pgtable_trans_huge_*).
  ptemu writes physical addresses where Linux's list_head holds kernel
  virtual ones.
- `__split_huge_pmd()`: notifier, `pmd_lock`, `pmdp_invalidate()` (the huge
  pmd made non-present for the hardware atomically, so a racing A/D update
  is not lost, then flushed: no CPU may hold huge and small TLB entries for
  one address), withdraw, ptes filled through a stack pmd, `smp_wmb`,
  `pmd_populate()`.
- `zap_huge_pmd()`: `pmdp_huge_get_and_clear_full` under `pmd_lock`, then
  `zap_deposited_table()` (withdraw, `pte_free()` at once, mm_dec_nr_ptes)
  for anon, before the flush and the folio's release.

Arches without THP (arm 2-level: no CONFIG_TRANSPARENT_HUGEPAGE) never get
here: MADV_HUGEPAGE and the split call fail with -EINVAL, faults take the
PTE path.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from arch.base import Access
from emu.kernel import steps as s
from emu.kernel.core import KernelBug
from emu.kernel.fault import VM_FAULT_RETRY_ACCESS, Vmf
from emu.kernel.folio import Folio
from emu.kernel.mmu_notifier import MMU_NOTIFY_CLEAR, MmuNotifierRange
from emu.physmem import PhysMemError

if TYPE_CHECKING:
    from emu.kernel import Kernel
    from emu.kernel.mm import MM, VMA

VM_FAULT_FALLBACK = None  # do_huge_pmd_anonymous_page() could not: take the PTE path
MADV_HUGEPAGE = 14  # include/uapi/asm-generic/mman-common.h
MADV_NOHUGEPAGE = 15
DEPOSITS = "thp_deposits"  # mm->context key: pmd_huge_pte home -> deposit state


def deposited_tables(mm: MM) -> list[tuple[int, int]]:
    """(home, table) of every PTE table deposited in `mm`, for audits."""
    out = []
    for home, dep in mm.context.get(DEPOSITS, {}).items():
        out.extend((home, t) for t in dep["tables"])
    return out


class HugeMemoryMixin:
    def arch_needs_pgtable_deposit(self: Kernel) -> bool:
        """arch_needs_pgtable_deposit() (v6.12): powerpc hash deposits a table with file THPs
        too (its fragment holds the huge page's hash slots); everywhere else only anon."""
        return self.arch.thp_deposit == "slot"

    def thp_deposits_for(self: Kernel, folio: Folio | None) -> bool:
        """Does a huge pmd mapping `folio` have a deposited table (v6.12 zap_huge_pmd's test)?"""
        return folio is not None and (folio.kind == "anon" or self.arch_needs_pgtable_deposit())

    # ---- eligibility ----------------------------------------------------------------
    def thp_vma_allowable(self: Kernel, vma: VMA, addr: int) -> bool:
        """thp_vma_allowable_order(PMD_ORDER) && thp_vma_suitable_order() (v6.12) for an anon
        VMA under sysfs enabled=madvise: VM_HUGEPAGE set and the aligned range inside the VMA."""
        if vma.kind != "anon" or not getattr(vma, "hugepage", False):
            return False
        pmd = self.arch.pmd_size
        start = addr - addr % pmd
        return self.arch.supports_huge_pmd() and vma.start <= start and start + pmd <= vma.end

    def madvise_hugepage(self: Kernel, mm: MM, start: int, end: int, advice: int) -> s.KernelGen:
        """madvise(MADV_HUGEPAGE / MADV_NOHUGEPAGE) (v6.12 madvise_vma_behavior ->
        hugepage_madvise, under mmap_write_lock): VM_HUGEPAGE set or cleared on [start, end),
        the VMAs split at its ends and merged again where they may (madvise_update_vma);
        -ENOMEM if part of the range is unmapped (what comes before it is changed)."""
        yield s.DownWrite(mm.mmap_lock)
        want = advice == MADV_HUGEPAGE
        ret = 0
        addr = start
        while addr < end:
            vma = mm.find_vma(addr)
            if vma is None:
                ret = -12
                break
            hi = min(end, vma.end)
            if vma.hugepage != want:
                (vma,) = yield from self.split_range(mm, addr, hi)
                vma.hugepage = want
                yield from self.vma_merge_neighbours(mm, vma)
            addr = hi
        yield s.UpWrite(mm.mmap_lock)
        return ret

    # ---- faults -----------------------------------------------------------------------
    def create_huge_pmd(self: Kernel, vmf: Vmf) -> s.KernelGen:
        """create_huge_pmd() (v6.12): the anon THP fault, or VM_FAULT_FALLBACK."""
        if not self.thp_vma_allowable(vmf.vma, vmf.addr):
            return VM_FAULT_FALLBACK
        return (yield from self.do_huge_pmd_anonymous_page(vmf))

    def do_huge_pmd_anonymous_page(self: Kernel, vmf: Vmf) -> s.KernelGen:
        """do_huge_pmd_anonymous_page() + __do_huge_pmd_anonymous_page() (v6.12): a PMD folio,
        a PTE table to deposit, then under pmd_lock: pmd still none? map, deposit, count."""
        vma, a = vmf.vma, self.arch
        mm = vma.mm
        haddr = vmf.addr - vmf.addr % a.pmd_size
        if vma.uffd_missing:
            return VM_FAULT_FALLBACK  # handle_userfault() is the PTE path's in ptemu
        vma.anon_vma = True  # vmf_anon_prepare()
        nr = a.pmd_size // a.page_size
        try:
            folio = self.new_folio("anon", nr, f"anon THP for {haddr:#x}")  # folio_zero_user
        except PhysMemError:
            yield s.Note("do_huge_pmd_anonymous_page: no PMD-sized folio: THP_FAULT_FALLBACK")
            return VM_FAULT_FALLBACK
        pgtable = yield from self.pte_alloc_one(mm)
        ptl = yield from self.pmd_lock(mm, vmf.pmd_pa, haddr)
        cur = yield from self.read_entry("pmd", vmf.pmd_pa, "do_huge_pmd_anonymous_page")
        if not a.entry_none("pmd", cur):
            yield s.SpinUnlock(ptl)
            yield from self.pte_free(mm, pgtable)
            self.free_folio(folio, "unused: the pmd was populated under the THP fault")
            return VM_FAULT_RETRY_ACCESS
        entry = a.pmd_mkdirty(a.mk_pmd_huge(folio.pa, vma.prot))
        folio.map()  # folio_add_new_anon_rmap(RMAP_EXCLUSIVE): the allocation's ref
        folio.anon_exclusive = True  # RMAP_EXCLUSIVE: PageAnonExclusive, as fork and GUP read it
        yield from self.pgtable_trans_huge_deposit(mm, vmf.pmd_pa, haddr, pgtable)
        yield from self.set_entry("pmd", vmf.pmd_pa, entry, "set_pmd_at (anon THP)")
        mm.rss["anon"] += nr
        self.mm_inc_nr_ptes(mm)
        yield s.SpinUnlock(ptl)
        return VM_FAULT_RETRY_ACCESS

    def huge_pmd_set_accessed(self: Kernel, vmf: Vmf, orig_pmd: int) -> s.KernelGen:
        """huge_pmd_set_accessed() (v6.12): pmd_lock, pmd_same, touch; a fault on a pmd being
        split waits here for the split's pmd_lock, then retries the access."""
        mm = vmf.vma.mm
        ptl = yield from self.pmd_lock(mm, vmf.pmd_pa, vmf.addr)
        cur = yield from self.read_entry("pmd", vmf.pmd_pa, "huge_pmd_set_accessed")
        if cur == orig_pmd and self.arch.pmd_huge_valid(cur) and vmf.access == Access.WRITE \
                and not self.arch.pmd_huge_write(cur):
            yield s.SpinUnlock(ptl)
            return -14  # wp_huge_pmd(): no COW of a THP in this model: SIGSEGV
        yield s.SpinUnlock(ptl)
        return VM_FAULT_RETRY_ACCESS

    # ---- the deposit ------------------------------------------------------------------
    def thp_deposit_home(self: Kernel, mm: MM, pmd_pa: int, addr: int) -> int:
        """Where pmd_huge_pte() (v6.12) lives: per pmd (powerpc hash's slot), the pmd table's
        ptdesc (split pmd ptlocks), else the mm (-1)."""
        if self.arch.thp_deposit == "slot":
            return pmd_pa
        if not self.arch.split_pmd_ptlocks:
            return -1
        return self.pmd_lockptr(mm, pmd_pa, addr).page

    def pgtable_trans_huge_deposit(self: Kernel, mm: MM, pmd_pa: int, addr: int,
                                   pgtable: int) -> s.KernelGen:
        """pgtable_trans_huge_deposit() (v6.12; caller holds pmd_lock): keep `pgtable` with
        the huge pmd, the arch's way (see the module docstring)."""
        deps = mm.context.setdefault(DEPOSITS, {})
        home = self.thp_deposit_home(mm, pmd_pa, addr)
        dep = deps.setdefault(home, {"head": None, "tables": []})
        style = self.arch.thp_deposit
        w = self.entry_size("pte")
        if style == "list":
            head = dep["head"]
            if head is None:  # INIT_LIST_HEAD(lh)
                yield s.Store(pgtable, w, pgtable, "pgtable_trans_huge_deposit: lh->next")
                yield s.Store(pgtable + w, w, pgtable, "pgtable_trans_huge_deposit: lh->prev")
            else:  # list_add(lh, pmd_huge_pte)
                nxt = yield s.Load(head, w, "pgtable_trans_huge_deposit: head->next")
                yield s.Store(nxt + w, w, pgtable, "pgtable_trans_huge_deposit: next->prev")
                yield s.Store(pgtable, w, nxt, "pgtable_trans_huge_deposit: lh->next")
                yield s.Store(pgtable + w, w, head, "pgtable_trans_huge_deposit: lh->prev")
                yield s.Store(head, w, pgtable, "pgtable_trans_huge_deposit: head->next")
        elif style == "slot":
            if dep["tables"]:
                raise KernelBug(f"pgtable_trans_huge_deposit: the slot of pmd {pmd_pa:#x} already "
                                f"holds {dep['tables'][0]:#x}")
            yield s.Store(self.arch.thp_deposit_slot(pmd_pa), self.arch.word_size, pgtable,
                          "hash__pgtable_trans_huge_deposit: *pgtable_slot = pgtable")
        dep["head"] = pgtable  # pmd_huge_pte(mm, pmdp) = pgtable
        dep["tables"].append(pgtable)

    def pgtable_trans_huge_withdraw(self: Kernel, mm: MM, pmd_pa: int, addr: int) -> s.KernelGen:
        """pgtable_trans_huge_withdraw() (v6.12; caller holds pmd_lock): take a deposited table
        back, emptied as the arch leaves it."""
        a = self.arch
        deps = mm.context.get(DEPOSITS, {})
        home = self.thp_deposit_home(mm, pmd_pa, addr)
        dep = deps.get(home)
        if dep is None or dep["head"] is None:
            raise KernelBug(f"pgtable_trans_huge_withdraw: nothing deposited for pmd {pmd_pa:#x}")
        style = a.thp_deposit
        w = self.entry_size("pte")
        if style == "slot":
            slot = a.thp_deposit_slot(pmd_pa)
            pgtable = yield s.Load(slot, a.word_size, "hash__pgtable_trans_huge_withdraw: slot")
            yield s.Store(slot, a.word_size, 0, "hash__pgtable_trans_huge_withdraw: slot = NULL")
            # "We store HPTE information in the deposited PTE fragment": zero it
            yield s.Store(pgtable, a.table_alloc_bytes("pte"), 0,
                          "hash__pgtable_trans_huge_withdraw: memset(pgtable, 0)")
            dep["head"] = None
        else:
            pgtable = dep["head"]
            if style == "list":
                nxt = yield s.Load(pgtable, w, "pgtable_trans_huge_withdraw: lh->next")
                if nxt == pgtable:  # list_empty(lh)
                    dep["head"] = None
                else:  # list_del(lh)
                    prev = yield s.Load(pgtable + w, w, "pgtable_trans_huge_withdraw: lh->prev")
                    yield s.Store(prev, w, nxt, "list_del: prev->next")
                    yield s.Store(nxt + w, w, prev, "list_del: next->prev")
                    dep["head"] = nxt
                empty = a.empty_entry("pte")
                yield s.Store(pgtable, w, empty, "pgtable_trans_huge_withdraw: pte 0 cleared")
                yield s.Store(pgtable + w, w, empty, "pgtable_trans_huge_withdraw: pte 1 cleared")
            else:
                rest = [t for t in dep["tables"] if t != pgtable]
                dep["head"] = rest[-1] if rest else None
        if pgtable not in dep["tables"]:
            raise KernelBug(f"pgtable_trans_huge_withdraw: {pgtable:#x} was never deposited")
        dep["tables"].remove(pgtable)
        if not dep["tables"]:
            del deps[home]
        return pgtable

    def zap_deposited_table(self: Kernel, mm: MM, pmd_pa: int, addr: int) -> s.KernelGen:
        """zap_deposited_table() (v6.12): withdraw, pte_free() now (no RCU: GUP-fast cannot be
        in a deposited table, see collapse_huge_page's sync), mm_dec_nr_ptes."""
        pgtable = yield from self.pgtable_trans_huge_withdraw(mm, pmd_pa, addr)
        yield from self.pte_free(mm, pgtable)
        self.mm_dec_nr_ptes(mm)

    def pmd_move_must_withdraw(self: Kernel, mm: MM, old_pmd: int, old_addr: int,
                               new_pmd: int, new_addr: int) -> bool:
        """pmd_move_must_withdraw() (v6.12) for an anon THP: the deposit lives where the pmd
        does (a slot beside it: always) or with its pmd lock (when the locks differ)."""
        if self.arch.thp_deposit == "slot":
            return True  # book3s64 hash: "we need to withdraw and deposit always"
        return self.thp_deposit_home(mm, old_pmd, old_addr) != \
            self.thp_deposit_home(mm, new_pmd, new_addr)

    def move_huge_pmd_deposit(self: Kernel, mm: MM, pmdval: int, old_pmd: int, old_addr: int,
                              new_pmd: int, new_addr: int) -> s.KernelGen:
        """move_huge_pmd()'s `if (pmd_move_must_withdraw()) { withdraw(old); deposit(new); }`
        (v6.12; both pmd locks held). Forgetting it on powerpc hash was b3084f4db3ae
        ("powerpc/thp: Fix crash on mremap")."""
        folio = self.folio_of(self.arch.pmd_huge_pa(pmdval))
        if not self.thp_deposits_for(folio):
            return
        if self.pmd_move_must_withdraw(mm, old_pmd, old_addr, new_pmd, new_addr):
            pgtable = yield from self.pgtable_trans_huge_withdraw(mm, old_pmd, old_addr)
            yield from self.pgtable_trans_huge_deposit(mm, new_pmd, new_addr, pgtable)

    # ---- zap ----------------------------------------------------------------------------
    def zap_huge_pmd(self: Kernel, mm: MM, vma: VMA, pmd_pa: int, addr: int,
                     tlb: list[Folio] | None = None) -> s.KernelGen:
        """zap_huge_pmd() (v6.12): pmdp_huge_get_and_clear_full under pmd_lock; an anon THP's
        deposit (a file THP's too on powerpc hash, arch_needs_pgtable_deposit) goes by
        zap_deposited_table(); flush, then put (into `tlb`, unflushed, if the caller
        gathers)."""
        a = self.arch
        ptl = yield from self.pmd_lock(mm, pmd_pa, addr)
        cur = yield from self.read_entry("pmd", pmd_pa)
        folio = None
        if a.pmd_trans_huge(cur):
            cur = yield from self.get_and_clear_entry("pmd", pmd_pa,
                                                      "zap_huge_pmd: pmdp_huge_get_and_clear", cur)
            folio = self.folio_of(a.pmd_huge_pa(cur))
            if self.thp_deposits_for(folio):
                yield from self.zap_anon_deposit(mm, pmd_pa, addr)
        elif self.is_pmd_migration_entry(cur):
            # a PMD migration entry (emu/kernel/swap.py): its pages stop counting in rss
            yield from self.get_and_clear_entry("pmd", pmd_pa, "zap_huge_pmd: migration entry", cur)
            yield from self.zap_nonpresent_pmd(mm, cur)
        yield s.SpinUnlock(ptl)
        if folio is not None:
            folio.unmap()
            mm.rss[self.mm_counter_kind(folio)] -= folio.nr_pages
            if tlb is not None:
                tlb.append(folio)
                return
            start = addr - addr % a.pmd_size
            yield s.TlbFlushRange(start, start + a.pmd_size, mm)
            self.put_folio(folio)

    def zap_anon_deposit(self: Kernel, mm: MM, pmd_pa: int, addr: int) -> s.KernelGen:
        """zap_huge_pmd()'s zap_deposited_table() of an anon THP (or, where
        arch_needs_pgtable_deposit(), a file one) (v6.12)."""
        yield from self.zap_deposited_table(mm, pmd_pa, addr)

    # ---- split -------------------------------------------------------------------------
    def pmdp_invalidate(self: Kernel, mm: MM, haddr: int, pmd_pa: int) -> s.KernelGen:
        """pmdp_invalidate() (v6.12; 4.16's "mm: Do not lose dirty and access bits in
        pmdp_invalidate()"): pmdp_establish() the invalid pmd atomically, then flush the
        range; returns the old pmd with every A/D bit the hardware set."""
        cur = yield from self.read_entry("pmd", pmd_pa, "pmdp_invalidate: *pmdp")
        old = yield from self.entry_primitive("pmdp_invalidate", pmd_pa,
                                              self.arch.pmd_mkinvalid(cur),
                                              "pmdp_invalidate: pmdp_establish")
        yield s.TlbFlushRange(haddr, haddr + self.arch.pmd_size, mm)
        return old

    def split_huge_pmd_address(self: Kernel, mm: MM, addr: int) -> s.KernelGen:
        """split_huge_pmd_address() under the caller's mmap_lock (v6.12): find the pmd, split
        it if it maps a THP. Returns 0, or -EINVAL if there is no huge pmd there."""
        pmd_pa = yield from self.pmd_offset_alloc(mm, addr, alloc=False)
        if pmd_pa is None:
            return -22
        vma = mm.find_vma(addr)
        if vma is None:
            return -22
        done = yield from self.split_huge_pmd(vma, pmd_pa, addr)
        return 0 if done else -22

    def split_huge_pmd(self: Kernel, vma: VMA, pmd_pa: int, addr: int) -> s.KernelGen:
        """__split_huge_pmd() (v6.12): notifier start, pmd_lock, split if still trans-huge,
        unlock, notifier end. True if it split."""
        a = self.arch
        mm = vma.mm
        haddr = addr - addr % a.pmd_size
        rng = MmuNotifierRange(mm, haddr, haddr + a.pmd_size, MMU_NOTIFY_CLEAR, "__split_huge_pmd")
        yield from self.mmu_notifier_invalidate_range_start(rng)
        ptl = yield from self.pmd_lock(mm, pmd_pa, haddr)
        cur = yield from self.read_entry("pmd", pmd_pa, "__split_huge_pmd")
        done = a.pmd_trans_huge(cur)
        if done:
            yield from self.split_huge_pmd_locked(vma, pmd_pa, haddr)
        yield s.SpinUnlock(ptl)
        yield from self.mmu_notifier_invalidate_range_end(rng)
        return done

    def split_huge_pmd_locked(self: Kernel, vma: VMA, pmd_pa: int, haddr: int) -> s.KernelGen:
        """__split_huge_pmd_locked() (v6.12): a file THP is just cleared (it refaults); an anon
        one is invalidated, its table withdrawn, filled with one pte per page through a stack
        pmd, and installed after smp_wmb() with pmd_populate()."""
        a = self.arch
        mm = vma.mm
        folio = self.folio_of(a.pmd_huge_pa((yield from self.read_entry("pmd", pmd_pa))))
        if folio is None or folio.kind != "anon":
            old = yield from self.get_and_clear_entry("pmd", pmd_pa,
                                                      "__split_huge_pmd: pmdp_huge_clear_flush")
            yield s.TlbFlushRange(haddr, haddr + a.pmd_size, mm)
            if self.thp_deposits_for(folio):
                yield from self.zap_deposited_table(mm, pmd_pa, haddr)
            if folio is not None:
                folio.unmap()
                mm.rss[self.mm_counter_kind(folio)] -= folio.nr_pages
                self.put_folio(folio)
            return old
        old_pmd = yield from self.split_invalidate(mm, haddr, pmd_pa)
        # "Withdraw the table only after we mark the pmd entry invalid.
        # This's critical for some architectures (Power)."
        pgtable = yield from self.pgtable_trans_huge_withdraw(mm, pmd_pa, haddr)
        nr = a.pmd_size // a.page_size
        write = a.pmd_huge_write(old_pmd)
        dirty = a.pmd_dirty(old_pmd)
        folio.get(nr - 1)  # folio_ref_add(HPAGE_PMD_NR - 1): one per pte, minus the pmd's
        prot = vma.prot if write else replace(vma.prot, write=False)
        ptes = []
        for i in range(nr):
            pte = a.pte_mkyoung(a.mk_pte(folio.pa + i * a.page_size, prot))
            ptes.append(a.pte_mkdirty(pte) if dirty else pte)
        # folio_add_anon_rmap_ptes(nr) then folio_remove_rmap_pmd(): mapcount nr
        folio.mapcount += nr - 1
        yield from self.split_install(mm, pmd_pa, pgtable, ptes)
        return old_pmd

    def split_invalidate(self: Kernel, mm: MM, haddr: int, pmd_pa: int) -> s.KernelGen:
        """__split_huge_pmd_locked()'s `old_pmd = pmdp_invalidate(vma, haddr, pmd)` (v6.12)."""
        return (yield from self.pmdp_invalidate(mm, haddr, pmd_pa))

    def split_install(self: Kernel, mm: MM, pmd_pa: int, pgtable: int,
                      ptes: list[int]) -> s.KernelGen:
        """The ptes go into the withdrawn table through the stack pmd (`pmd_populate(mm,
        &_pmd, pgtable)`, set_ptes), then `smp_wmb(); /* make pte visible before pmd */
        pmd_populate(mm, pmd, pgtable)` (v6.12): no walker sees the table half filled.
        nr_ptes is unchanged: the deposit was counted."""
        yield from self.split_set_ptes(pgtable, ptes)
        yield from self.split_populate(mm, pmd_pa, pgtable)

    def split_set_ptes(self: Kernel, pgtable: int, ptes: list[int]) -> s.KernelGen:
        """__split_huge_pmd_locked()'s set_ptes() of every page (v6.12)."""
        w = self.entry_size("pte")
        for i, pte in enumerate(ptes):
            yield from self.set_entry("pte", pgtable + i * w, pte, "__split_huge_pmd_locked: set_ptes")

    def split_populate(self: Kernel, mm: MM, pmd_pa: int, pgtable: int) -> s.KernelGen:
        """`pmd_populate(mm, pmd, pgtable)` of the split (v6.12): the table goes live."""
        yield from self.set_entry("pmd", pmd_pa, self.arch.mk_table_entry("pmd", pgtable),
                                  "__split_huge_pmd_locked: pmd_populate")
