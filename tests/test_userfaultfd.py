"""userfaultfd: UFFDIO_REGISTER's flags, UFFDIO_COPY's results, its -EAGAIN when the
table went away under it (seed 003 15/32), and the variant that writes into it anyway."""

from __future__ import annotations

import pytest

from emu import scenario
from emu.check import default_checkers
from emu.check.base import Violation
from emu.explore import ExploreConfig, explore
from emu.kernel import steps as ks
from emu.machine import Machine
from emu.services import user_page_pa
from emu.testing import Interleaving

EAGAIN, EEXIST, ENOENT, EFAULT, EINVAL = -11, -17, -2, -14, -22


def machine(name: str = "uffd_copy_dontneed", variants: tuple[str, ...] = (),
            arch: str | None = None) -> Machine:
    sc = scenario.load(f"guest/scenarios/{name}.toml")
    sc.variants.extend(variants)
    return Machine(sc, arch=arch, checkers=default_checkers())


@pytest.mark.parametrize("arch", ["x86-pae", "arm", "powerpc", "s390", "sparc64"])
def test_uffdio_copy_maps_a_copy_of_the_source_page(arch):
    m = machine(arch=arch)
    k, pmd, ps = m.kernel, m.arch.pmd_size, m.arch.page_size
    src = bytes(range(256)) * (ps // 256)

    def copy(dst, data=src):
        return m.run_kernel_now(k.mfill_atomic_copy(m.mm, dst, ps, lambda off: data), "copy")

    assert copy(8 * pmd + ps) == ENOENT  # not registered yet
    assert m.run_kernel_now(k.userfaultfd_register(m.mm, 8 * pmd, 8 * pmd + ps, 1), "r") == EINVAL
    assert m.run_kernel_now(k.userfaultfd_register(m.mm, 8 * pmd, 9 * pmd, 1), "r") == 0
    assert copy(8 * pmd + ps) == ps
    pa = user_page_pa(m, m.cpus[0], 8 * pmd + ps, write=False)
    assert pa is not None and m.mem.read(pa, ps) == src
    assert copy(8 * pmd + ps) == EEXIST  # a pte is there now
    assert copy(8 * pmd) == EEXIST  # populated at setup
    assert copy(8 * pmd + 2 * ps, None) == EFAULT


def test_a_wp_registration_makes_retract_leave_the_table():
    from emu.testing import zap_and_retract
    m = machine("uffd_copy_retract")
    k, pmd = m.kernel, m.arch.pmd_size
    vma = m.mm.find_vma(8 * pmd)
    assert m.run_kernel_now(k.userfaultfd_register(m.mm, 8 * pmd, 9 * pmd, 2), "r") == 0
    assert vma.uffd_wp and not vma.uffd_missing
    before = m.mm.nr_ptes
    m.run_kernel_now(zap_and_retract(k, vma.file), "retract")
    assert m.mm.nr_ptes == before  # skipped: the table stays


def _copy_across_a_reclaim(variants: tuple[str, ...]) -> int:
    """mfill_atomic() mapped the table and is about to take its ptl when MADV_DONTNEED
    zaps the range and reclaims the empty table."""
    m = machine(variants=variants)
    k, pmd, ps = m.kernel, m.arch.pmd_size, m.arch.page_size
    assert m.run_kernel_now(k.userfaultfd_register(m.mm, 8 * pmd, 9 * pmd, 1), "r") == 0
    il = Interleaving(m)
    il.start(0, k.mfill_atomic_copy(m.mm, 8 * pmd + ps, ps, lambda off: bytes(ps)))
    il.run_until(0, lambda op: isinstance(op, ks.SpinLock))
    il.start(1, k.madvise_dontneed(m.mm, 8 * pmd, 9 * pmd))
    il.run_while_runnable(1)
    assert il.tasks[1].done and il.tasks[1].result == 0
    il.finish()
    for c in m.checkers:
        c.on_run_end()
    return il.tasks[0].result


def test_uffdio_copy_finding_the_table_gone_is_eagain():
    assert _copy_across_a_reclaim(()) == EAGAIN


def test_without_the_recheck_the_pte_goes_into_the_detached_table():
    with pytest.raises(Violation) as exc:
        _copy_across_a_reclaim(("mfill_no_pmd_recheck",))
    assert "detached" in str(exc.value)


@pytest.mark.parametrize("name", ["uffd_copy_dontneed", "uffd_copy_retract"])
def test_shipped_uffd_scenarios_are_clean(name):
    res = explore(ExploreConfig(name, strategy="pct", depth=3, schedules=30))
    assert res.report is None, res.report and res.report.message


def test_the_shipped_variant_is_caught():
    res = explore(ExploreConfig("uffd_copy_dontneed", strategy="pct", depth=3, schedules=400,
                                variants=("mfill_no_pmd_recheck",)))
    assert res.report is not None


def test_uffdio_move_moves_the_page_without_copying():
    m = machine("uffd_move_dontneed")
    k, mm = m.kernel, m.kernel.mm
    pmd, ps = m.arch.pmd_size, m.arch.page_size
    dst, src = 8 * pmd, 12 * pmd
    page = user_page_pa(m, 0, src, write=False)
    assert m.run_kernel_now(k.move_pages(mm, dst, src, ps), "move") == -22  # dst not registered
    m.run_kernel_now(k.userfaultfd_register(mm, dst, dst + pmd, 1), "register")
    assert m.run_kernel_now(k.move_pages(mm, dst, src, ps), "move") == ps
    assert user_page_pa(m, 0, dst, write=False) == page and user_page_pa(m, 0, src) is None
    assert m.run_kernel_now(k.move_pages(mm, dst, src + ps, ps), "again") == EEXIST
    from emu.kernel.audit import audit
    assert audit(k) == []


@pytest.mark.parametrize("arch", ["x86-pae", "s390"])
def test_uffd_move_dontneed_clean_and_its_variant_caught(arch):
    res = explore(ExploreConfig("uffd_move_dontneed", arch=arch, strategy="pct", schedules=60))
    assert res.report is None, res.report and res.report.message
    res = explore(ExploreConfig("uffd_move_dontneed", arch=arch, strategy="pct", schedules=300,
                                variants=("uffd_move_no_dst_pmd_same",)))
    assert res.report is not None and "move_present_pte" in res.report.message
