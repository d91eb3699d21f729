"""Anon THP: the fault maps a PMD folio with a deposited table; split and zap give it back.

Per arch, the deposit is Linux's: x86's pmd_huge_pte list writes nothing into
the table, s390/sparc64/powerpc-radix write a list_head into its first two
entries (cleared by the withdraw), powerpc hash a pointer in the pmd
table's second half. arm 2-level has no THP: MADV_HUGEPAGE and the split
call are -EINVAL and faults map ptes.
"""

from __future__ import annotations

import textwrap

import pytest

from emu import scenario
from emu.check import default_checkers
from emu.kernel import steps as s
from emu.kernel.audit import audit
from emu.kernel.huge_memory import deposited_tables
from emu.kernel.khugepaged import SCAN_PAGE_COUNT
from emu.machine import Machine
from emu.physmem import FrameState
from emu.sched import RandomStrategy

BASE = 0x1000_0000
ARCHES = [("x86-pae", ""), ("powerpc", ""), ("powerpc", 'mmu = "hash"'), ("s390", ""),
          ("sparc64", "")]
IDS = ["x86-pae", "powerpc-radix", "powerpc-hash", "s390", "sparc64"]


def machine(arch: str, opts: str = "", thp: bool = True, populate: int = 1,
            cpus: int = 1) -> Machine:
    text = f"""
    [machine]
    arch = "{arch}"
    cpus = {cpus}
    memory_mib = 96
    [arch_options]
    {opts}

    [[vma]]
    start = "{BASE}"
    size = "2 * pmd_size"
    kind = "anon"
    thp = {str(thp).lower()}
    populate = {populate}

    [[cpu]]
    program = "touch"
    args = [{BASE}, 1, 4096]
    """
    return Machine(scenario.parse(textwrap.dedent(text), "<test>"), checkers=default_checkers())


def pmd_of(m: Machine, addr: int) -> tuple[int, int]:
    pmd_pa = m.run_kernel_now(m.kernel.pmd_offset_alloc(m.mm, addr, alloc=False), "walk")
    return pmd_pa, m.kernel.read_entry_now(pmd_pa, m.arch.level("pmd").entry_size)


@pytest.mark.parametrize(("arch", "opts"), ARCHES, ids=IDS)
def test_fault_maps_a_huge_pmd_with_a_deposit(arch, opts):
    m = machine(arch, opts)
    a, k = m.arch, m.kernel
    _pmd_pa, val = pmd_of(m, BASE)
    assert a.pmd_trans_huge(val) and a.pmd_huge_valid(val)
    folio = k.folio_of(a.pmd_huge_pa(val))
    assert folio.kind == "anon" and folio.nr_pages == a.pmd_size // a.page_size
    deps = deposited_tables(m.mm)
    assert len(deps) == 1
    table = deps[0][1]
    assert m.frames.info(table).state is FrameState.PGTABLE
    w = a.level("pte").entry_size
    first = k.read_entry_now(table, w)
    if a.thp_deposit == "list":
        assert first == table  # INIT_LIST_HEAD: lh->next = lh
    elif a.thp_deposit == "slot":
        assert k.read_entry_now(a.thp_deposit_slot(_pmd_pa), 8) == table
    assert m.mm.rss["anon"] >= folio.nr_pages
    assert audit(k) == []


@pytest.mark.parametrize(("arch", "opts"), ARCHES, ids=IDS)
def test_split_withdraws_the_deposit_and_maps_every_page(arch, opts):
    m = machine(arch, opts)
    a, k = m.arch, m.kernel
    pmd_pa, val = pmd_of(m, BASE)
    folio = k.folio_of(a.pmd_huge_pa(val))
    table = deposited_tables(m.mm)[0][1]
    nr_ptes = m.mm.nr_ptes
    assert m.run_kernel_now(k.split_huge_pmd_address(m.mm, BASE + a.page_size), "split") == 0
    _pmd_pa, now = pmd_of(m, BASE)
    assert not a.pmd_trans_huge(now) and a.table_pa("pmd", now) == table
    assert deposited_tables(m.mm) == [] and m.mm.nr_ptes == nr_ptes
    lv = a.level("pte")
    for i in (0, 1, lv.entries - 1):
        pte = k.read_entry_now(table + i * lv.entry_size, lv.entry_size)
        assert a.pte_present(pte) and a.pte_pa(pte) == folio.pa + i * a.page_size
    assert folio.mapcount == folio.nr_pages == folio.refcount
    assert audit(k) == []
    # a second split finds no huge pmd
    assert m.run_kernel_now(k.split_huge_pmd_address(m.mm, BASE), "split") == -22


