"""mincore() and the generic page walker: results, the ACTION_AGAIN retry, the
variant that skips it, and the guest reading the vector mincore() wrote."""

from __future__ import annotations

import textwrap

import pytest

from emu import scenario
from emu.explore import ExploreConfig, explore
from emu.kernel import steps as ks
from emu.machine import Machine
from emu.sched import RandomStrategy
from emu.testing import Interleaving

SHMEM = """
[machine]
arch = "{arch}"
cpus = 2
memory_mib = 16
[kernel]
version = "6.14"
variants = {variants}
[[vma]]
start = "8 * pmd_size"
size = "pmd_size"
kind = "shmem"
populate = 2
[[vma]]
start = "10 * pmd_size"
size = "pmd_size"
kind = "anon"
populate = 3
[[vma]]
start = "12 * pmd_size"
size = "page_size"
kind = "anon"
populate = true
"""


IDLE = """
[[cpu]]
program = "touch"
args = [0x10000000, 0, "page_size"]
"""


def machine(arch: str = "x86-pae", variants: tuple[str, ...] = (), cpus: str = IDLE) -> Machine:
    text = SHMEM.format(arch=arch, variants=list(variants)).replace("'", '"') + cpus
    return Machine(scenario.parse(textwrap.dedent(text), "<test>"))


def run_mincore(m: Machine, start: int, length: int) -> tuple[int, bytes]:
    out = bytearray()
    res = m.run_kernel_now(m.kernel.mincore(m.mm, start, length,
                                            lambda off, data: out.extend(data) or True), "mincore")
    return res, bytes(out)


@pytest.mark.parametrize("arch", ["x86-pae", "arm", "powerpc", "s390", "sparc64"])
def test_mincore_reports_mapped_cached_and_absent_pages(arch):
    m = machine(arch)
    pmd, ps = m.arch.pmd_size, m.arch.page_size
    # anon: the first three pages were faulted in, the rest never were
    assert run_mincore(m, 10 * pmd, 5 * ps) == (0, bytes([1, 1, 1, 0, 0]))
    # shmem: two mapped pages; the rest are not in the page cache either
    assert run_mincore(m, 8 * pmd, 4 * ps) == (0, bytes([1, 1, 0, 0]))
    # a range running past its VMA into unmapped space: -ENOMEM
    assert run_mincore(m, 12 * pmd, 2 * ps)[0] == -12
    assert run_mincore(m, 8 * pmd + 1, ps)[0] == -22


def test_mincore_of_a_zapped_shmem_page_asks_the_page_cache():
    m = machine()
    pmd, ps = m.arch.pmd_size, m.arch.page_size
    vma = m.mm.find_vma(8 * pmd)
    m.run_kernel_now(m.kernel.zap_page_range(m.mm, vma, 8 * pmd, 8 * pmd + ps), "zap")
    assert run_mincore(m, 8 * pmd, 2 * ps) == (0, bytes([1, 1]))


def _mincore_across_a_reclaim(variants: tuple[str, ...]) -> tuple[bytes, list[str]]:
    """mincore has seen the pmd (walk_pmd_range) when MADV_DONTNEED zaps the range and
    reclaims the table: mincore_pte_range's pte_offset_map_lock() finds none."""
    m = machine(variants=variants)
    k = m.kernel
    pmd, ps = m.arch.pmd_size, m.arch.page_size
    out = bytearray()
    il = Interleaving(m)
    il.start(0, k.mincore(m.mm, 8 * pmd, 2 * ps, lambda off, data: out.extend(data) or True))
    il.run_until(0, lambda op: isinstance(op, ks.Load) and op.what == "pmd_trans_huge_lock")
    il.start(1, k.madvise_dontneed(m.mm, 8 * pmd, 9 * pmd))
    il.run_while_runnable(1)
    assert il.tasks[1].done and il.tasks[1].result == 0
    il.finish()
    assert il.tasks[0].result == 0
    return bytes(out), il.log


def test_a_table_reclaimed_under_the_walk_is_walked_again_as_a_hole():
    out, log = _mincore_across_a_reclaim(())
    assert out == bytes([1, 1])  # still in the page cache
    mincore_pmd_reads = [e for e in log if " cpu0 " in e and "walk_pmd_range" in e]
    assert len(mincore_pmd_reads) == 2, "walk_pmd_range() must re-read the pmd (ACTION_AGAIN)"


def test_without_action_again_the_bytes_of_the_range_are_never_written():
    out, _ = _mincore_across_a_reclaim(("mincore_no_action_again",))
    assert out == bytes([0, 0])


def test_the_guest_reads_the_vector_mincore_wrote():
    cpus = """
[[cpu]]
program = "mincore_check"
args = ["8 * pmd_size", "2 * page_size", "12 * pmd_size", 2]
[[cpu]]
program = "mincore_check"
args = ["10 * pmd_size", "4 * page_size", "12 * pmd_size", 4]
"""
    r = machine(cpus=cpus).run(RandomStrategy(0))
    # all resident: 0; the anon range's fourth page never faulted in: 1
    assert r.exit_codes == {0: 0, 1: 1}


def test_mincore_into_an_unmapped_vector_is_efault():
    cpus = """
[[cpu]]
program = "mincore_check"
args = ["8 * pmd_size", "2 * page_size", "14 * pmd_size", 2]
"""
    r = machine(cpus=cpus).run(RandomStrategy(0))
    assert r.exit_codes == {0: 2}  # -EFAULT: the program's "call failed"


@pytest.mark.parametrize("name", ["mincore_dontneed", "mincore_collapse"])
def test_shipped_mincore_scenarios_are_clean_and_catch_their_variant(name):
    clean = explore(ExploreConfig(name, strategy="pct", depth=3, schedules=40))
    assert clean.report is None, clean.report and clean.report.message
    bad = explore(ExploreConfig(name, strategy="pct", depth=3, schedules=300,
                                variants=("mincore_no_action_again",)))
    assert bad.report is not None and bad.report.kind == "exit"


def test_walk_pte_range_finding_no_table_walks_the_pmd_again():
    """A pte_entry walk (walk_pte_range) whose table is reclaimed after walk_pmd_range()
    read the pmd: pte_offset_map_lock() fails, ACTION_AGAIN, and the range is a hole."""
    from emu.kernel.pagewalk import MmWalkOps
    m = machine()
    k = m.kernel
    pmd, ps = m.arch.pmd_size, m.arch.page_size
    seen, holes = [], []

    def pte_entry(walk, ptep, addr, end):
        seen.append((addr, (yield from k.read_entry("pte", ptep))))
        return 0

    def pte_hole(walk, addr, end, depth):
        holes.append((addr, end))
        return 0
        yield

    def walker():
        yield ks.DownRead(m.mm.mmap_lock)
        err = yield from k.walk_page_range(m.mm, 8 * pmd, 8 * pmd + 2 * ps,
                                           MmWalkOps(pte_entry=pte_entry, pte_hole=pte_hole))
        yield ks.UpRead(m.mm.mmap_lock)
        return err

    assert m.run_kernel_now(walker(), "walk") == 0 and len(seen) == 2 and not holes
    seen.clear()
    il = Interleaving(m)
    il.start(0, walker())
    il.run_until(0, lambda op: isinstance(op, ks.RcuReadLock))  # pte_offset_map_lock next
    il.start(1, k.madvise_dontneed(m.mm, 8 * pmd, 9 * pmd))
    il.run_while_runnable(1)
    il.finish()
    assert il.tasks[0].result == 0
    assert seen == [] and holes == [(8 * pmd, 8 * pmd + 2 * ps)]
