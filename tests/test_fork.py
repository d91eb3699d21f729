"""fork: dup_mmap / copy_page_range / copy_pte_range, the COW write-protect, pinned pages."""

from __future__ import annotations

import pytest

from arch.base import Access
from emu.kernel.audit import audit
from emu.sched import RandomStrategy
from emu.services import user_page_pa

FORK = """
[machine]
arch = "{arch}"
cpus = 2
memory_mib = 32

[[vma]]
start = "8 * pmd_size"
size = "pmd_size"
kind = "anon"
populate = 2
name = "anon"

[[vma]]
start = "10 * pmd_size"
size = "pmd_size"
kind = "shmem"
populate = 2
name = "shared"

[[vma]]
start = "12 * pmd_size"
size = "pmd_size"
kind = "file"
private = true
name = "private"

[[cpu]]
calls = [["fork", 1]]

[[cpu]]
child = "kid"
calls = [["touch_read", "8 * pmd_size", 2, "page_size"]]
"""

ARCHES = ["x86-pae", "arm", "powerpc", "s390", "sparc64"]


def fork_now(m):
    child = m.run_kernel_now(m.kernel.dup_mm(m.mm, "kid"), "fork")
    m.start_forked(1, child)
    return child


def pa_in(m, mm, va, write=False):
    """Where `va` lands in `mm` by Linux's view (user_page_pa of a vCPU running mm)."""
    cpu = next(c for c in m.cpus if m.mm_of(c) is mm)
    return user_page_pa(m, cpu, va, write)


@pytest.mark.parametrize("arch", ARCHES)
def test_fork_shares_anon_pages_write_protected_and_skips_file_tables(machine_from, arch):
    m = machine_from(FORK.format(arch=arch))
    pmd = m.arch.pmd_size
    k = m.kernel
    m.run_kernel_now(k.handle_mm_fault(12 * pmd, Access.WRITE, m.mm), "cow")
    page = pa_in(m, m.mm, 8 * pmd)
    child = fork_now(m)
    assert m.mm.write_protect_seq % 2 == 0 and m.mm.write_protect_seq >= 2
    # anon: one page, mapped by both, read-only in both, no longer exclusive
    assert pa_in(m, child, 8 * pmd) == page and pa_in(m, m.mm, 8 * pmd) == page
    assert pa_in(m, child, 8 * pmd, write=True) is None
    assert pa_in(m, m.mm, 8 * pmd, write=True) is None
    folio = k.folio_of(page)
    assert folio.mapcount == 2 and not folio.anon_exclusive
    # a shared file VMA without an anon_vma: not copied, the child faults it
    assert pa_in(m, child, 10 * pmd) is None
    # the private file VMA has an anon_vma: its copy is shared too
    assert pa_in(m, child, 12 * pmd) == pa_in(m, m.mm, 12 * pmd)
    assert child.find_vma(10 * pmd) in m.mm.find_vma(10 * pmd).file.vmas
    assert audit(k) == []
    # the child's write copies; the parent's then reuses its page (mapcount 1 again)
    m.run_kernel_now(k.handle_mm_fault(8 * pmd, Access.WRITE, child), "child write")
    assert pa_in(m, child, 8 * pmd, write=True) not in (None, page)
    m.run_kernel_now(k.handle_mm_fault(8 * pmd, Access.WRITE, m.mm), "parent write")
    assert pa_in(m, m.mm, 8 * pmd, write=True) == page
    assert audit(k) == []


