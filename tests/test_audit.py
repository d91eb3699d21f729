"""audit(): every book it checks, each found wrong when it is wrong and
quiet when it is right (the accounting checker stands on it)."""

from __future__ import annotations

import textwrap

from emu import scenario
from emu.kernel.audit import audit, safe_audit
from emu.machine import Machine
from emu.physmem import FrameState

BASE = 0x1000_0000


def machine(thp: bool = False) -> Machine:
    text = f"""
    [machine]
    arch = "x86-pae"
    cpus = 1
    memory_mib = 32

    [[vma]]
    start = {BASE}
    size = "pmd_size"
    kind = "shmem"
    populate = {"true" if thp else 4}
    thp = {"true" if thp else "false"}

    [[cpu]]
    program = "touch"
    args = [{BASE}, 1, 4096]
    """
    return Machine(scenario.parse(textwrap.dedent(text), "<t>"))


def folio_at(k, pa):
    return k.folios[pa]


def test_audit_is_quiet_on_exact_books():
    for thp in (False, True):
        k = machine(thp).kernel
        assert audit(k) == [] and safe_audit(k) == []


def test_audit_finds_a_wrong_pte_table_count():
    k = machine().kernel
    k.mm.nr_ptes += 1
    assert [p for p in audit(k) if "nr_ptes" in p]


def test_audit_finds_a_wrong_mapcount_and_refcount_once_per_folio():
    k = machine().kernel
    folio = next(iter(k.folios.values()))
    folio.mapcount += 1
    problems = audit(k)
    assert len([p for p in problems if "mapcount" in p]) == 1
    folio.mapcount -= 1
    folio.refcount += 1
    assert len([p for p in audit(k) if "refcount" in p]) == 1
    assert not [p for p in audit(k, pins=1) if "refcount" in p]  # pins explain extra refs


def test_audit_reports_a_wrong_huge_folio_once():
    k = machine(thp=True).kernel
    folios = {id(f): f for f in k.folios.values()}
    big = [f for f in folios.values() if f.nr_pages > 1]
    assert big
    big[0].mapcount += 1
    assert len([p for p in audit(k) if "mapcount" in p]) == 1


def test_audit_finds_a_table_frame_no_table_reaches():
    k = machine().kernel
    k.frames.alloc("stray pte table", 0, FrameState.PGTABLE, level="pte")
    assert [p for p in audit(k) if "unreachable" in p]


def test_audit_finds_a_wrong_rss_count():
    k = machine().kernel
    k.mm.rss["shmem"] += 1
    assert [p for p in audit(k) if p == "rss[shmem] is 5 but 4 pages are mapped"]


def test_audit_finds_an_entry_mapping_a_page_of_no_folio():
    k = machine().kernel
    folio = next(iter(k.folios.values()))
    del k.folios[folio.pa]  # the page the pte maps is no folio's any more
    assert [p for p in audit(k) if p == "1 entries map pages that belong to no folio"]


def test_audit_finds_a_folio_in_a_frame_that_is_not_data():
    k = machine().kernel
    folio = next(iter(k.folios.values()))
    k.frames.set_state(folio.pa, FrameState.PGTABLE, 0, "test")
    assert [p for p in audit(k) if "lives in a frame that is pgtable" in p]


def test_audit_does_not_follow_a_not_present_pmd():
    """A pmd with _PAGE_PRESENT clear points at no live table: its ptes map
    nothing, so the books (one PTE table, four pages) no longer match."""
    m = machine()
    k = m.kernel
    pmd_pa = m.run_kernel_now(k.pmd_offset_alloc(m.mm, BASE, alloc=False), "pmd")
    m.mem.write_int(pmd_pa, 8, k.read_entry_now(pmd_pa, 8) & ~1, m.arch.byteorder)
    problems = audit(k)
    assert "mm.nr_ptes is 1 but 0 PTE tables are reachable" in problems
    assert "rss[shmem] is 4 but 0 pages are mapped" in problems
