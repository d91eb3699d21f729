"""mremap (emu.kernel.mremap): the mapping and its page tables move.

A PMD-aligned move on an arch with HAVE_MOVE_PMD hands the very PTE table
to the new pmd (move_normal_pmd); elsewhere, or unaligned, ptes move one by
one into a new table (move_ptes) and the old table is freed with the old
range. Either way the same pages are mapped at the new address, nothing at
the old, i_mmap holds the new VMA with the right pgoff, and the books
balance. Then the argument errors Linux gives.
"""

from __future__ import annotations

import textwrap

import pytest

from emu import abi, scenario
from emu.hypercall import EFAULT, EINVAL, ENOMEM, dispatch
from emu.kernel.audit import audit
from emu.kernel.mremap import MREMAP_FIXED, MREMAP_MAYMOVE
from emu.machine import Machine

PMD = "pmd_size"
MOVE = MREMAP_MAYMOVE | MREMAP_FIXED


def machine(arch: str, kind: str = "shmem", version: str = "", populate: str = "4") -> Machine:
    kernel = f'[kernel]\nversion = "{version}"\n' if version else ""
    text = f"""
    [machine]
    arch = "{arch}"
    cpus = 1
    memory_mib = 64
    {kernel}
    [[vma]]
    start = "8 * pmd_size"
    size = "pmd_size"
    kind = "{kind}"
    populate = {populate}

    [[cpu]]
    program = "touch"
    args = ["8 * pmd_size", 1, "page_size"]
    """
    return Machine(scenario.parse(textwrap.dedent(text), "<t>"))


def pmd_entry(m: Machine, va: int) -> int | None:
    k = m.kernel
    pmd_pa = m.run_kernel_now(k.pmd_offset_alloc(m.mm, va, alloc=False), "pmd")
    return None if pmd_pa is None else k.read_entry_now(pmd_pa, m.arch.level("pmd").entry_size)


def mapped_pa(m: Machine, va: int) -> int | None:
    a, k = m.arch, m.kernel
    pmd = pmd_entry(m, va)
    if pmd is None or a.entry_none("pmd", pmd):
        return None
    pte = k.read_entry_now(k.entry_addr("pte", a.table_pa("pmd", pmd), va), a.level("pte").entry_size)
    return a.pte_pa(pte) if a.pte_present(pte) and not a.pte_none(pte) else None


@pytest.mark.parametrize("arch", ["x86-pae", "powerpc", "s390", "sparc64", "arm"])
def test_a_pmd_aligned_move_carries_the_pages_and_the_table(arch):
    m = machine(arch)
    a, k, ps, pmd = m.arch, m.kernel, m.arch.page_size, m.arch.pmd_size
    old, new = 8 * pmd, 12 * pmd
    pages = [mapped_pa(m, old + i * ps) for i in range(4)]
    table = a.table_pa("pmd", pmd_entry(m, old))
    nr_ptes, rss = m.mm.nr_ptes, dict(m.mm.rss)
    assert m.run_kernel_now(k.do_mremap(m.mm, old, pmd, pmd, MOVE, new), "mremap") == new
    assert [mapped_pa(m, new + i * ps) for i in range(4)] == pages
    assert all(mapped_pa(m, old + i * ps) is None for i in range(4))
    assert m.mm.find_vma(old) is None
    vma = m.mm.find_vma(new)
    assert (vma.start, vma.end, vma.pgoff) == (new, new + pmd, 0) and vma.file.vmas == [vma]
    moved_whole = a.table_pa("pmd", pmd_entry(m, new)) == table
    assert moved_whole == a.have_move_pmd  # move_normal_pmd only where the arch has it
    assert m.mm.nr_ptes == nr_ptes and m.mm.rss == rss
    assert audit(k) == []


@pytest.mark.parametrize("arch", ["x86-pae", "s390"])
def test_an_unaligned_move_of_some_pages_splits_and_moves_ptes(arch):
    m = machine(arch, "anon")
    k, ps, pmd = m.kernel, m.arch.page_size, m.arch.pmd_size
    old, new = 8 * pmd + ps, 12 * pmd + 3 * ps
    pages = [mapped_pa(m, old + i * ps) for i in range(2)]
    assert m.run_kernel_now(k.do_mremap(m.mm, old, 2 * ps, 2 * ps, MOVE, new), "mremap") == new
    assert [mapped_pa(m, new + i * ps) for i in range(2)] == pages
    assert [(v.start, v.end) for v in m.mm.vmas if 8 * pmd <= v.start < 13 * pmd] == [
        (8 * pmd, old), (old + 2 * ps, 9 * pmd), (new, new + 2 * ps)]
    assert mapped_pa(m, 8 * pmd) is not None and mapped_pa(m, old) is None
    assert audit(k) == []


