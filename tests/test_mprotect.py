"""mprotect (emu.kernel.mprotect): VMAs split and merge, ptes follow, the MMU obeys.

Behaviour, not structure: after mprotect(PROT_READ) a guest write to the
range faults and the vCPU dies of SIGSEGV (the run reports the crash), a
write elsewhere does not; mprotect back merges the VMAs again; a huge pmd
is changed in place (change_huge_pmd); Linux's argument errors.
"""

from __future__ import annotations

import textwrap

import pytest

from arch.base import Prot
from emu import abi, scenario
from emu.hypercall import EINVAL, ENOMEM, dispatch
from emu.kernel.audit import audit
from emu.machine import Machine
from emu.sched.strategies import RandomStrategy

BASE = 0x1000_0000
RO, RW = Prot(write=False), Prot()


def machine(arch: str, kind: str = "anon", thp: bool = False, calls: str = "") -> Machine:
    cpu = f"calls = {calls}" if calls else f'program = "touch"\nargs = [{BASE}, 1, "page_size"]'
    text = f"""
    [machine]
    arch = "{arch}"
    cpus = 1
    memory_mib = 64

    [[vma]]
    start = {BASE}
    size = "pmd_size"
    kind = "{kind}"
    populate = true
    thp = {'true' if thp else 'false'}

    [[cpu]]
    {cpu}
    """
    return Machine(scenario.parse(textwrap.dedent(text), "<t>"))


def pte_of(m: Machine, va: int) -> int:
    k, a = m.kernel, m.arch
    pmd_pa = m.run_kernel_now(k.pmd_offset_alloc(m.mm, va, alloc=False), "pmd")
    pmd = k.read_entry_now(pmd_pa, a.level("pmd").entry_size)
    if a.pmd_trans_huge(pmd):
        return pmd
    return k.read_entry_now(k.entry_addr("pte", a.table_pa("pmd", pmd), va), a.level("pte").entry_size)


def user_vmas(m: Machine) -> list:
    return [v for v in m.mm.vmas if v.start >= BASE and v.start < BASE + m.arch.pmd_size]


@pytest.mark.parametrize("arch", ["x86-pae", "arm", "powerpc", "s390", "sparc64"])
def test_mprotect_splits_the_vma_rewrites_its_ptes_and_merges_back(arch):
    m = machine(arch)
    k, a, ps = m.kernel, m.arch, m.arch.page_size
    lo, hi = BASE + ps, BASE + 3 * ps
    assert m.run_kernel_now(k.do_mprotect(m.mm, lo, hi, RO), "mprotect") == 0
    assert [(v.start, v.end, v.prot.write) for v in user_vmas(m)] == [
        (BASE, lo, True), (lo, hi, False), (hi, BASE + a.pmd_size, True)]
    assert [a.pte_write(pte_of(m, BASE + i * ps)) for i in range(4)] == [True, False, False, True]
    assert all(a.pte_present(pte_of(m, BASE + i * ps)) for i in range(4))
    assert audit(k) == []
    assert m.run_kernel_now(k.do_mprotect(m.mm, lo, hi, RW), "mprotect") == 0
    assert [(v.start, v.end) for v in user_vmas(m)] == [(BASE, BASE + a.pmd_size)]
    assert all(a.pte_write(pte_of(m, BASE + i * ps)) for i in range(4))
    assert audit(k) == []


def run_calls(arch: str, prot: int) -> object:
    calls = f'[["mprotect", {BASE}, "page_size", {prot}], ["touch_write", {BASE}, 2, "page_size"]]'
    m = machine(arch, calls=calls)
    return m.run(RandomStrategy(0))


@pytest.mark.parametrize("arch", ["x86-pae", "arm", "s390"])
def test_a_guest_write_after_mprotect_read_only_is_sigsegv(arch):
    r = run_calls(arch, 1)
    assert r.violation is None and list(r.crashes) == [0]
    assert "SIGSEGV" in r.crashes[0]
    r = run_calls(arch, 3)  # PROT_READ|PROT_WRITE: the same writes go through
    assert r.ok and r.exit_codes == {0: 0}


def test_a_huge_pmd_changes_in_place():
    m = machine("x86-pae", "shmem", thp=True)
    k, a = m.kernel, m.arch
    assert a.pmd_trans_huge(pte_of(m, BASE)) and a.pte_write(pte_of(m, BASE))
    assert m.run_kernel_now(k.do_mprotect(m.mm, BASE, BASE + a.pmd_size, RO), "mprotect") == 0
    pmd = pte_of(m, BASE)
    assert a.pmd_trans_huge(pmd) and not a.pte_write(pmd)
    assert audit(k) == []


def test_mprotect_of_part_of_a_huge_pmd_splits_it():
    m = machine("x86-pae", "shmem", thp=True)
    k, a = m.kernel, m.arch
    assert m.run_kernel_now(k.do_mprotect(m.mm, BASE, BASE + a.page_size, RO), "mprotect") == 0
    assert a.entry_none("pmd", pte_of(m, BASE))  # a file THP's split: refault by ptes
    cache = user_vmas(m)[0].file
    assert cache.vmas == user_vmas(m) and [v.pgoff for v in cache.vmas] == [0, 1]
    assert audit(k) == []


def test_mprotect_arguments_are_linux_errnos():
    m = machine("x86-pae")
    nr, ps, cpu = abi.by_name()["mprotect"], m.arch.page_size, m.cpus[0]
    assert dispatch(m, cpu, nr, (BASE + 1, ps, 1)) == -EINVAL
    assert dispatch(m, cpu, nr, (BASE, ps, 8)) == -EINVAL
    assert dispatch(m, cpu, nr, (BASE, 0, 1)) == 0
    # a range running into a hole: -ENOMEM, the mapped part changed (Linux's partial effect)
    gen = dispatch(m, cpu, nr, (BASE + m.arch.pmd_size - ps, 2 * ps, 1))
    assert m.run_kernel_now(gen, "mprotect") == -ENOMEM
    assert user_vmas(m)[-1].prot == RO


def test_mprotect_back_to_writable_keeps_a_cow_shared_page_read_only():
    """can_change_pte_writable(): only an exclusive anon page is made writable; one
    still shared since fork waits for its write fault to copy it."""
    m = machine("x86-pae")
    k, a, ps = m.kernel, m.arch, m.arch.page_size
    shared = k.folio_of(a.pte_pa(pte_of(m, BASE)))
    shared.anon_exclusive = False  # as copy_present_pte leaves it in parent and child
    assert m.run_kernel_now(k.do_mprotect(m.mm, BASE, BASE + 2 * ps, RO), "mprotect") == 0
    assert m.run_kernel_now(k.do_mprotect(m.mm, BASE, BASE + 2 * ps, RW), "mprotect") == 0
    assert not a.pte_write(pte_of(m, BASE)) and a.pte_write(pte_of(m, BASE + ps))
