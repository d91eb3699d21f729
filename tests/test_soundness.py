"""The correct model raises no alarm: each false alarm once reported, as a regression test.

Issue 9 section 2 listed reports on the correct model that Linux does not
deserve. Each scenario here reproduced one on the code before its fix; each
must now explore clean (the long runs of the acceptance, 2,000 PCT schedules
at depth 2 and 3 and 1,000 random, are in test_soundness_slow.py).
"""

from __future__ import annotations

import textwrap

import pytest

from emu import scenario
from emu.cli import main
from emu.explore import ExploreConfig, explore
from emu.machine import Machine
from emu.scenario import ScenarioError
from emu.sched import RandomStrategy

# a. khugepaged_scan (collapse_file + retract) racing truncate of a small-folio
# file: truncate's lookup batch held folios collapse_file then replaced, and
# truncate released them a second time (refcount underflow at schedule #0).
KHUGEPAGED_VS_TRUNCATE = """
[machine]
arch = "x86-pae"
cpus = 2
memory_mib = 32
[[vma]]
start = "8 * pmd_size"
size = "pmd_size"
kind = "file"
populate = true
[[cpu]]
program = "hypercall"
args = [9, "8 * pmd_size"]
[[cpu]]
program = "hypercall"
args = [5, "8 * pmd_size", "page_size"]
"""

# b./c. khugepaged + whole-range MADV_DONTNEED (empty-table reclaim) + a faulting
# reader: handle_pte_fault re-reads, under the ptl, a table detached after its
# lockless orig_pte read (pte_unmap_same / pte_same), sees the change and
# retries; the detached-table checker flagged the read (schedule #1).
KHUGEPAGED_DONTNEED_READER = """
[machine]
arch = "x86-pae"
cpus = 3
memory_mib = 32
[[vma]]
start = "8 * pmd_size"
size = "pmd_size"
kind = "shmem"
populate = 4
[[cpu]]
program = "khugepaged"
args = ["8 * pmd_size", 1]
[[cpu]]
program = "madvise_dontneed"
args = ["8 * pmd_size", "pmd_size"]
[[cpu]]
program = "read_pages"
args = ["8 * pmd_size", 4, "page_size", 2]
"""

# e. nothing but register arithmetic and exits, cut by a tiny step budget
STEP_LIMITED = """
[machine]
arch = "x86-pae"
cpus = 2
memory_mib = 16
[[cpu]]
program = "touch"
args = [0x10000000, 0, "page_size"]
[[cpu]]
program = "touch"
args = [0x10000000, 0, "page_size"]
"""

# f. MADV_COLLAPSE and khugepaged on arm 2-level, which has no THP
ARM_COLLAPSE = """
[machine]
arch = "arm"
cpus = 2
memory_mib = 32
[[vma]]
start = "8 * pmd_size"
size = "pmd_size"
kind = "shmem"
populate = true
[[cpu]]
program = "madvise_collapse"
args = ["8 * pmd_size", "pmd_size"]
[[cpu]]
program = "hypercall"
args = [9, "8 * pmd_size"]
"""

EINVAL = 22


def write(tmp_path, text: str, name: str = "s.toml") -> str:
    f = tmp_path / name
    f.write_text(textwrap.dedent(text))
    return str(f)


def signed(code: int, bits: int = 32) -> int:
    return code - (1 << bits) if code >= 1 << (bits - 1) else code


@pytest.mark.parametrize("strategy", ["pct", "random"])
def test_a_khugepaged_racing_truncate_of_small_folios_is_clean(tmp_path, strategy):
    path = write(tmp_path, KHUGEPAGED_VS_TRUNCATE)
    res = explore(ExploreConfig(path, strategy=strategy, schedules=40, jobs=1))
    assert res.report is None, res.report and res.report.message
    assert res.stats.step_limited == 0


def test_a_truncate_skips_a_folio_collapse_replaced_while_it_slept(tmp_path):
    """The run that used to underflow: khugepaged first, truncate's batch taken before."""
    path = write(tmp_path, KHUGEPAGED_VS_TRUNCATE)
    res = explore(ExploreConfig(path, strategy="pct", schedules=1, jobs=1, depth=2))
    assert res.report is None, res.report and res.report.message


@pytest.mark.parametrize("arch", ["x86-pae", "powerpc", "s390", "sparc64"])
def test_b_fault_rereading_a_reclaimed_table_under_its_ptl_is_clean(tmp_path, arch):
    path = write(tmp_path, KHUGEPAGED_DONTNEED_READER)
    res = explore(ExploreConfig(path, arch=arch, strategy="pct", schedules=25))
    assert res.report is None, res.report and res.report.message