def test_a_move_into_a_mapping_replaces_it_and_a_grow_takes_the_gap():
    m = machine("x86-pae")
    k, ps, pmd = m.kernel, m.arch.page_size, m.arch.pmd_size
    old = 8 * pmd
    # shrink in place: the tail goes (an old_len past the VMA is fine, as in Linux)
    assert m.run_kernel_now(k.do_mremap(m.mm, old, 2 * pmd, 2 * ps, 0, 0), "mremap") == old
    assert m.mm.find_vma(old).end == old + 2 * ps and mapped_pa(m, old + 3 * ps) is None
    # grow in place into the free gap
    assert m.run_kernel_now(k.do_mremap(m.mm, old, 2 * ps, 8 * ps, 0, 0), "mremap") == old
    assert m.mm.find_vma(old).end == old + 8 * ps
    # a grow that cannot stay and may not move
    assert m.run_kernel_now(k.do_mremap(m.mm, old + 7 * ps, ps, ps, MOVE, old + 9 * ps),
                            "mremap") == old + 9 * ps
    assert m.run_kernel_now(k.do_mremap(m.mm, old, 7 * ps, pmd, 0, 0), "mremap") == -ENOMEM
    assert m.run_kernel_now(k.do_mremap(m.mm, old, 7 * ps, pmd, MREMAP_MAYMOVE, 0),
                            "mremap") == -ENOMEM  # placement by the kernel: not modelled
    assert audit(k) == []


def test_a_merge_at_the_destination_needs_the_rmap_locks():
    m = machine("x86-pae")
    k, ps, pmd = m.kernel, m.arch.page_size, m.arch.pmd_size
    old = 8 * pmd
    vma = m.mm.find_vma(old)
    # move the second page right after the VMA's end: file offsets do not
    # line up, so a new VMA; then move page 3 back next to page 2 (merge)
    assert m.run_kernel_now(k.do_mremap(m.mm, old + 3 * ps, ps, ps, MOVE, 10 * pmd), "r") > 0
    new, need = m.run_kernel_now(k.copy_vma(m.mm, m.mm.find_vma(10 * pmd), 10 * pmd,
                                            old + 3 * ps, ps, 3), "copy_vma")
    assert new is vma and need  # merged into the VMA below, pgoff 0 <= 3
    assert vma.end == old + 4 * ps


def test_mremap_arguments_are_linux_errnos():
    m = machine("x86-pae")
    nr, ps, cpu = abi.by_name()["mremap"], m.arch.page_size, m.cpus[0]
    old, pmd = 8 * m.arch.pmd_size, m.arch.pmd_size
    assert dispatch(m, cpu, nr, (old, ps, ps, 8, 0)) == -EINVAL  # unknown flag
    assert dispatch(m, cpu, nr, (old, ps, ps, MREMAP_FIXED, 12 * pmd)) == -EINVAL
    assert dispatch(m, cpu, nr, (old + 1, ps, ps, MOVE, 12 * pmd)) == -EINVAL
    assert dispatch(m, cpu, nr, (old, ps, 0, MOVE, 12 * pmd)) == -EINVAL
    assert dispatch(m, cpu, nr, (old, ps, ps, MOVE, 12 * pmd + 1)) == -EINVAL
    assert dispatch(m, cpu, nr, (old, ps, 2 * ps, MOVE, (1 << 32) - ps)) == -EINVAL
    gen = dispatch(m, cpu, nr, (old, 2 * ps, 2 * ps, MOVE, old + ps))  # overlapping
    assert m.run_kernel_now(gen, "mremap") == -EINVAL
    gen = dispatch(m, cpu, nr, (20 * pmd, ps, ps, MOVE, 12 * pmd))  # nothing mapped there
    assert m.run_kernel_now(gen, "mremap") == -EFAULT
    gen = dispatch(m, cpu, nr, (old, 2 * pmd, 2 * pmd, MOVE, 12 * pmd))  # past the VMA
    assert m.run_kernel_now(gen, "mremap") == -EFAULT
    assert audit(m.kernel) == []
