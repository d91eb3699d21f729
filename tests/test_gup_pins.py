"""GUP-fast's folio grab is a step of its own, and what a pin does and does not keep alive.

Hand-forced interleavings on variant-free machines: another CPU runs
between GUP-fast's lockless pte (or huge pmd) read and its
try_grab_folio_fast(), and the recheck after the grab must notice; a pin
held across a collapse makes the collapse back off (SCAN_PAGE_COUNT) with
nothing leaked; a pin keeps its page, never the page table, alive.
"""

from __future__ import annotations

import textwrap

import pytest

from arch.base import Access
from emu import scenario
from emu.check import default_checkers
from emu.kernel import steps as s
from emu.kernel.audit import audit
from emu.kernel.khugepaged import SCAN_PAGE_COUNT, SCAN_PTE_MAPPED_HUGEPAGE
from emu.machine import Machine
from emu.physmem import FrameState
from emu.testing import Interleaving, zap_and_retract

BASE = 0x1000_0000
ARCHES = ["x86-pae", "powerpc", "s390", "sparc64"]


def machine(arch: str, kind: str = "shmem", thp: bool = False, populate: bool | int = True) -> Machine:
    text = f"""
    [machine]
    arch = "{arch}"
    cpus = 2
    memory_mib = 64

    [[vma]]
    start = {BASE}
    size = "pmd_size"
    kind = "{kind}"
    populate = {str(populate).lower()}
    thp = {str(thp).lower()}

    [[cpu]]
    program = "touch"
    args = [{BASE}, 1, 4096]

    [[cpu]]
    program = "touch"
    args = [{BASE}, 1, 4096]
    """
    return Machine(scenario.parse(textwrap.dedent(text), "<test>"), checkers=default_checkers())


def about_to_grab(op) -> bool:  # noqa: ANN001
    return isinstance(op, s.KernelAtomic) and op.what.startswith("try_grab_folio_fast")


def grab_races(m: Machine, writer) -> Interleaving:  # noqa: ANN001
    """GUP-fast has read the entry and is about to grab; `writer` runs to the end first."""
    k = m.kernel
    il = Interleaving(m)
    il.start(0, k.gup_fast(m.mm, BASE, 1, False))
    il.run_until(0, about_to_grab)
    il.start(1, writer)
    # the writer's entry change comes first; where its TLB flush is an IPI it
    # then waits for GUP-fast's IRQs-off walk to end
    il.run_while_runnable(1)
    il.finish()
    return il


@pytest.mark.parametrize("arch", ARCHES)
def test_grab_after_the_page_was_zapped_and_freed_fails(arch):
    """anon: zap frees the page between GUP-fast's pte read and its grab; the
    grab finds no folio with a reference left and GUP-fast stops, pinning nothing."""
    m = machine(arch, kind="anon", populate=1)
    vma = m.mm.find_vma(BASE)
    page = m.run_kernel_now(m.kernel.gup_fast(m.mm, BASE, 1, False), "gup")[0][0]
    m.kernel.put_folio(m.kernel.folio_of(page))  # (only to learn the page: unpinned again)
    il = grab_races(m, m.kernel.zap_page_range(m.mm, vma, BASE, BASE + m.arch.page_size))
    assert il.tasks[0].result == []
    assert m.frames.info(page).state == FrameState.FREE
    assert audit(m.kernel) == []


@pytest.mark.parametrize("arch", ARCHES)
def test_grab_after_the_pte_was_zapped_is_dropped_by_the_recheck(arch):
    """shmem: the page survives the zap (the page cache holds it), so the grab
    succeeds; the pte recheck sees the entry gone and gives the reference back."""
    m = machine(arch, populate=1)
    vma = m.mm.find_vma(BASE)
    folio = vma.file.lookup(0)
    refs = folio.refcount
    il = grab_races(m, m.kernel.zap_page_range(m.mm, vma, BASE, BASE + m.arch.page_size))
    assert il.tasks[0].result == []
    assert folio.refcount == refs - 1, "only the mapping's reference went, GUP's was returned"
    assert audit(m.kernel) == []


