"""MAP_PRIVATE file mappings and copy-on-write: do_cow_fault, do_wp_page, wp_page_copy."""

from __future__ import annotations

import pytest

from arch.base import Access
from emu.kernel.audit import audit
from emu.services import user_page_pa

PRIV = """
[machine]
arch = "{arch}"
cpus = 1
memory_mib = 32

[[vma]]
start = "8 * pmd_size"
size = "pmd_size"
kind = "shmem"
private = true
name = "priv"

[[vma]]
start = "16 * pmd_size"
size = "pmd_size"
kind = "shmem"
share = "priv"
name = "shared"

[[cpu]]
calls = [["touch_read", "8 * pmd_size", 1, "page_size"]]
"""

ARCHES = ["x86-pae", "arm", "powerpc", "s390", "sparc64"]


def fault(m, addr, acc):
    return m.run_kernel_now(m.kernel.handle_mm_fault(addr, acc, m.mm), f"fault {addr:#x}")


@pytest.mark.parametrize("arch", ARCHES)
def test_private_read_shares_the_page_cache_read_only_and_a_write_copies(machine_from, arch):
    m = machine_from(PRIV.format(arch=arch))
    pmd = m.arch.pmd_size
    priv, shared = 8 * pmd, 16 * pmd
    fault(m, shared, Access.WRITE)
    m.mem.write(user_page_pa(m, m.cpus[0], shared), b"file")
    fault(m, priv, Access.READ)
    vma = m.mm.find_vma(priv)
    page = user_page_pa(m, m.cpus[0], priv, write=False)
    assert page == user_page_pa(m, m.cpus[0], shared)  # the page cache's own page
    assert user_page_pa(m, m.cpus[0], priv, write=True) is None  # mapped read-only
    assert not vma.anon_vma
    fault(m, priv, Access.WRITE)  # do_wp_page -> wp_page_copy
    copy = user_page_pa(m, m.cpus[0], priv, write=True)
    assert copy is not None and copy != page
    assert m.mem.read(copy, 4) == b"file"
    assert vma.anon_vma and m.kernel.folio_of(copy).kind == "anon"
    m.mem.write(copy, b"mine")
    assert m.mem.read(page, 4) == b"file"  # the file never sees a private write
    assert audit(m.kernel) == []
    assert m.mm.rss["anon"] >= 1


@pytest.mark.parametrize("arch", ["x86-pae", "s390"])
def test_write_fault_on_empty_pte_is_do_cow_fault(machine_from, arch):
    m = machine_from(PRIV.format(arch=arch))
    priv = 8 * m.arch.pmd_size
    before = m.mm.rss["shmem"]
    fault(m, priv + m.arch.page_size, Access.WRITE)
    pa = user_page_pa(m, m.cpus[0], priv + m.arch.page_size)
    assert m.kernel.folio_of(pa).kind == "anon" and m.kernel.folio_of(pa).anon_exclusive
    assert m.mm.rss["shmem"] == before and m.mm.find_vma(priv).anon_vma
    # the page cache got the page the copy was made from, unmapped
    assert m.mm.find_vma(priv).file.lookup(1) is not None
    assert audit(m.kernel) == []


def test_exclusive_anon_page_is_reused_not_copied(machine_from):
    m = machine_from(PRIV.format(arch="x86-pae"))
    priv = 8 * m.arch.pmd_size
    fault(m, priv, Access.WRITE)
    pa = user_page_pa(m, m.cpus[0], priv)
    # write-protect it by hand, as fork leaves an exclusive page it copied away from
    k = m.kernel
    pmd_pa = m.run_kernel_now(k.pmd_offset_alloc(m.mm, priv, alloc=False), "walk")
    ptep = k.entry_addr("pte", m.arch.table_pa("pmd", k.read_entry_now(pmd_pa, 8)), priv)
    m.mem.write_int(ptep, 8, m.arch.pte_wrprotect(k.read_entry_now(ptep, 8)), m.arch.byteorder)
    fault(m, priv, Access.WRITE)
    assert user_page_pa(m, m.cpus[0], priv) == pa  # wp_page_reuse
    assert audit(k) == []


def test_collapse_keeps_private_copies(machine_from):
    """try_to_unmap of the file's pages spares a private mapping's anon copies."""
    m = machine_from(PRIV.format(arch="x86-pae"))
    pmd = m.arch.pmd_size
    fault(m, 8 * pmd, Access.WRITE)
    fault(m, 8 * pmd + m.arch.page_size, Access.READ)
    copy = user_page_pa(m, m.cpus[0], 8 * pmd)
    m.run_kernel_now(m.kernel.khugepaged_scan_file(m.mm, 16 * pmd), "khugepaged")
    assert user_page_pa(m, m.cpus[0], 8 * pmd) == copy
    assert user_page_pa(m, m.cpus[0], 8 * pmd + m.arch.page_size, write=False) is None
    assert audit(m.kernel) == []