def test_fork_copies_a_pinned_anon_page_now(machine_from):
    m = machine_from(FORK.format(arch="x86-pae"))
    pmd = m.arch.pmd_size
    page = pa_in(m, m.mm, 8 * pmd)
    folio = m.kernel.folio_of(page)
    folio.pincount += 1  # as pin_user_pages_fast leaves it
    folio.get()
    m.mm.has_pinned = True
    child = fork_now(m)
    copy = pa_in(m, child, 8 * pmd, write=True)
    assert copy is not None and copy != page  # copy_present_page, writable in the child
    assert pa_in(m, m.mm, 8 * pmd, write=True) == page  # the parent keeps its pinned page
    assert folio.anon_exclusive and m.mem.read(copy, 16) == m.mem.read(page, 16)
    folio.pincount -= 1
    m.kernel.put_folio(folio)
    assert audit(m.kernel) == []


def test_fork_hypercall_runs_the_parked_child_and_tears_it_down(machine_from):
    m = machine_from(FORK.format(arch="s390"))
    assert m.cpus[1].mode.name == "DONE" and not m.kernel.cpus[1].online
    r = m.run(RandomStrategy(1))
    assert r.ok and r.exit_codes == {0: 0, 1: 0}, r
    kid = m.process["kid"]
    assert kid.dead and kid.nr_ptes == 0
    assert audit(m.kernel) == []


def test_fork_of_no_parked_cpu_is_einval(machine_from):
    m = machine_from(FORK.format(arch="x86-pae"))
    assert m.fork_child(m.cpus[0], 0) is None  # cpu0 is no child
    assert m.fork_child(m.cpus[0], 7) is None
    assert m.fork_child(m.cpus[0], 1) == "kid"
    fork_now(m)
    assert m.fork_child(m.cpus[0], 1) is None  # forked already


def test_fork_pin_and_private_mmap_through_hypercalls():
    """The `hypercall` program's exit status is the call's result."""
    from test_services import call
    assert call([13, 0]) == -22  # fork of a [[cpu]] that is no parked child
    assert call([13, 5]) == -22  # of no [[cpu]] at all
    assert call([14, 0x10000000, 1, 0]) == 1  # a read pin of a shmem page, held to exit
    assert call([14, 0, 0, 0]) == 0  # unpin with nothing pinned
    assert call([3, 0x20000000, 0x1000, 3]) == 0  # a MAP_PRIVATE shmem mapping
    assert call([3, 0x20000000, 0x1000, 5]) == -22  # no kind 5


def test_pgtable_dump_of_an_exited_child_says_so(capsys):
    from emu.cli import main
    assert main(["pgtable", "dump", "fork_pin", "--arch", "s390", "--process", "kid"]) == 2
    assert "exited during the run" in capsys.readouterr().err


def test_mprotect_keeps_cow_shared_pages_read_only(machine_from):
    """can_change_pte_writable(): after fork, mprotect(rw) leaves the shared anon pages
    read-only (the next write copies); an exclusive page becomes writable."""
    from emu.kernel.mprotect import prot_of
    m = machine_from(FORK.format(arch="x86-pae"))
    pmd = m.arch.pmd_size
    k = m.kernel
    page = pa_in(m, m.mm, 8 * pmd)
    child = fork_now(m)
    for prot in (1, 3):  # PROT_READ, then PROT_READ | PROT_WRITE
        m.run_kernel_now(k.do_mprotect(m.mm, 8 * pmd, 9 * pmd, prot_of(prot)), "mprotect")
    assert pa_in(m, m.mm, 8 * pmd) == page and pa_in(m, m.mm, 8 * pmd, write=True) is None
    m.run_kernel_now(k.handle_mm_fault(8 * pmd, Access.WRITE, child), "child write")
    for prot in (1, 3):  # now the parent's page is its own again: reused, then writable
        m.run_kernel_now(k.do_mprotect(m.mm, 8 * pmd, 9 * pmd, prot_of(prot)), "mprotect")
    assert pa_in(m, m.mm, 8 * pmd, write=True) is None  # not exclusive until a fault says so
    m.run_kernel_now(k.handle_mm_fault(8 * pmd, Access.WRITE, m.mm), "parent write")
    assert pa_in(m, m.mm, 8 * pmd, write=True) == page
    assert audit(k) == []