@pytest.mark.parametrize(("arch", "opts"), ARCHES, ids=IDS)
def test_zap_frees_the_deposit_and_the_folio(arch, opts):
    m = machine(arch, opts)
    a, k = m.arch, m.kernel
    _pmd_pa, val = pmd_of(m, BASE)
    folio_pa = a.pmd_huge_pa(val)
    table = deposited_tables(m.mm)[0][1]
    before = m.mm.nr_ptes
    assert m.run_kernel_now(k.do_munmap(m.mm, BASE, BASE + 2 * a.pmd_size), "munmap") == 0
    assert deposited_tables(m.mm) == [] and m.mm.nr_ptes == before - 1
    assert k.folio_of(folio_pa) is None
    fi = m.frames.info(table)
    # powerpc: a freed fragment stays in its page until every fragment goes
    assert fi.state is not FrameState.PGTABLE or "freed" in fi.subtables.values()
    assert audit(k) == []


@pytest.mark.parametrize(("arch", "opts"), ARCHES, ids=IDS)
def test_partial_dontneed_splits_then_zaps_the_ptes(arch, opts):
    m = machine(arch, opts)
    a, k = m.arch, m.kernel
    assert m.run_kernel_now(k.madvise_dontneed(m.mm, BASE, BASE + a.page_size), "dontneed") == 0
    _pmd_pa, now = pmd_of(m, BASE)
    assert not a.pmd_trans_huge(now)
    lv = a.level("pte")
    table = a.table_pa("pmd", now)
    assert a.pte_none(k.read_entry_now(table, lv.entry_size))
    assert a.pte_present(k.read_entry_now(table + lv.entry_size, lv.entry_size))
    assert audit(k) == []


def test_no_vm_hugepage_means_ptes():
    m = machine("x86-pae", thp=False)
    _pmd_pa, val = pmd_of(m, BASE)
    assert not m.arch.pmd_trans_huge(val) and deposited_tables(m.mm) == []


def test_arm_has_no_thp():
    """arm 2-level: no CONFIG_TRANSPARENT_HUGEPAGE, so the scenario's thp is refused and
    the calls are -EINVAL (madvise_behavior_valid)."""
    with pytest.raises(scenario.ScenarioError):
        machine("arm")
    text = textwrap.dedent(f"""
        [machine]
        arch = "arm"
        cpus = 1
        [[vma]]
        start = "{BASE}"
        size = "pmd_size"
        kind = "anon"
        [[cpu]]
        calls = [["madvise", "{BASE}", "pmd_size", 14], ["split_huge_pmd", "{BASE}"],
                 ["touch_write", "{BASE}", 1, 4096]]
        """)
    m = Machine(scenario.parse(text, "<test>"), checkers=default_checkers())
    m.run(RandomStrategy(0))
    notes = m.trace.lines()
    assert sum("-22" in n or "EINVAL" in n for n in notes) >= 2, notes
    _pmd_pa, val = pmd_of(m, BASE)
    assert not m.arch.pmd_trans_huge(val)


# ---- collapse_huge_page -------------------------------------------------------------------
def pte_mapped(arch: str, opts: str, pages: int = 3) -> Machine:
    return machine(arch, opts, thp=False, populate=pages)


