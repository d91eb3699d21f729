"""MMU notifiers with a real subscriber: the secondary MMU drops what it cached at
invalidate_range_start, and the secondary-mmu checker catches a path that frees a page
or a table without telling it."""

from __future__ import annotations

import pytest

from emu import scenario
from emu.check import default_checkers
from emu.check.base import Violation
from emu.explore import ExploreConfig, explore
from emu.kernel import steps as ks
from emu.machine import Machine
from emu.testing import Interleaving


def machine(name: str, variants: tuple[str, ...] = (), arch: str | None = None) -> Machine:
    sc = scenario.load(f"guest/scenarios/{name}.toml")
    sc.variants.extend(variants)
    return Machine(sc, arch=arch, checkers=default_checkers())


def collapse_under_a_cached_table(variants: tuple[str, ...], arch: str = "x86-pae"):
    """The device caches the PTE table (pages 0-3); MADV_COLLAPSE runs to step 4; the
    device faults page 4 (sleeping on the folio lock), the collapse ends, a grace
    period passes, the device walks again."""
    m = machine("secondary_collapse", variants, arch)
    k = m.kernel
    pmd, ps = m.arch.pmd_size, m.arch.page_size
    il = Interleaving(m)
    assert m.run_kernel_now(k.secondary_attach(m.mm), "attach") == 0
    dev = k.secondary_of(m.mm)
    il.start(0, k.secondary_read(m.mm, 8 * pmd, 4, 1))
    il.finish()
    assert il.tasks[0].result == 4 and len(dev.pwc) == 1
    il.start(1, k.madvise_collapse(m.mm, 8 * pmd, 9 * pmd))
    past_step2 = []

    def step4_lock(op) -> bool:  # the first lock taken after step 2 read a pte: pmd_lock
        if isinstance(op, ks.Load) and op.what == "collapse step 2":
            past_step2.append(op)
        return bool(past_step2) and isinstance(op, ks.SpinLock)

    il.run_until(1, step4_lock, max_steps=100_000)
    il.start(0, k.secondary_read(m.mm, 8 * pmd + 4 * ps, 1, 1))
    il.run_while_runnable(0)
    assert not il.tasks[0].done  # asleep: on the invalidation, or in its fault
    il.run_while_runnable(1)
    assert il.tasks[1].done and il.tasks[1].result == 0
    k.rcu.quiescent(1, m.step, k.online_cpus())  # cpu1 is back in user mode
    il.pass_grace_period()
    il.finish()
    return il.tasks[0].result, dev


@pytest.mark.parametrize("arch", ["x86-pae", "powerpc", "s390", "sparc64"])
def test_collapse_makes_the_device_drop_its_cached_table(arch):
    result, dev = collapse_under_a_cached_table((), arch)
    assert result == 1 and dev.invalidations >= 1
    # the table it cached is gone; the new translation is the huge pmd's
    assert not dev.pwc and all(e.table is None for e in dev.tlb.values())


@pytest.mark.parametrize("arch", ["x86-pae", "s390", "sparc64"])
def test_collapse_without_its_notifier_leaves_the_device_walking_a_freed_table(arch):
    with pytest.raises(Violation) as exc:
        collapse_under_a_cached_table(("collapse_no_notifier",), arch)
    assert exc.value.checker == "secondary-mmu" and "cached PTE table was freed" in str(exc.value)


def test_on_powerpc_the_stale_walk_reads_a_fragment_still_in_its_live_page():
    """powerpc never hands a freed fragment out again and frees its page only with the
    last fragment: the device's stale walk reads the dead table, not reused memory, so
    there is no consequence to report (the correct model drops the table anyway)."""
    result, dev = collapse_under_a_cached_table(("collapse_no_notifier",), "powerpc")
    assert dev.pwc  # never told: the dead table is still cached
    assert result == 0  # it reads the cleared ptes there and gets no translation


def dontneed_under_a_translation(variants: tuple[str, ...]):
    m = machine("secondary_dontneed", variants)
    k = m.kernel
    pmd = m.arch.pmd_size
    il = Interleaving(m)
    m.run_kernel_now(k.secondary_attach(m.mm), "attach")
    dev = k.secondary_of(m.mm)
    il.start(0, k.secondary_read(m.mm, 8 * pmd, 1, 1))
    il.finish()
    assert len(dev.tlb) == 1
    il.start(1, k.madvise_dontneed(m.mm, 8 * pmd, 9 * pmd))
    il.finish()
    il.start(0, k.secondary_read(m.mm, 8 * pmd, 1, 1))
    il.finish()
    return il.tasks[0].result, dev


def test_dontneed_drops_the_translation_and_the_device_faults_the_page_back():
    result, dev = dontneed_under_a_translation(())
    assert result == 1 and dev.invalidations == 1 and dev.fills == 2


def test_a_zap_without_its_notifier_leaves_the_device_reading_a_freed_page():
    with pytest.raises(Violation) as exc:
        dontneed_under_a_translation(("zap_no_notifier",))
    assert exc.value.checker == "secondary-mmu" and "that page was freed" in str(exc.value)


def test_attach_is_once_per_mm_and_waits_out_rmap_walkers():
    """mmu_notifier_register() takes mm_take_all_locks(): a retract holding
    i_mmap_rwsem (no mmap_lock) cannot be between its start and end meanwhile."""
    m = machine("secondary_collapse")
    k = m.kernel
    cache = m.mm.find_vma(8 * m.arch.pmd_size).file
    il = Interleaving(m)
    il.start(1, k.unmap_mapping_range(cache, 0, 1))
    il.run_until(1, lambda op: isinstance(op, ks.Load))  # holds i_mmap_rwsem for read
    il.start(0, k.secondary_attach(m.mm))
    il.run_while_runnable(0)
    assert not il.tasks[0].done
    il.finish()
    assert il.tasks[0].result == 0
    assert m.run_kernel_now(k.secondary_attach(m.mm), "again") == -17


@pytest.mark.parametrize("name,variant", [("secondary_collapse", "collapse_no_notifier"),
                                          ("secondary_dontneed", "zap_no_notifier")])
def test_shipped_secondary_scenarios_are_clean_and_catch_their_variant(name, variant):
    clean = explore(ExploreConfig(name, strategy="pct", depth=3, schedules=30))
    assert clean.report is None, clean.report and clean.report.message
    bad = explore(ExploreConfig(name, strategy="pct", depth=3, schedules=300, variants=(variant,)))
    assert bad.report is not None and bad.report.kind == "secondary-mmu"
