"""mm services through real guest hypercalls: results, validation, accounting."""

from __future__ import annotations

import textwrap

import pytest

from emu import scenario
from emu.kernel.audit import audit
from emu.machine import Machine
from emu.sched import RandomStrategy

CALL = """
[machine]
arch = "x86-pae"
cpus = 1
memory_mib = 16

[[vma]]
start = 0x10000000
size = "pmd_size"
kind = "shmem"
populate = 2

[[cpu]]
program = "hypercall"
args = {args}
"""


def call(args) -> int:
    m = Machine(scenario.parse(textwrap.dedent(CALL.format(args=args)), "<test>"))
    r = m.run(RandomStrategy(0))
    assert r.violation is None and not r.crashes
    code = r.exit_codes[0]
    return code - (1 << 32) if code >= 1 << 31 else code


@pytest.mark.parametrize("args,errno", [
    ([8, 0x10000000, 2, 0x7000_0000, 0], -14),  # gup_fast into an unmapped buffer: -EFAULT
    ([8, 0x10000000, 0, 0x10000000, 0], -22),  # zero pages
    ([3, 0x10001234, 0x1000, 0], -22),  # mmap misaligned
    ([3, 0x10000000, 0x1000, 0], -17),  # mmap over an existing VMA: -EEXIST
    ([3, 0x20000000, 0x1000, 7], -22),  # unknown kind
    ([7, 0x10000000, 0x1000, 99], -22),  # unknown madvise advice
    ([5, 0x30000000, 0], -22),  # truncate outside any file mapping
    ([4, 0x10000800, 0x1000], -22),  # munmap of an unaligned start
    ([4, 0x10000000, 0x1000], 0),  # munmap of part of a VMA: the VMA is split
    ([99, 0, 0, 0], -38),  # unknown call: -ENOSYS
])
def test_bad_hypercall_arguments_are_errnos_not_crashes(args, errno):
    assert call(args) == errno


def test_gup_fast_pins_mapped_pages_and_reports_them():
    # out buffer is the second (populated) page of the shmem mapping itself
    assert call([8, 0x10000000, 2, 0x10001000, 0]) == 2


def test_madvise_collapse_racing_a_toucher_ends_pmd_mapped_with_exact_accounting():
    """Issue acceptance: MADV_COLLAPSE on one vCPU, the other touching the range."""
    sc = scenario.load("collapse_shmem")
    for seed in range(6):
        m = Machine(sc)
        r = m.run(RandomStrategy(seed))
        assert r.ok and r.exit_codes == {0: 0, 1: 0}
        k = m.kernel
        base = 16 * m.arch.pmd_size
        pmd_pa = m.run_kernel_now(k.pmd_offset_alloc(m.mm, base, alloc=False), "pmd")
        assert m.arch.pmd_trans_huge(k.read_entry_now(pmd_pa, 8))
        assert audit(k) == []
        assert m.mm.rss["shmem"] == m.arch.pmd_size // m.arch.page_size
    # the variant half: the same run catches a toucher whose fault leaks the
    # rcu_read_lock of its pte_offset_map (missing_pte_unmap)
    sc.variants = ["missing_pte_unmap"]
    r = Machine(sc).run(RandomStrategy(0))
    assert r.violation is not None and r.violation.checker == "imbalance"
    assert "rcu_nesting=1" in r.violation.message


def test_copy_to_user_follows_linux_write_permission_not_hardware_dirty_bits():
    """Regression: on sparc64 a clean writable page has its hardware W bit clear
    until the first write fault; copy_to_user() (used by gup_fast's output)
    returned -EFAULT for it instead of writing, as Linux would after its fault."""
    from arch.base import Access, Fault
    from emu.services import user_page_pa
    text = CALL.format(args="[2]").replace('"x86-pae"', '"sparc64"').replace("populate = 2", "")
    m = Machine(scenario.parse(textwrap.dedent(text), "<test>"))
    m.run_kernel_now(m.kernel.handle_mm_fault(BASE_SHM, Access.READ), "read fault")
    assert isinstance(m.arch.translate_functional(m.mem.buf, m.root, BASE_SHM, Access.WRITE), Fault)
    assert user_page_pa(m, m.cpus[0], BASE_SHM) is not None


def test_arch_options_for_another_arch_are_one_line_errors(capsys):
    from emu.cli import main
    assert main(["run", "touch_ppc_hash", "--arch", "sparc64"]) == 2
    err = capsys.readouterr().err
    assert "arch_options" in err and "Traceback" not in err
    # the line says what the arch does take (sparc64: nothing)
    assert err.strip().endswith("['mmu']; it takes none")


BASE_SHM = 0x10000000


def test_khugepaged_scan_of_a_file_smaller_than_a_pmd_is_eagain():
    """collapse_file() cannot fill a huge page past the end of the file:
    the scan fails, and the hypercall says -EAGAIN as khugepaged's result."""
    text = CALL.format(args=[9, 0x10000000]).replace('size = "pmd_size"',
                                                     'size = "16 * page_size"')
    m = Machine(scenario.parse(textwrap.dedent(text), "<test>"))
    r = m.run(RandomStrategy(0))
    assert r.violation is None and r.exit_codes[0] == (-11) & 0xFFFF_FFFF
    assert audit(m.kernel) == []


def test_khugepaged_scan_of_a_whole_pmd_succeeds_with_0():
    assert call([9, 0x10000000]) == 0


def test_mmap_right_below_or_above_a_vma_is_not_an_overlap():
    assert call([3, 0x10000000 - 0x1000, 0x1000, 0]) == 0
    assert call([3, 0x10000000 + 0x200000, 0x1000, 0]) == 0  # the VMA is one 2 MiB pmd
    assert call([3, 0x10000000 + 0x1ff000, 0x2000, 0]) == -17  # one page inside: -EEXIST