def test_e_step_limited_runs_are_counted_not_failures(tmp_path, capsys):
    path = write(tmp_path, STEP_LIMITED)
    res = explore(ExploreConfig(path, strategy="pct", schedules=5, max_steps=8))
    assert res.report is None
    assert res.stats.step_limited == 5
    assert main(["explore", path, "--max-steps", "8", "--schedules", "3"]) == 0
    out = capsys.readouterr().out
    assert "3 cut by the step limit" in out and "saved to" not in out
    assert not (tmp_path / ".ptemu").exists()


def test_e_run_cut_by_the_step_limit_says_so_and_skips_end_checks(tmp_path, capsys):
    path = write(tmp_path, STEP_LIMITED)
    m = Machine(scenario.load(path))
    ended = []
    m.checkers[0:0] = []

    class Spy:
        def attach(self, m):  # noqa: ANN001
            pass

        def __getattr__(self, name):  # every other event is ignored
            return lambda *a, **k: None

        def on_run_end(self) -> None:
            ended.append(True)

    m.add_checker(Spy())
    r = m.run(RandomStrategy(0), max_steps=8)
    assert r.step_limit and r.violation is None and not ended
    assert main(["run", path, "--max-steps", "8"]) == 3
    assert "step limit reached" in capsys.readouterr().out
    m2 = Machine(scenario.load(path))
    m2.add_checker(Spy())
    r2 = m2.run(RandomStrategy(0))
    assert not r2.step_limit and ended == [True]  # a whole run is checked at its end


def test_f_collapse_on_an_arch_without_thp_returns_linux_einval(tmp_path):
    path = write(tmp_path, ARM_COLLAPSE)
    r = Machine(scenario.load(path)).run(RandomStrategy(0))
    assert r.violation is None and not r.crashes
    assert {c: signed(code) for c, code in r.exit_codes.items()} == {0: -EINVAL, 1: -EINVAL}
    res = explore(ExploreConfig(path, strategy="pct", schedules=20))
    assert res.report is None  # the programs' exit statuses are the calls' results


def test_f_thp_vma_on_an_arch_without_thp_is_a_scenario_error(tmp_path):
    text = ARM_COLLAPSE.replace('populate = true', 'populate = true\nthp = true')
    with pytest.raises(ScenarioError, match=r"vma\[0\]\.thp"):
        Machine(scenario.load(write(tmp_path, text)))


def test_a_result_exit_status_is_not_a_failure_but_a_verdict_is(tmp_path):
    """`hypercall` exits with the call's result (gup_fast's count); `touch` with a verdict."""
    gup = """
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
    args = [8, 0x10000000, 2, 0x10001000, 0]
    """
    path = write(tmp_path, gup)
    r = Machine(scenario.load(path)).run(RandomStrategy(0))
    assert r.exit_codes == {0: 2} and r.failed_exits() == []
    assert explore(ExploreConfig(path, strategy="random", schedules=3)).report is None
    # touch's exit(1) says the data read back was wrong: that stays a failure
    r.exit_codes[0] = 1
    r.result_exits = frozenset()
    assert r.failed_exits() == [0]


@pytest.mark.parametrize("arch", ["x86-pae", "powerpc", "s390", "sparc64"])
def test_d_munmap_waits_for_retract_before_freeing_the_vmas_tables(arch):
    """retract_page_tables() (i_mmap_rwsem read) holds a VMA's pmd lock when
    munmap tears the VMA down. free_pgtables() takes no page-table lock, so
    munmap must not free the tables of a VMA an rmap walker can still find:
    unlink_file_vma() (i_mmap_rwsem write) comes first. Before the fix munmap
    freed the table under retract, which then freed "a pte table at 0x0"."""
    from emu.kernel import steps as ks
    from emu.kernel.audit import audit
    from emu.testing import Interleaving, zap_and_retract
    text = KHUGEPAGED_VS_TRUNCATE.replace('kind = "file"', 'kind = "shmem"')
    m = Machine(scenario.parse(textwrap.dedent(text), "<test>"), arch=arch)
    k = m.kernel
    vma = m.mm.find_vma(8 * m.arch.pmd_size)
    il = Interleaving(m)
    il.start(0, zap_and_retract(k, vma.file))
    # retract holds the pmd lock (and i_mmap_rwsem for read), has read the pmd
    # and is about to take the table's ptl: munmap runs now
    il.run_until(0, lambda op: isinstance(op, ks.SpinLock) and op.nested)
    il.start(1, k.do_munmap(m.mm, vma.start, vma.end))
    il.run_while_runnable(1)
    assert not il.tasks[1].done, "munmap must wait to unlink the VMA from i_mmap"
    il.finish()
    il.pass_grace_period()
    assert il.tasks[1].result == 0 and vma not in vma.file.vmas
    assert m.mm.nr_ptes == 0 and audit(k) == []


