"""Stale-pointer checker: a reader's table pointer outlives its table, and the
frame is handed out again. UseAfterFree cannot see it (the frame is not free
any more); following pointer provenance can. Same scenario, correct code clean."""

from __future__ import annotations

import textwrap

import pytest

from arch.base import Access
from emu import scenario
from emu.check import StalePointer, UseAfterFree
from emu.check.base import Violation
from emu.machine import Machine
from emu.testing import Interleaving, about_to_read_pte, rcu_pte_reader, zap_and_retract

BASE = 0x1000_0000
OTHER = 0x2000_0000


def machine(variants) -> Machine:
    text = f"""
    [machine]
    arch = "x86-pae"
    cpus = 3
    memory_mib = 32

    [kernel]
    variants = {list(variants)!r}

    [[vma]]
    start = {BASE}
    size = "pmd_size"
    kind = "shmem"
    populate = 4

    [[vma]]
    start = {OTHER}
    size = "pmd_size"
    kind = "anon"

    [[cpu]]
    program = "touch"
    args = [{BASE}, 1, 4096]
    """
    sc = scenario.parse(textwrap.dedent(text).replace("'", '"'), "<reuse>")
    m = Machine(sc, checkers=[UseAfterFree(), StalePointer()])
    m.frames.quarantine_len = 0  # a freed frame is the next one handed out
    return m


@pytest.mark.parametrize("variant", [(), ("pte_free_immediate",)])
def test_reader_through_a_table_freed_and_reused_under_it(variant):
    m = machine(variant)
    k = m.kernel
    pmd_pa = m.run_kernel_now(k.pmd_offset_alloc(m.mm, BASE, alloc=False), "pmd")
    table = m.arch.table_pa("pmd", k.read_entry_now(pmd_pa, 8))
    cache = m.mm.find_vma(BASE).file

    il = Interleaving(m)
    il.start(0, rcu_pte_reader(k, pmd_pa, BASE))
    il.start(1, zap_and_retract(k, cache))
    il.run_until(0, about_to_read_pte)
    il.run_while_runnable(1)
    il.start(2, k.handle_mm_fault(OTHER, Access.WRITE))  # allocates: a table, a page
    il.run_while_runnable(2)
    fi = m.frames.info(table)
    if variant:
        assert fi.generation == 2 and fi.state.value != "free"  # reused, not free
        with pytest.raises(Violation, match="reused") as exc:
            il.finish()
        v = exc.value
        assert v.checker == "stale-pointer" and v.cpu == 0 and v.frame == table
        assert "pte table freed" in v.message
    else:
        assert fi.generation == 1 and fi.state.value == "rcu-pending"
        assert il.run()[0] is not None
        il.pass_grace_period()
        assert m.frames.info(table).state.value == "free"


def test_walker_pointers_are_forgotten_between_walks():
    """A new walk reading a reused frame through a fresh pointer is fine."""
    m = machine(())
    chk = StalePointer()
    chk.attach(m)
    m.kernel.cpus[0].walk_start_step = 1
    chk.walk[0] = {5: (1, 0)}
    chk.walk_id[0] = 1
    m.kernel.cpus[0].walk_start_step = 9  # another walk
    assert chk._walk_ptrs(0) == {}


# ---- the checker's own rules, driven directly with the machine's real tables ----------

def reuse(m: Machine, pa: int) -> None:
    """Free the frame at `pa` and hand it out again (a new generation)."""
    gen = m.frames.info(pa).generation
    m.frames.free(pa, None, "test frees it")
    others = []
    while (got := m.frames.alloc("test reuse", None)) != pa:
        others.append(got)
    for o in others:
        m.frames.free(o, None, "test frees it")
    assert m.frames.info(pa).generation == gen + 1


def pae_tables(m: Machine) -> tuple[int, int, int, int]:
    """(pmd entry pa, its value, the pte table, the pte entry pa) for BASE."""
    k = m.kernel
    pmd_pa = m.run_kernel_now(k.pmd_offset_alloc(m.mm, BASE, alloc=False), "pmd")
    pmdv = k.read_entry_now(pmd_pa, 8)
    table = m.arch.table_pa("pmd", pmdv)
    return pmd_pa, pmdv, table, table + m.arch.level("pte").index(BASE) * 8


def checked(m: Machine) -> StalePointer:
    chk = StalePointer()
    chk.attach(m)
    return chk


def test_kernel_load_through_a_loaded_pmd_pointer_into_a_reused_table():
    m = machine(())
    pmd_pa, pmdv, table, pte_pa = pae_tables(m)
    chk = checked(m)
    chk.on_kernel_load(0, pmd_pa, 8, pmdv, "pmdp_get")
    reuse(m, table)
    with pytest.raises(Violation, match="reused"):
        chk.on_kernel_load(0, pte_pa, 8, 0, "ptep_get")


