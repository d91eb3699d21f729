"""Swap, reclaim and migration: MADV_PAGEOUT leaves swap entries the audit counts
(MM_SWAPENTS, swap slots), touches swap pages back in with their bytes, migrate moves
pages through migration entries, and the two swap variants are caught where they
show and clean without them."""

from __future__ import annotations

import pytest

from arch.base import Access
from emu import scenario
from emu.check import default_checkers
from emu.explore import ExploreConfig, explore
from emu.kernel.audit import audit
from emu.machine import Machine
from emu.services import user_page_pa

ARCHES = ["x86-pae", "arm", "powerpc", "s390", "sparc64"]


def machine(name: str, arch: str | None = None, variants: tuple[str, ...] = ()) -> Machine:
    sc = scenario.load(f"guest/scenarios/{name}.toml")
    sc.variants.extend(variants)
    return Machine(sc, arch=arch, checkers=default_checkers())


@pytest.mark.parametrize("arch", ARCHES)
def test_pageout_swaps_out_and_a_touch_swaps_back_in(arch):
    m = machine("swapin_torn_pae", arch=arch)
    k, mm = m.kernel, m.kernel.mm
    pmd, ps = m.arch.pmd_size, m.arch.page_size
    base = 8 * pmd
    m.mem.write(user_page_pa(m, 0, base), b"swapped bytes!!!")
    got = m.run_kernel_now(k.madvise_pageout(mm, base, base + 2 * ps), "pageout")
    assert got == 2
    assert mm.swapents == 2 and mm.rss["anon"] == 0
    assert sorted(k.swap.swap_map) == [1, 2] and not k.swap.cache
    assert audit(k) == []
    for i in range(2):
        assert m.arch.is_swap_pte(k.read_entry_now(_ptep(m, base + i * ps), k.entry_size("pte")))
    m.run_kernel_now(k.handle_mm_fault(base, Access.READ, mm), "fault")  # a read fault swaps page 0 in
    assert mm.swapents == 1 and mm.rss["anon"] == 1 and audit(k) == []
    assert m.mem.read(user_page_pa(m, 0, base), 16) == b"swapped bytes!!!"


def _ptep(m: Machine, va: int) -> int:
    k, a = m.kernel, m.arch
    table = k.mm.root
    names = [lv.name for lv in a.levels]
    for name in names[: names.index("pmd")]:
        val = k.read_entry_now(k.entry_addr(name, table, va), a.level(name).entry_size)
        table = a.table_pa(name, val)
    pmd = k.read_entry_now(k.entry_addr("pmd", table, va), a.level("pmd").entry_size)
    return k.entry_addr("pte", a.table_pa("pmd", pmd), va)


def test_migrate_moves_anon_and_shmem_thp_pages_and_keeps_their_bytes():
    m = machine("pageout_migrate_thp")  # powerpc: a PMD-mapped shmem THP
    k, mm = m.kernel, m.kernel.mm
    pmd = m.arch.pmd_size
    base = 8 * pmd
    old = user_page_pa(m, 0, base, write=False)
    m.mem.write(old, b"thp bytes")
    assert m.run_kernel_now(k.migrate_range(mm, base, base + pmd), "migrate") == 1
    new = user_page_pa(m, 0, base, write=False)
    assert new != old and m.mem.read(new, 9) == b"thp bytes"
    assert audit(k) == []


def test_the_correct_pageout_of_a_migrating_thp_leaves_the_migration_entry():
    res = explore(ExploreConfig("pageout_migrate_thp", strategy="pct", depth=2, schedules=60))
    assert res.report is None, res.report and res.report.message


def test_pmd_migration_clear_bad_loses_the_thp_mapping():
    res = explore(ExploreConfig("pageout_migrate_thp", strategy="pct", depth=2, schedules=400,
                                variants=("pmd_migration_clear_bad",)))
    assert res.report is not None and "rss[shmem]" in res.report.message


def test_swap_no_pte_unmap_same_decodes_a_torn_pae_pte():
    res = explore(ExploreConfig("swapin_torn_pae", strategy="pct", depth=2, schedules=400,
                                variants=("swap_no_pte_unmap_same",)))
    assert res.report is not None and "Bad swap file entry" in res.report.message


def test_swapin_torn_pae_is_clean_with_pte_unmap_same():
    res = explore(ExploreConfig("swapin_torn_pae", strategy="pct", depth=2, schedules=40))
    assert res.report is None, res.report and res.report.message


@pytest.mark.parametrize("arch", ["x86-pae", "powerpc", "s390", "sparc64"])
def test_pageout_and_migration_racing_khugepaged_is_clean(arch):
    res = explore(ExploreConfig("pageout_khugepaged", arch=arch, strategy="pct", depth=3,
                                schedules=25))
    assert res.report is None, res.report and res.report.message


@pytest.mark.parametrize("arch", ["x86-pae", "s390"])
def test_collapse_huge_page_swapin_swaps_the_range_back_in(arch):
    m = machine("swapin_torn_pae", arch=arch)
    k, mm = m.kernel, m.kernel.mm
    pmd, ps = m.arch.pmd_size, m.arch.page_size
    base = 8 * pmd
    m.run_kernel_now(k.madvise_pageout(mm, base, base + 2 * ps), "pageout")
    assert mm.swapents == 2
    pmd_pa = m.run_kernel_now(k.pmd_offset_alloc(mm, base, alloc=False), "pmd")
    vma = mm.find_vma(base)
    from emu.kernel.khugepaged import SCAN_PMD_NULL, SCAN_SUCCEED
    assert m.run_kernel_now(k.collapse_huge_page_swapin(mm, vma, base, pmd_pa), "swapin") \
        == SCAN_SUCCEED
    assert mm.swapents == 0 and mm.rss["anon"] == 2 and audit(k) == []
    # a range whose table is gone: SCAN_PMD_NULL
    other = m.run_kernel_now(k.pmd_offset_alloc(mm, base + pmd, alloc=True), "pmd")
    assert m.run_kernel_now(k.collapse_huge_page_swapin(mm, vma, base + pmd, other), "none") \
        == SCAN_PMD_NULL
