"""The address space's edges: a VMA is [start, end), VMAs are kept in
address order, and munmap takes exactly the VMAs inside its range, never a
neighbour that only touches it."""

from __future__ import annotations

import textwrap

from arch.base import Prot
from emu import scenario
from emu.kernel.mm import MM, VMA
from emu.machine import Machine

A, B, C = 0x1000_0000, 0x1020_0000, 0x1040_0000  # two adjacent pmd-sized VMAs


def test_a_vma_is_half_open():
    v = VMA(A, B, "anon", Prot())
    assert v.contains(A) and v.contains(B - 1) and not v.contains(B) and not v.contains(A - 1)


def test_vmas_are_kept_in_address_order_and_found_at_their_edges():
    mm = MM(root=0)
    second, first = VMA(B, C, "anon", Prot()), VMA(A, B, "shmem", Prot())
    mm.insert_vma(second)
    mm.insert_vma(first)
    assert mm.vmas == [first, second]
    assert mm.find_vma(B - 1) is first and mm.find_vma(B) is second
    assert mm.find_vma(C) is None
    assert mm.overlaps(C, C + 4096) is None and mm.overlaps(A - 4096, A) is None
    assert mm.overlaps(B - 1, B) is first


def machine() -> Machine:
    text = f"""
    [machine]
    arch = "x86-pae"
    cpus = 1
    memory_mib = 32

    [[vma]]
    start = {A}
    size = "pmd_size"
    kind = "anon"
    populate = 2

    [[vma]]
    start = {B}
    size = "pmd_size"
    kind = "anon"
    populate = 2

    [[cpu]]
    program = "touch"
    args = [{A}, 1, 4096]
    """
    return Machine(scenario.parse(textwrap.dedent(text), "<t>"))


def test_munmap_of_one_vma_leaves_the_adjacent_ones():
    for gone, kept in ((A, B), (B, A)):
        m = machine()
        k = m.kernel
        assert m.run_kernel_now(k.do_munmap(m.mm, gone, gone + (B - A)), "munmap") == 0
        assert [v.start for v in m.mm.vmas if A <= v.start < C] == [kept]
        assert m.mm.rss["anon"] == 2  # the neighbour's pages stay mapped