@pytest.mark.parametrize(("arch", "opts"), ARCHES, ids=IDS)
def test_madv_collapse_copies_and_deposits_the_old_table(arch, opts):
    m = pte_mapped(arch, opts)
    a, k = m.arch, m.kernel
    _pmd_pa, val = pmd_of(m, BASE)
    old_table = a.table_pa("pmd", val)
    old_pages = []
    for i in range(3):
        pte = k.read_entry_now(old_table + i * a.level("pte").entry_size, a.level("pte").entry_size)
        old_pages.append(a.pte_pa(pte))
        m.mem.write(a.pte_pa(pte) + 8, bytes([0x40 + i]) * 4)
    nr_ptes = m.mm.nr_ptes
    assert m.run_kernel_now(k.madvise_collapse(m.mm, BASE, BASE + a.pmd_size), "collapse") == 0
    _pmd_pa, now = pmd_of(m, BASE)
    assert a.pmd_trans_huge(now)
    huge = k.folio_of(a.pmd_huge_pa(now))
    for i in range(3):
        assert m.mem.read(huge.pa + i * a.page_size + 8, 4) == bytes([0x40 + i]) * 4
        assert k.folio_of(old_pages[i]) is None  # the old pages were freed
    assert m.mem.read(huge.pa + 5 * a.page_size, 16) == bytes(16)  # a none pte: zeroes
    assert [t for _h, t in deposited_tables(m.mm)] == [old_table]
    assert m.mm.nr_ptes == nr_ptes
    assert m.mm.rss["anon"] >= huge.nr_pages
    assert audit(k) == []
    # and it goes away whole
    assert m.run_kernel_now(k.do_munmap(m.mm, BASE, BASE + 2 * a.pmd_size), "munmap") == 0
    assert deposited_tables(m.mm) == [] and audit(k) == []


@pytest.mark.parametrize(("arch", "opts"), ARCHES[:1] + ARCHES[3:4], ids=["x86-pae", "s390"])
def test_a_pinned_page_aborts_the_collapse_and_the_table_comes_back(arch, opts):
    """A GUP pin (refcount > mapcount) seen by __collapse_huge_page_isolate: SCAN_PAGE_COUNT,
    the old table pmd_populate()d back, nothing leaked."""
    m = pte_mapped(arch, opts)
    k = m.kernel
    _pmd_pa, before = pmd_of(m, BASE)
    pinned = m.run_kernel_now(k.gup_fast(m.mm, BASE, 1, False), "gup")
    assert len(pinned) == 1

    def go():  # past the scan's own refcount check: straight to collapse_huge_page
        yield s.DownRead(m.mm.mmap_lock)
        return (yield from k.collapse_huge_page(m.mm, BASE, False))

    assert m.run_kernel_now(go(), "collapse") == SCAN_PAGE_COUNT
    _pmd_pa, after = pmd_of(m, BASE)
    assert after == before
    k.unpin_user_pages(pinned)
    assert audit(k) == []


def test_khugepaged_collapses_only_vm_hugepage_vmas():
    m = pte_mapped("x86-pae", "")
    k = m.kernel
    assert m.run_kernel_now(k.khugepaged_scan_file(m.mm, BASE), "khugepaged") == -22
    assert m.run_kernel_now(k.madvise_hugepage(m.mm, BASE, BASE + 2 * m.arch.pmd_size, 14),
                            "madvise") == 0
    assert m.run_kernel_now(k.khugepaged_scan_file(m.mm, BASE), "khugepaged") == 0
    _pmd_pa, now = pmd_of(m, BASE)
    assert m.arch.pmd_trans_huge(now) and audit(k) == []


# ---- with the VMA operations: mremap, mprotect, MADV_HUGEPAGE of part of a VMA --------------
@pytest.mark.parametrize(("arch", "opts"), ARCHES, ids=IDS)
def test_mremap_moves_the_thp_and_its_deposit(arch, opts):
    """move_huge_pmd(): the deposit follows the pmd where pmd_move_must_withdraw() says
    (hash: always; elsewhere when the pmd locks differ); the moved THP zaps cleanly."""
    m = machine(arch, opts)
    a, k = m.arch, m.kernel
    m.mem.write(a.pmd_huge_pa(pmd_of(m, BASE)[1]) + 16, b"thp!")
    new = BASE + 64 * a.pmd_size  # another pmd table on every arch
    assert m.run_kernel_now(k.do_mremap(m.mm, BASE, a.pmd_size, a.pmd_size, 3, new),
                            "mremap") == new
    _pmd_pa, val = pmd_of(m, new)
    assert a.pmd_trans_huge(val) and m.mem.read(a.pmd_huge_pa(val) + 16, 4) == b"thp!"
    assert audit(k) == []
    assert m.run_kernel_now(k.do_munmap(m.mm, new, new + a.pmd_size), "munmap") == 0
    assert deposited_tables(m.mm) == [] and audit(k) == []


