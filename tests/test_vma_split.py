"""VMA split and merge (emu.kernel.vma_split) and munmap of part of a VMA.

A partial munmap splits the VMA as __split_vma does: the rest stays
mapped, a split file VMA is in its file's i_mmap twice with the right
pgoffs, a PTE table a remaining neighbour still uses is kept and one no
VMA uses any more is freed (free_pgd_range's floor/ceiling), and the books
balance (audit) afterwards.
"""

from __future__ import annotations

import textwrap

import pytest

from emu import abi, scenario
from emu.hypercall import EINVAL, dispatch
from emu.kernel.audit import audit
from emu.machine import Machine

BASE = 0x1000_0000


def machine(arch: str, kind: str = "shmem", pmds: int = 2) -> Machine:
    text = f"""
    [machine]
    arch = "{arch}"
    cpus = 1
    memory_mib = 64

    [[vma]]
    start = {BASE}
    size = "{pmds} * pmd_size"
    kind = "{kind}"
    populate = true

    [[cpu]]
    program = "touch"
    args = [{BASE}, 1, "page_size"]
    """
    return Machine(scenario.parse(textwrap.dedent(text), "<t>"))


def user_vmas(m: Machine) -> list:
    return [v for v in m.mm.vmas if v.start >= BASE and v.kind not in ("text",)
            and "stack" not in v.name]


@pytest.mark.parametrize("arch", ["x86-pae", "s390", "sparc64"])
def test_munmap_of_pages_inside_a_vma_splits_it_and_keeps_the_shared_table(arch):
    m = machine(arch)
    k, ps = m.kernel, m.arch.page_size
    nr_ptes, rss = m.mm.nr_ptes, m.mm.rss["shmem"]
    lo, hi = BASE + 4 * ps, BASE + 6 * ps
    assert m.run_kernel_now(k.do_munmap(m.mm, lo, hi), "munmap") == 0
    vmas = user_vmas(m)
    assert [(v.start, v.end) for v in vmas] == [(BASE, lo), (hi, BASE + 2 * m.arch.pmd_size)]
    cache = vmas[0].file
    assert cache is vmas[1].file and cache.vmas == vmas  # both halves in i_mmap
    assert vmas[1].pgoff == 6
    assert m.mm.nr_ptes == nr_ptes  # the table still maps both halves' pages
    assert m.mm.rss["shmem"] == rss - 2
    assert audit(k) == []
    # the hole is unmapped, its neighbours are not
    assert k.cache_of(m.mm, lo) is None and k.cache_of(m.mm, hi) is cache


@pytest.mark.parametrize("arch", ["x86-pae", "powerpc", "arm"])
def test_munmap_of_a_whole_pmd_inside_a_vma_frees_its_table(arch):
    m = machine(arch, "anon", pmds=3)
    k, pmd = m.kernel, m.arch.pmd_size
    nr_ptes = m.mm.nr_ptes
    assert m.run_kernel_now(k.do_munmap(m.mm, BASE + pmd, BASE + 2 * pmd), "munmap") == 0
    assert [(v.start, v.end) for v in user_vmas(m)] == [(BASE, BASE + pmd),
                                                         (BASE + 2 * pmd, BASE + 3 * pmd)]
    assert m.mm.nr_ptes == nr_ptes - 1
    assert audit(k) == []


def test_mprotect_style_merge_rejoins_the_halves_in_i_mmap():
    m = machine("x86-pae")
    k, ps = m.kernel, m.arch.page_size
    (vma,) = user_vmas(m)
    new = m.run_kernel_now(k.split_vma(m.mm, vma, BASE + 8 * ps), "split")
    assert vma.file.vmas == [vma, new] and new.pgoff == 8
    merged = m.run_kernel_now(k.vma_merge_neighbours(m.mm, new), "merge")
    assert merged is vma and vma.end == BASE + 2 * m.arch.pmd_size
    assert vma.file.vmas == [vma] and user_vmas(m) == [vma]


def test_munmap_hypercall_takes_linux_arguments():
    m = machine("x86-pae")
    ps, nr = m.arch.page_size, abi.by_name()["munmap"]
    assert dispatch(m, m.cpus[0], nr, (BASE + 1, ps)) == -EINVAL  # unaligned start
    assert dispatch(m, m.cpus[0], nr, (BASE, 0)) == -EINVAL
    # an unaligned length is rounded up to the page, as Linux does
    gen = dispatch(m, m.cpus[0], nr, (BASE, ps + 1))
    assert m.run_kernel_now(gen, "munmap") == 0
    assert user_vmas(m)[0].start == BASE + 2 * ps
