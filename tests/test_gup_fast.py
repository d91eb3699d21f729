"""GUP-fast without a race: what it pins, where it stops, what it refuses.
(The races against collapse and zap are in test_gup_pins.py.)"""

from __future__ import annotations

import textwrap

import pytest

from arch.base import Prot
from emu import scenario
from emu.machine import Machine

BASE = 0x1000_0000
PAGE = 4096


def machine(populate="4", thp=False, kind="shmem") -> Machine:
    text = f"""
    [machine]
    arch = "x86-pae"
    cpus = 1
    memory_mib = 32

    [[vma]]
    start = {BASE}
    size = "pmd_size"
    kind = "{kind}"
    populate = {populate}
    thp = {"true" if thp else "false"}

    [[cpu]]
    program = "touch"
    args = [{BASE}, 1, 4096]
    """
    return Machine(scenario.parse(textwrap.dedent(text), "<t>"))


def gup(m: Machine, start: int, n: int, write: bool = False) -> list:
    return m.run_kernel_now(m.kernel.gup_fast(m.mm, start, n, write), "gup_fast")


def pte_pa(m: Machine, va: int) -> int:
    k = m.kernel
    pmd_pa = m.run_kernel_now(k.pmd_offset_alloc(m.mm, va, alloc=False), "pmd")
    table = m.arch.table_pa("pmd", k.read_entry_now(pmd_pa, 8))
    return k.entry_addr("pte", table, va)


def test_gup_fast_pins_each_present_page_in_order_and_takes_a_reference():
    m = machine()
    before = {pa: f.refcount for pa, f in m.kernel.folios.items()}
    got = gup(m, BASE, 4)
    assert len(got) == 4
    assert [m.kernel.folio_of(pa) for pa, _ in got] == [
        m.kernel.folio_of(m.arch.pte_pa(m.kernel.read_entry_now(pte_pa(m, BASE + i * PAGE), 8)))
        for i in range(4)]
    for pa, folio in got:
        assert m.kernel.folio_of(pa) is folio and folio.refcount == before[folio.pa] + 1


def test_gup_fast_stops_at_the_first_page_not_mapped():
    m = machine(populate="2")
    assert len(gup(m, BASE, 4)) == 2
    assert gup(m, BASE + 8 * PAGE, 2) == []


def test_gup_fast_finds_nothing_where_no_table_is():
    m = machine(populate="0")
    assert gup(m, BASE, 4) == []


def test_write_gup_fast_refuses_a_read_only_pte():
    m = machine()
    ptep = pte_pa(m, BASE + PAGE)
    a = m.arch
    val = m.kernel.read_entry_now(ptep, 8)
    assert a.pte_write(val)
    ro = a.mk_pte(a.pte_pa(val), Prot(write=False))
    assert a.pte_present(ro) and not a.pte_write(ro)
    m.mem.write_int(ptep, 8, ro, a.byteorder)
    assert len(gup(m, BASE, 4, write=True)) == 1  # stops at the read-only page
    assert len(gup(m, BASE, 4, write=False)) == 4  # a read pin may take it


@pytest.mark.parametrize("n", [1, 3])
def test_gup_fast_pins_a_huge_pmd_with_one_reference_per_page(n):
    m = machine(populate="true", thp=True)
    got = gup(m, BASE + PAGE, n)
    assert len(got) == n
    folio = got[0][1]
    assert folio.nr_pages > 1 and all(f is folio for _, f in got)
    assert [pa for pa, _ in got] == [folio.pa + (i + 1) * PAGE for i in range(n)]