@pytest.mark.parametrize("arch", ARCHES)
def test_grab_of_a_huge_pmd_zapped_meanwhile_is_dropped_by_the_pmd_recheck(arch):
    m = machine(arch, thp=True, populate=1)
    vma = m.mm.find_vma(BASE)
    folio = vma.file.lookup(0)
    refs = folio.refcount
    il = grab_races(m, m.kernel.zap_page_range(m.mm, vma, BASE, BASE + m.arch.pmd_size))
    assert il.tasks[0].result == []
    assert folio.refcount == refs - 1 and folio.mapcount == 0
    assert audit(m.kernel) == []


@pytest.mark.parametrize("arch", ARCHES)
def test_a_gup_pin_held_across_madvise_collapse_makes_it_back_off(arch):
    """A real GUP-fast pin on a small shmem page: collapse_file() finds the
    reference it does not own after unmapping the page and fails with
    SCAN_PAGE_COUNT (MADV_COLLAPSE: -EAGAIN); after the unpin nothing leaks
    and a second collapse succeeds."""
    m = machine(arch, populate=4)
    k = m.kernel
    cache = m.mm.find_vma(BASE).file
    pinned = m.run_kernel_now(k.gup_fast(m.mm, BASE + m.arch.page_size, 1, False), "gup")
    assert len(pinned) == 1 and pinned[0][1] is cache.lookup(1)
    free_before = m.frames.free_count()
    il = Interleaving(m)
    il.start(1, k.collapse_file(cache, 0))
    il.finish()
    assert il.tasks[1].result == SCAN_PAGE_COUNT
    assert m.frames.free_count() == free_before, "the rollback frees the new folio"
    assert all(not f.large for f in cache.folios()) and cache.lookup(1) is pinned[0][1]
    il.start(0, k.madvise_collapse(m.mm, BASE, BASE + m.arch.pmd_size))
    il.finish()
    assert il.tasks[0].result == -11  # -EAGAIN, as Linux's madvise_collapse_errno(SCAN_PAGE_COUNT)
    k.unpin_user_pages(pinned)
    il.start(1, k.collapse_file(cache, 0))
    il.finish()
    assert il.tasks[1].result == SCAN_PTE_MAPPED_HUGEPAGE and cache.lookup(0).large
    il.pass_grace_period()
    assert audit(k) == []


@pytest.mark.parametrize("arch", ["x86-pae", "s390"])
def test_a_pin_keeps_the_page_but_not_the_table(arch):
    """GUP-fast pins a shmem page; the file's mappings are zapped, its table
    retracted and the page truncated away. The table is freed a grace period
    later despite the pin; the page, held by the pin alone, lives until the unpin."""
    m = machine(arch, populate=1)
    k = m.kernel
    cache = m.mm.find_vma(BASE).file
    pmd_pa = m.run_kernel_now(k.pmd_offset_alloc(m.mm, BASE, alloc=False), "pmd")
    table = m.arch.table_pa("pmd", k.read_entry_now(pmd_pa, m.arch.level("pmd").entry_size))
    pinned = m.run_kernel_now(k.gup_fast(m.mm, BASE, 1, False), "gup")
    (page, folio), = pinned
    il = Interleaving(m)
    il.start(0, zap_and_retract(k, cache))
    il.finish()
    il.start(1, k.truncate(cache, 0))
    il.finish()
    il.pass_grace_period()
    assert m.frames.info(table).state == FrameState.FREE, "the pin does not keep the table"
    assert m.frames.info(page).state == FrameState.DATA and folio.refcount == 1
    k.unpin_user_pages(pinned)
    assert m.frames.info(page).state == FrameState.FREE
    assert audit(k) == []


def test_gup_reads_then_grabs_then_rechecks_as_separate_steps():
    """The order of GUP-fast's steps for one pte: read, grab, recheck pmd, recheck pte."""
    m = machine("x86-pae", populate=1)
    il = Interleaving(m)
    il.start(0, m.kernel.gup_fast(m.mm, BASE, 1, False))
    il.finish()
    text = [line.split(" ", 1)[1] for line in il.log if line.split()[1] == "cpu0"]
    grab = next(i for i, t in enumerate(text) if "try_grab_folio_fast" in t)
    assert "ptep_get_lockless" in " ".join(text[:grab])
    after = " ".join(text[grab + 1:])
    assert "pmdp_get_lockless" in after and "gup_fast recheck pte" in after


