"""The GUP pin oracle and fork's pin protocol: write_protect_seq, copy of pinned pages.

The interleaving each test forces is the one Linux's fixes are about: a
pin_user_pages_fast() whose grab and recheck run between fork's
folio_maybe_dma_pinned() check of a page and its write-protect of the pte
(57efa1fe5957); a pin taken before fork (70e806e4e645).
"""

from __future__ import annotations

import pytest

from arch.base import Access
from emu.check.base import Violation
from emu.check.gup_pin import GupPinLost
from emu.kernel import steps as ks
from emu.kernel.audit import audit
from emu.testing import Interleaving

PIN = """
[machine]
arch = "{arch}"
cpus = 3
memory_mib = 16

[kernel]
variants = {variants}

[[vma]]
start = "8 * pmd_size"
size = "pmd_size"
kind = "anon"
populate = 2

[[cpu]]
calls = [["touch_read", "8 * pmd_size", 1, "page_size"]]

[[cpu]]
calls = [["fork", 2]]

[[cpu]]
child = "kid"
calls = [["touch_read", "8 * pmd_size", 1, "page_size"]]
"""


def build(machine_from, arch="x86-pae", variants=()):
    m = machine_from(PIN.format(arch=arch, variants=list(variants)), checkers=[GupPinLost()])
    return m, 8 * m.arch.pmd_size


def pinner(m, addr):
    """What the pin_user_pages hypercall runs for cpu0: pin one page and keep it."""
    k = m.kernel
    pinned = yield from k.pin_user_pages_fast(m.mm, addr, 1, True)
    k.hold_pins(0, m.mm, addr, pinned)
    return len(pinned)


def wrprotect_of(ptep):
    return lambda op: isinstance(op, ks.Store) and op.pa in (ptep, ptep + 4) \
        and "ptep_set_wrprotect" in op.what


def pin_inside_fork_window(m, addr):
    """fork checks the page (not pinned), then the whole pin runs, then fork goes on."""
    k = m.kernel
    _pmd, ptep, _table = k.pin_site(m.mm, addr)
    il = Interleaving(m)
    il.start(1, k.dup_mm(m.mm, "kid"), "fork")
    il.run_until(1, wrprotect_of(ptep))
    il.start(0, pinner(m, addr), "pin")
    il.run_while_runnable(0)
    il.finish()
    return il.tasks[0].result


@pytest.mark.parametrize("arch", ["x86-pae", "powerpc", "s390"])
def test_pin_in_forks_window_backs_off_by_write_protect_seq(machine_from, arch):
    m, addr = build(machine_from, arch)
    assert pin_inside_fork_window(m, addr) == 0  # read_seqcount_retry: fork ran
    m.run_kernel_now(m.kernel.handle_mm_fault(addr, Access.WRITE, m.mm), "parent write")
    assert audit(m.kernel) == []


@pytest.mark.parametrize("arch", ["x86-pae", "powerpc", "s390"])
def test_without_write_protect_seq_the_pin_is_lost_to_cow(machine_from, arch):
    m, addr = build(machine_from, arch, ["fork_no_write_protect_seq"])
    assert pin_inside_fork_window(m, addr) == 1  # pinned a page fork then shared
    with pytest.raises(Violation, match="pinned page lost"):
        m.run_kernel_now(m.kernel.handle_mm_fault(addr, Access.WRITE, m.mm), "parent write")


@pytest.mark.parametrize("variants", [(), ("fork_shares_pinned_pages",)])
def test_pin_before_fork_is_copied_for_the_child_unless_the_variant(machine_from, variants):
    m, addr = build(machine_from, "x86-pae", variants)
    k = m.kernel
    assert m.run_kernel_now(pinner(m, addr), "pin") == 1
    child = m.run_kernel_now(k.dup_mm(m.mm, "kid"), "fork")
    m.start_forked(2, child)
    fault = k.handle_mm_fault(addr, Access.WRITE, m.mm)
    if variants:
        with pytest.raises(Violation, match="pinned page lost"):
            m.run_kernel_now(fault, "parent write")
        return
    m.run_kernel_now(fault, "parent write")  # still writable: no fault work at all
    assert k.release_pins(0) == 1
    assert audit(k) == []


def test_zap_then_refault_of_a_pinned_page_is_no_loss(machine_from):
    """MADV_DONTNEED of a pinned range gives it up: a new page there is no broken pin."""
    m, addr = build(machine_from)
    k = m.kernel
    assert m.run_kernel_now(pinner(m, addr), "pin") == 1
    il = Interleaving(m)  # checkers see every step, the ptl's release included
    il.start(0, k.madvise_dontneed(m.mm, addr, addr + m.arch.page_size), "dontneed")
    il.finish()
    il.start(0, k.handle_mm_fault(addr, Access.WRITE, m.mm), "refault")
    il.finish()
    assert k.pins[0][0].detached
    assert k.release_pins(0) == 1
    assert audit(k) == []


def test_read_pin_of_a_shared_anon_page_must_unshare(machine_from):
    """gup_must_unshare(): after fork, a read-only FOLL_PIN of a COW-shared page fails fast."""
    m, addr = build(machine_from)
    k = m.kernel
    child = m.run_kernel_now(k.dup_mm(m.mm, "kid"), "fork")
    m.start_forked(2, child)
    assert m.run_kernel_now(k.pin_user_pages_fast(m.mm, addr, 1, False), "pin") == []
    assert m.run_kernel_now(k.gup_fast(m.mm, addr, 1, False), "get") != []  # FOLL_GET may


def test_mprotect_of_a_pinned_page_keeps_watching_it(machine_from):
    """mprotect's get-and-clear + commit of the same page is no unmap: the pin stays live."""
    from emu.kernel.mprotect import prot_of
    m, addr = build(machine_from)
    k = m.kernel
    assert m.run_kernel_now(pinner(m, addr), "pin") == 1
    il = Interleaving(m)
    il.start(0, k.do_mprotect(m.mm, addr, addr + m.arch.page_size, prot_of(1)), "mprotect")
    il.finish()
    assert not k.pins[0][0].detached
    assert k.release_pins(0) == 1