def _machine_with_a_deferred_table_free():
    """A machine whose run is over and one pte_free_defer() callback is queued."""
    from emu.check import Accounting
    from emu.kernel import steps as ks
    from emu.testing import zap_and_retract
    text = KHUGEPAGED_VS_TRUNCATE.replace('kind = "file"', 'kind = "shmem"')
    m = Machine(scenario.parse(textwrap.dedent(text), "<test>"))
    acc = Accounting()
    m.add_checker(acc)
    k = m.kernel
    cache = m.mm.find_vma(8 * m.arch.pmd_size).file
    k.rcu.need_qs.clear()

    def retract():
        yield ks.RcuReadLock()  # keep the grace period from ending at once
        yield from zap_and_retract(k, cache)
        yield ks.RcuReadUnlock()
    m.run_kernel_now(retract(), "retract")
    return m, acc


def test_accounting_drains_rcu_callbacks_left_at_the_end_instead_of_skipping():
    m, acc = _machine_with_a_deferred_table_free()
    assert m.kernel.rcu.callbacks, "the table's free is still queued"
    acc.on_run_end()  # runs the callback, then audits: clean
    assert not m.kernel.rcu.callbacks


def test_accounting_says_so_when_it_cannot_close_the_books():
    from emu.check import Violation
    m, acc = _machine_with_a_deferred_table_free()
    m.kernel.cpus[0].rcu_nesting = 1  # a reader that never leaves: no grace period ends
    with pytest.raises(Violation, match="accounting skipped"):
        acc.on_run_end()


def test_the_lockless_sync_rule_checker_says_it_is_a_rule():
    """Issue 9 section 4: a checker encoding a rule, not a consequence, says so."""
    res = explore(ExploreConfig("lockless_sync_pae", variants=("no_lockless_sync",),
                                strategy="pct", schedules=60, minimize=False))
    assert res.report is not None and res.report.kind == "lockless-sync"
    assert res.report.message.startswith("rule: ")
    assert explore(ExploreConfig("lockless_sync_pae", strategy="pct", schedules=60)).report is None


def test_a_table_freed_twice_by_a_variant_names_the_real_table_and_its_history():
    """Issue 12 s3: a collapse without its step-4 pmd_same() recheck used to be
    reported as 'freeing a pte table at 0x0' with no history; the report names
    the table it meant to free, and that table's life."""
    res = explore(ExploreConfig("collapse_dontneed", variants=("no_pmd_same_recheck",),
                                strategy="pct", schedules=60, minimize=False))
    rep = res.report
    assert rep is not None and rep.kind == "kernel-bug"
    assert "at 0x0 " not in rep.message and rep.frame not in (None, 0)
    assert rep.frame_history, "the report tells the table's life"


ARM_ALIASES_BOTH_WAYS = """
[machine]
arch = "arm"
cpus = 2
memory_mib = 32
[[vma]]
start = "8 * pmd_size"
size = "pmd_size"
kind = "file"
name = "a"
[[vma]]
start = "10 * pmd_size"
size = "pmd_size"
kind = "file"
share = "a"
name = "b"
[[cpu]]
program = "read_pages"
args = ["8 * pmd_size", 8, "page_size", 1]
[[cpu]]
program = "read_pages"
args = ["10 * pmd_size", 8, "page_size", 1]
"""


def test_arm_faults_on_aliases_in_both_mappings_do_not_deadlock(tmp_path):
    """Found by `ptemu fuzz` on arm: with split PTE locks the two faults'
    make_coherent() took each other's ptl (ABBA). VIVT arm never splits them
    (SPLIT_PTE_PTLOCKS depends on !ARM || CPU_CACHE_VIPT)."""
    path = write(tmp_path, ARM_ALIASES_BOTH_WAYS)
    res = explore(ExploreConfig(path, strategy="pct", schedules=60, depth=3))
    assert res.report is None, res.report and res.report.message
