"""handle_mm_fault() run alone: what it maps for each access, what it refuses
with SIGSEGV, and that every path gives mmap_lock back (run_kernel_now
raises on a routine that returns holding a lock)."""

from __future__ import annotations

import textwrap

import pytest

from arch.base import Access
from emu import scenario
from emu.kernel.fault import VM_FAULT_RETRY_ACCESS, VM_FAULT_SIGSEGV
from emu.machine import Machine

BASE = 0x1000_0000
PAGE = 4096


def machine(kind="anon", prot="rw") -> Machine:
    text = f"""
    [machine]
    arch = "x86-pae"
    cpus = 1
    memory_mib = 32

    [[vma]]
    start = {BASE}
    size = "pmd_size"
    kind = "{kind}"
    prot = "{prot}"

    [[cpu]]
    program = "touch"
    args = [{BASE}, 1, 4096]
    """
    return Machine(scenario.parse(textwrap.dedent(text), "<t>"))


def fault(m: Machine, addr: int, access: Access) -> int:
    return m.run_kernel_now(m.kernel.handle_mm_fault(addr, access), "fault")


def pte_of(m: Machine, va: int) -> int:
    k = m.kernel
    pmd_pa = m.run_kernel_now(k.pmd_offset_alloc(m.mm, va, alloc=False), "pmd")
    table = m.arch.table_pa("pmd", k.read_entry_now(pmd_pa, 8))
    return k.read_entry_now(k.entry_addr("pte", table, va), 8)


@pytest.mark.parametrize("kind", ["anon", "shmem"])
@pytest.mark.parametrize("access", [Access.READ, Access.WRITE])
def test_a_fault_in_a_vma_maps_the_page_and_drops_mmap_lock(kind, access):
    m = machine(kind)
    assert fault(m, BASE + 3 * PAGE, access) == VM_FAULT_RETRY_ACCESS
    pte = pte_of(m, BASE + 3 * PAGE)
    assert m.arch.pte_present(pte) and m.kernel.folio_of(m.arch.pte_pa(pte)) is not None
    assert m.mm.rss[kind] == 1
    # the fault again finds the page mapped: nothing more is allocated
    assert fault(m, BASE + 3 * PAGE, access) == VM_FAULT_RETRY_ACCESS
    assert m.arch.pte_pa(pte_of(m, BASE + 3 * PAGE)) == m.arch.pte_pa(pte)
    assert sum(m.mm.rss.values()) == 1


def test_an_anonymous_fault_sets_up_the_vma_anon_vma():
    m = machine("anon")
    vma = m.mm.find_vma(BASE)
    assert not vma.anon_vma
    fault(m, BASE, Access.READ)
    assert vma.anon_vma


def test_a_fault_outside_every_vma_is_sigsegv_and_drops_mmap_lock():
    m = machine()
    assert fault(m, BASE + (1 << 30), Access.READ) == VM_FAULT_SIGSEGV


def test_a_write_to_a_read_only_vma_is_sigsegv_and_maps_nothing():
    m = machine(prot="r")
    assert fault(m, BASE, Access.WRITE) == VM_FAULT_SIGSEGV
    assert fault(m, BASE, Access.READ) == VM_FAULT_RETRY_ACCESS
    assert sum(m.mm.rss.values()) == 1


def test_two_faults_on_one_page_map_it_once_and_the_loser_frees_its_page():
    """do_anonymous_page(): both faults saw an empty pte and allocated a page;
    the one that takes the ptl second finds the pte set, frees its page and
    retries: one page mapped, counted once, nothing leaked."""
    from emu.kernel import steps as s
    from emu.kernel.audit import audit
    from emu.testing import Interleaving
    text = textwrap.dedent(f"""
    [machine]
    arch = "x86-pae"
    cpus = 2
    memory_mib = 32
    [[vma]]
    start = {BASE}
    size = "pmd_size"
    kind = "anon"
    populate = 1
    [[cpu]]
    program = "touch"
    args = [{BASE}, 1, 4096]
    [[cpu]]
    program = "touch"
    args = [{BASE}, 1, 4096]
    """)
    m = Machine(scenario.parse(text, "<t>"))
    k = m.kernel
    addr = BASE + PAGE  # its pte table exists (page 0 is populated): the first lock is the ptl
    pmd_pa = m.run_kernel_now(k.pmd_offset_alloc(m.mm, addr, alloc=False), "pmd")
    ptep = k.entry_addr("pte", m.arch.table_pa("pmd", k.read_entry_now(pmd_pa, 8)), addr)
    free_before = m.frames.free_count()
    il = Interleaving(m)
    il.start(0, k.handle_mm_fault(addr, Access.WRITE))
    il.run_until(0, lambda op: isinstance(op, s.SpinLock))
    il.start(1, k.handle_mm_fault(addr, Access.WRITE))
    il.run_while_runnable(1)
    winner = k.read_entry_now(ptep, 8)
    assert m.arch.pte_present(winner)
    il.finish()
    assert il.tasks[0].result == il.tasks[1].result == VM_FAULT_RETRY_ACCESS
    assert k.read_entry_now(ptep, 8) == winner
    assert m.mm.rss["anon"] == 2 and m.frames.free_count() == free_before - 1
    assert audit(k) == []