def test_kernel_store_through_a_loaded_pmd_pointer_into_a_reused_table():
    m = machine(())
    pmd_pa, pmdv, table, pte_pa = pae_tables(m)
    chk = checked(m)
    chk.on_kernel_load(0, pmd_pa, 8, pmdv, "pmdp_get")
    reuse(m, table)
    with pytest.raises(Violation, match="kernel store"):
        chk.on_kernel_store(0, pte_pa, 8, 0, "set_pte")


def test_kernel_pointers_are_forgotten_when_the_service_ends():
    m = machine(())
    pmd_pa, pmdv, table, pte_pa = pae_tables(m)
    chk = checked(m)
    chk.on_kernel_load(0, pmd_pa, 8, pmdv, "pmdp_get")
    chk.on_service_end(0, "fault")
    reuse(m, table)
    chk.on_kernel_load(0, pte_pa, 8, 0, "ptep_get")  # a new call, a fresh pointer: fine
    chk.on_kernel_store(0, pte_pa, 8, 0, "set_pte")


def test_kernel_load_of_a_pgd_entry_is_followed_to_the_pmd_table():
    m = machine(())
    pmd_pa, _, _, _ = pae_tables(m)
    pmd_table = m.frames.frame_base(pmd_pa)
    root = m.mm.root
    pgd_pa = root + m.arch.level("pgd").index(BASE) * 8
    pgdv = m.kernel.read_entry_now(pgd_pa, 8)
    assert m.arch.table_pa("pgd", pgdv) == pmd_table
    chk = checked(m)
    chk.on_kernel_load(0, pgd_pa, 8, pgdv, "pgdp_get")
    reuse(m, pmd_table)
    with pytest.raises(Violation, match="reused"):
        chk.on_kernel_load(0, pmd_pa, 8, 0, "pmdp_get")


@pytest.mark.parametrize("what", ["pte", "not-present pmd", "huge pmd"])
def test_entries_that_are_not_table_pointers_are_not_followed(what):
    """A pte's page, a not-present pmd's bits and a huge pmd's page are no
    table pointers: reading those frames after their reuse is no stale walk."""
    m = machine(())
    pmd_pa, pmdv, table, pte_pa = pae_tables(m)
    a = m.arch
    if what == "pte":
        at, value = pte_pa, m.kernel.read_entry_now(pte_pa, 8)
        target = m.frames.frame_base(a.translate_functional(
            m.mem.snapshot(), a.hw_root(m.mm.root), BASE, Access.READ).pa(BASE))
    elif what == "not-present pmd":
        at, value, target = pmd_pa, pmdv & ~1, table
        assert not a.entry_present("pmd", value) and not a.entry_none("pmd", value)
    else:
        at, value, target = pmd_pa, pmdv | 0x80, table  # _PAGE_PSE
        assert a.pmd_trans_huge(value)
    chk = checked(m)
    chk.on_kernel_load(0, at, 8, value, "load")
    reuse(m, target)
    chk.on_kernel_load(0, target, 8, 0, "load")


def test_walker_ad_write_into_a_reused_table_is_caught():
    m = machine(())
    pmd_pa, pmdv, table, pte_pa = pae_tables(m)
    chk = checked(m)
    m.kernel.cpus[0].walk_start_step = m.step
    chk.on_walker_read(0, pmd_pa, 8, pmdv, "pmd")
    reuse(m, table)
    with pytest.raises(Violation, match="A/D write"):
        chk.on_walker_write(0, pte_pa, 8, 0x21, "pte")


def test_walker_reading_a_reused_table_under_its_root_pointer():
    """On s390 the walk's first read is of the root (pud) level: the pointer it
    loads there is remembered, and the pmd read after that table's reuse caught.
    (x86-PAE's walk starts at the pmd: its root entries are latched at CR3 load.)"""
    text = f"""
    [machine]
    arch = "s390"
    cpus = 1
    memory_mib = 32
    [[vma]]
    start = {BASE}
    size = "pmd_size"
    kind = "anon"
    populate = 1
    [[cpu]]
    program = "touch"
    args = [{BASE}, 1, 4096]
    """
    m = Machine(scenario.parse(textwrap.dedent(text), "<reuse-s390>"), checkers=[])
    m.frames.quarantine_len = 0
    a = m.arch
    chk = checked(m)
    m.kernel.cpus[0].walk_start_step = m.step
    root = a.load_root(a.hw_root(m.mm.root), lambda pa, size: m.mem.read_int(pa, size, a.byteorder))
    walk = a.walk(root, BASE, Access.READ)
    read = next(walk)
    assert read.level == "pud"
    value = m.mem.read_int(read.pa, read.size, a.byteorder)
    chk.on_walker_read(0, read.pa, read.size, value, read.level)
    read = walk.send(value)
    assert read.level == "pmd"
    reuse(m, m.frames.frame_base(read.pa))
    with pytest.raises(Violation, match="walker reading a pmd entry"):
        chk.on_walker_read(0, read.pa, read.size, 0, read.level)
