"""MADV_COLLAPSE and khugepaged's entry points, run alone: the errors Linux
returns for ranges it cannot collapse, what a collapse leaves in the page
cache and the tables, and the result codes the rest of the model compares."""

from __future__ import annotations

import textwrap

import pytest

from emu import scenario
from emu.kernel import khugepaged as kh
from emu.kernel.audit import audit
from emu.machine import Machine

BASE = 0x1000_0000
EINVAL, EAGAIN = -22, -11


def machine(kind: str = "shmem", populate: bool | int = True, size: str = "pmd_size") -> Machine:
    text = f"""
    [machine]
    arch = "x86-pae"
    cpus = 1
    memory_mib = 32
    [[vma]]
    start = {BASE}
    size = "{size}"
    kind = "{kind}"
    populate = {str(populate).lower()}
    [[cpu]]
    program = "touch"
    args = [{BASE}, 1, 4096]
    """
    return Machine(scenario.parse(textwrap.dedent(text), "<t>"))


def collapse(m: Machine, start: int, end: int) -> int:
    return m.run_kernel_now(m.kernel.madvise_collapse(m.mm, start, end), "collapse")


def test_scan_results_are_distinct():
    codes = [v for k, v in vars(kh).items() if k.startswith("SCAN_") and isinstance(v, int)]
    assert len(codes) == len(set(codes)) == len(kh.SCAN_NAMES)


@pytest.mark.parametrize("kind, start, end", [
    ("anon", BASE, BASE + 0x20_0000),          # not a file or shmem mapping
    ("shmem", BASE - 0x20_0000, BASE),         # no VMA there
    ("shmem", BASE, BASE + 0x40_0000),         # the range runs past the VMA's end
])
def test_madvise_collapse_where_linux_cannot_is_einval(kind, start, end):
    m = machine(kind)
    assert collapse(m, start, end) == EINVAL
    assert not m.kernel.cpus[0].held and audit(m.kernel) == []


def test_madvise_collapse_of_a_populated_shmem_range_maps_it_with_one_pmd():
    m = machine()
    k, a = m.kernel, m.arch
    assert collapse(m, BASE, BASE + a.pmd_size) == 0
    pmd_pa = m.run_kernel_now(k.pmd_offset_alloc(m.mm, BASE, alloc=False), "pmd")
    pmdv = k.read_entry_now(pmd_pa, 8)
    assert a.pmd_trans_huge(pmdv)
    folio = k.folio_of(a.pmd_huge_pa(pmdv))
    cache = m.mm.find_vma(BASE).file
    assert folio.large and all(cache.lookup(i) is folio for i in range(a.pmd_size // a.page_size))
    assert audit(k) == []


def test_madvise_collapse_copies_every_old_page_into_the_huge_one():
    m = machine()
    a = m.arch
    cache = m.mm.find_vma(BASE).file
    for i in (0, 5, 511):
        m.mem.write(cache.lookup(i).pa + 8, bytes([i % 251 + 1]) * 8)
    assert collapse(m, BASE, BASE + a.pmd_size) == 0
    huge = cache.lookup(0)
    for i in (0, 5, 511):
        assert m.mem.read(huge.pa + i * a.page_size + 8, 8) == bytes([i % 251 + 1]) * 8


def test_madvise_collapse_of_a_sparse_shmem_range_fills_the_holes():
    m = machine(populate=3)
    k, a = m.kernel, m.arch
    cache = m.mm.find_vma(BASE).file
    assert cache.lookup(100) is None
    assert collapse(m, BASE, BASE + a.pmd_size) == 0
    huge = cache.lookup(0)
    assert huge.large and cache.lookup(100) is huge and cache.lookup(511) is huge
    assert audit(k) == []


def test_khugepaged_on_an_anon_vma_is_einval():
    m = machine("anon")
    assert m.run_kernel_now(m.kernel.khugepaged_scan_file(m.mm, BASE), "khugepaged") == EINVAL