@pytest.mark.parametrize(("arch", "opts"), ARCHES[:1] + ARCHES[3:4], ids=["x86-pae", "s390"])
def test_mprotect_of_part_of_a_thp_splits_it_and_keeps_the_pages(arch, opts):
    m = machine(arch, opts)
    a, k = m.arch, m.kernel
    folio = k.folio_of(a.pmd_huge_pa(pmd_of(m, BASE)[1]))
    assert m.run_kernel_now(k.do_mprotect(m.mm, BASE, BASE + a.page_size,
                                          type(m.mm.vmas[0].prot)(write=False)), "mprotect") == 0
    _pmd_pa, now = pmd_of(m, BASE)
    assert not a.pmd_trans_huge(now)
    pte = k.read_entry_now(a.table_pa("pmd", now), a.level("pte").entry_size)
    assert a.pte_pa(pte) == folio.pa and not a.pte_write(pte)
    assert folio.mapcount == folio.nr_pages and audit(k) == []


def test_madv_hugepage_of_part_of_a_vma_splits_it():
    m = pte_mapped("x86-pae", "", pages=1)
    k, pmd = m.kernel, m.arch.pmd_size
    assert m.run_kernel_now(k.madvise_hugepage(m.mm, BASE + pmd, BASE + 2 * pmd, 14), "m") == 0
    low, high = m.mm.find_vma(BASE), m.mm.find_vma(BASE + pmd)
    assert low is not high and not low.hugepage and high.hugepage
    assert m.run_kernel_now(k.madvise_hugepage(m.mm, BASE + pmd, BASE + 2 * pmd, 15), "m") == 0
    assert m.mm.find_vma(BASE) is m.mm.find_vma(BASE + pmd)  # merged again


def test_powerpc_hash_deposits_with_a_file_thp_too():
    """arch_needs_pgtable_deposit(): a shmem THP mapped by do_set_pmd() gets a deposited
    table in the pmd slot on hash (none on radix); its zap frees it."""
    for opts, want in (('mmu = "hash"', 1), ("", 0)):
        text = textwrap.dedent(f"""
            [machine]
            arch = "powerpc"
            cpus = 1
            memory_mib = 96
            [arch_options]
            {opts}
            [[vma]]
            start = "{BASE}"
            size = "pmd_size"
            kind = "shmem"
            thp = true
            populate = 1
            [[cpu]]
            program = "touch"
            args = [{BASE}, 1, 4096]
            """)
        m = Machine(scenario.parse(text, "<test>"), checkers=default_checkers())
        a, k = m.arch, m.kernel
        assert a.pmd_trans_huge(pmd_of(m, BASE)[1])
        assert len(deposited_tables(m.mm)) == want and audit(k) == []
        assert m.run_kernel_now(k.do_munmap(m.mm, BASE, BASE + a.pmd_size), "munmap") == 0
        assert deposited_tables(m.mm) == [] and audit(k) == []


@pytest.mark.parametrize(("arch", "opts"), ARCHES, ids=IDS)
def test_mid_split_the_invalidated_pmd_stops_gup_fast_and_a_fault_waits(arch, opts):
    """Between pmdp_invalidate() and pmd_populate(): the pmd is still trans-huge to Linux
    but not valid for the hardware; GUP-fast (pmd_access_permitted) pins nothing and a
    fault waits for the split's pmd_lock in huge_pmd_set_accessed(), then finds the ptes."""
    from arch.base import Access
    from emu.testing import Interleaving

    m = machine(arch, opts, cpus=2)
    a, k = m.arch, m.kernel
    pmd_pa, _val = pmd_of(m, BASE)
    il = Interleaving(m)
    il.start(0, k.split_huge_pmd_address(m.mm, BASE))
    il.run_until(0, lambda op: isinstance(op, s.Store) and "set_ptes" in op.what)
    mid = k.read_entry_now(pmd_pa, a.level("pmd").entry_size)
    assert a.pmd_trans_huge(mid) and not a.pmd_huge_valid(mid) and a.entry_present("pmd", mid)
    gup = il.start(1, k.gup_fast(m.mm, BASE, 2, False), "gup")
    il.run_while_runnable(1)
    assert gup.done and gup.result == []
    fault = il.start(1, k.handle_mm_fault(BASE + a.page_size, Access.WRITE, m.mm), "fault")
    il.run_while_runnable(1)
    assert not fault.done  # spinning on the pmd lock the split holds
    il.finish()
    assert not a.pmd_trans_huge(pmd_of(m, BASE)[1]) and audit(k) == []
