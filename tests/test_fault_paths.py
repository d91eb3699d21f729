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