def _pmd_entry(m: Machine) -> tuple[int, int]:
    k = m.kernel
    pmd_pa = m.run_kernel_now(k.pmd_offset_alloc(m.mm, BASE, alloc=False), "pmd")
    return pmd_pa, k.read_entry_now(pmd_pa, m.arch.level("pmd").entry_size)


def test_gup_fast_stops_at_a_pmd_table_entry_that_is_bad():
    """x86-PAE: a present pmd whose flags are not _KERNPG_TABLE's (here RW clear)
    is pmd_bad(): no table to walk, nothing pinned, no reference taken."""
    m = machine("x86-pae", kind="anon", populate=4)
    assert len(m.run_kernel_now(m.kernel.gup_fast(m.mm, BASE, 4, False), "gup")) == 4
    m = machine("x86-pae", kind="anon", populate=4)
    a = m.arch
    pmd_pa, pmdv = _pmd_entry(m)
    bad = pmdv & ~2  # _PAGE_RW
    assert a.entry_present("pmd", bad) and a.entry_bad("pmd", bad)
    m.mem.write_int(pmd_pa, 8, bad, a.byteorder)
    folio = m.kernel.folio_of(a.translate_functional(
        m.mem.snapshot(), a.hw_root(m.mm.root), BASE, Access.READ).pa(BASE))
    refs = folio.refcount
    assert m.run_kernel_now(m.kernel.gup_fast(m.mm, BASE, 4, False), "gup") == []
    assert folio.refcount == refs


def test_gup_fast_stops_at_a_huge_pmd_that_a_split_made_not_present():
    """x86-PAE: pmdp_invalidate() clears _PAGE_PRESENT of a huge pmd and keeps
    _PAGE_PSE; GUP-fast must not take it for a huge page to pin."""
    m = machine("x86-pae", thp=True)
    a = m.arch
    pmd_pa, pmdv = _pmd_entry(m)
    assert a.pmd_trans_huge(pmdv)
    assert len(m.run_kernel_now(m.kernel.gup_fast(m.mm, BASE, 2, False), "gup")) == 2
    m = machine("x86-pae", thp=True)
    pmd_pa, pmdv = _pmd_entry(m)
    folio = m.kernel.folio_of(a.pmd_huge_pa(pmdv))
    refs = folio.refcount
    m.mem.write_int(pmd_pa, 8, pmdv & ~1, a.byteorder)  # _PAGE_PRESENT clear, PSE kept
    assert m.run_kernel_now(m.kernel.gup_fast(m.mm, BASE, 2, False), "gup") == []
    assert folio.refcount == refs


def test_a_folio_whose_count_reached_zero_cannot_be_grabbed():
    """try_grab_folio_fast(): folio_ref_try_add() fails on a folio being freed."""
    m = machine("x86-pae", kind="anon", populate=1)
    page = m.run_kernel_now(m.kernel.gup_fast(m.mm, BASE, 1, False), "gup")[0][0]
    folio = m.kernel.folio_of(page)
    held = folio.refcount
    folio.refcount = 0  # the last put happened; the free has not unlinked it yet
    assert m.run_kernel_now(m.kernel.try_grab_folio_fast(page, 1), "grab") is None
    assert folio.refcount == 0
    folio.refcount = held
    assert m.run_kernel_now(m.kernel.try_grab_folio_fast(page, 2), "grab") is folio
    assert folio.refcount == held + 2


def test_gup_fast_stops_at_a_pmd_that_is_not_present():
    """powerpc radix: a pmd with _PAGE_PRESENT (bit 63) clear is neither none
    nor bad to the arch, and still no table GUP-fast may walk (!pmd_present)."""
    m = machine("powerpc", kind="anon", populate=4)
    a = m.arch
    pmd_pa, pmdv = _pmd_entry(m)
    gone = pmdv & ~(1 << 63)
    assert not a.entry_none("pmd", gone) and not a.entry_present("pmd", gone)
    assert not a.entry_bad("pmd", gone)
    folio = m.kernel.folio_of(a.translate_functional(
        m.mem.snapshot(), a.hw_root(m.mm.root), BASE, Access.READ).pa(BASE))
    refs = folio.refcount
    m.mem.write_int(pmd_pa, 8, gone, a.byteorder)
    assert m.run_kernel_now(m.kernel.gup_fast(m.mm, BASE, 4, False), "gup") == []
    assert folio.refcount == refs
