"""Several processes: one mm each, a shared file's i_mmap across them, per-mm flushes."""

from __future__ import annotations

import pytest

from arch.base import Access
from emu.cli import main
from emu.explore import ExploreConfig, explore
from emu.kernel import steps as ks
from emu.kernel.audit import audit, reachable_tables
from emu.machine import Machine
from emu.scenario import ScenarioError, load
from emu.sched import RandomStrategy

TWO = """
[machine]
arch = "{arch}"
cpus = 3
memory_mib = 32

[[process]]
name = "a"

[[process]]
name = "b"

[[vma]]
process = "a"
start = "8 * pmd_size"
size = "pmd_size"
kind = "shmem"
populate = 4
name = "shm"

[[vma]]
process = "b"
start = "8 * pmd_size"
size = "pmd_size"
kind = "shmem"
share = "shm"
populate = 4
name = "shm-b"

[[cpu]]
process = "a"
program = "touch"
args = ["8 * pmd_size", 4, "page_size"]

[[cpu]]
process = "b"
program = "touch"
args = ["8 * pmd_size", 4, "page_size"]
"""

BASE = 8  # the shared range starts at 8 * pmd_size


def two(machine_from, arch: str = "x86-pae") -> Machine:
    return machine_from(TWO.format(arch=arch))


def pmd_of(m: Machine, mm, va: int) -> int:
    pmd_pa = m.run_kernel_now(m.kernel.pmd_offset_alloc(mm, va, alloc=False), "pmd_of")
    return m.kernel.read_entry_now(pmd_pa, m.arch.level("pmd").entry_size)


@pytest.mark.parametrize("arch", ["x86-pae", "powerpc", "s390", "sparc64", "arm"])
def test_each_process_has_its_own_mm_root_and_root_register(machine_from, arch):
    m = two(machine_from, arch)
    k = m.kernel
    a, b = k.mms
    assert (a.name, b.name) == ("a", "b") and a.root != b.root
    assert m.mm_of(0) is a and m.mm_of(1) is b and m.mm_of(2) is a  # idle cpu2: the first
    assert m.cpus[0].hw_root == m.arch.hw_root(a.root)
    assert m.cpus[1].hw_root == m.arch.hw_root(b.root)
    va = BASE * m.arch.pmd_size
    va_a, va_b = a.find_vma(va), b.find_vma(va)
    assert va_a is not va_b and va_a.mm is a and va_b.mm is b
    # one file, its i_mmap holding both processes' VMAs; the same pages in both
    assert va_a.file is va_b.file and va_a.file.vmas == [va_a, va_b]
    pa = [m.arch.translate_functional(m.mem.buf, m.arch.hw_root(mm.root), va, Access.READ).pa(va)
          for mm in (a, b)]
    assert pa[0] == pa[1]
    assert a.nr_ptes == b.nr_ptes == 1 and a.rss["shmem"] == b.rss["shmem"] == 4
    assert audit(k) == []
    # each mm has its own locks and arch table state, named apart in traces
    assert a.mmap_lock is not b.mmap_lock and a.context is not b.context
    assert (a.mmap_lock.name, b.page_table_lock.name) == ("mmap_lock[a]", "page_table_lock[b]")
    r = m.run(RandomStrategy(1))
    assert r.ok and audit(k) == []


def test_single_process_scenarios_keep_their_names_and_one_mm():
    m = Machine(load("retract_x86"))
    assert [mm.name for mm in m.kernel.mms] == ["main"]
    assert m.mm.mmap_lock.name == "mmap_lock" and m.root == m.mm.root


def test_the_same_range_in_two_processes_is_no_overlap_but_in_one_it_is(machine_from):
    two(machine_from)  # builds
    text = TWO.format(arch="x86-pae").replace('process = "b"\nstart', 'process = "a"\nstart')
    with pytest.raises(ScenarioError, match=r"vma\[1\].*overlaps"):
        machine_from(text)


@pytest.mark.parametrize("arch", ["x86-pae", "powerpc", "s390", "sparc64"])
def test_retract_page_tables_walks_every_mm_mapping_the_file(machine_from, arch):
    m = two(machine_from, arch)
    k = m.kernel
    a, b = k.mms
    va = BASE * m.arch.pmd_size
    before = [m.arch.table_pa("pmd", pmd_of(m, mm, va)) for mm in (a, b)]
    assert m.run_kernel_now(k.khugepaged_scan_file(a, va), "khugepaged") is not None
    m.drain_rcu()
    for mm, table in zip((a, b), before, strict=True):
        pmd = pmd_of(m, mm, va)
        # the PTE table is gone from both mms (a's own pass may install its PMD)
        assert m.arch.entry_none("pmd", pmd) or m.arch.pmd_trans_huge(pmd), mm.name
        assert table not in reachable_tables(k)["pte"], mm.name
    assert b.nr_ptes == 0 and b.rss["shmem"] == 0
    assert audit(k) == []


def test_a_flush_reaches_only_the_cpus_running_that_mm(machine_from):
    m = two(machine_from, "arm")  # flush_tlb_range() by IPI to mm_cpumask
    k = m.kernel
    a, b = k.mms
    va = BASE * m.arch.pmd_size
    for c in m.cpus[:2]:
        tr = m.run_walk_now(c, va, Access.READ)
        c.tlb_insert(tr)
    m.tlb_flush(va, va + m.arch.page_size, a)
    assert not m.cpus[0].tlb and m.cpus[1].tlb  # b's translation is b's business
    m.tlb_flush(va, va + m.arch.page_size, None)
    assert not m.cpus[1].tlb
    # the IPI of a's flush waits for a's CPUs only: b's with IRQs off does not hold it
    k.cpus[1].irq_off = 1
    assert k.ready(2, ks.TlbFlushRange(va, va + 1, a))
    assert not k.ready(2, ks.TlbFlushRange(va, va + 1, b))
    assert not k.ready(2, ks.TlbFlushRange(va, va + 1))
    assert not k.ready(2, ks.TlbRemoveTableSyncOne())  # every CPU, whatever it runs


def test_the_audit_checks_every_mm_and_names_the_wrong_one(machine_from):
    m = two(machine_from)
    b = m.kernel.mms[1]
    b.nr_ptes += 1
    b.rss["shmem"] -= 1
    problems = audit(m.kernel)
    assert any(p.startswith("mm[b].nr_ptes is 2") for p in problems), problems
    assert any(p.startswith("mm[b] rss[shmem] is 3") for p in problems), problems
    assert not any("mm[a]" in p for p in problems)


def test_arm_make_coherent_leaves_other_processes_mappings_alone(machine_from):
    """make_coherent() skips VMAs of other mms (mpnt->vm_mm != mm): only aliases
    within one address space share a VIVT cache line."""
    text = TWO.format(arch="arm").replace('kind = "shmem"', 'kind = "file"')
    text = text.replace('share = "shm"\npopulate = 4', 'share = "shm"\npopulate = 1')
    text = text.replace('kind = "file"\npopulate = 4\nname = "shm"',
                        'kind = "file"\nname = "shm"')
    m = machine_from(text)
    k = m.kernel
    a, b = k.mms
    va = BASE * m.arch.pmd_size
    pte_b = m.arch.translate_functional(m.mem.buf, b.root, va, Access.READ).leaf_pa
    before = k.read_entry_now(pte_b, 4)
    m.run_kernel_now(k.handle_mm_fault(va, Access.READ, a), "fault in a")
    assert k.read_entry_now(pte_b, 4) == before
    assert audit(k) == []


def test_scenario_errors_about_processes_are_one_line(tmp_path, capsys):
    cases = {
        'process = "c"': "vma[0].process",
        '[[process]]\nname = "a"\n\n[[process]]\nname = "b"\n\n[[process]]\nname = "a"': "process[2].name",
    }
    base = TWO.format(arch="x86-pae")
    for change, key in cases.items():
        text = base.replace('process = "a"', change, 1) if change.startswith("process") else \
            base.replace('[[process]]\nname = "a"\n\n[[process]]\nname = "b"', change, 1)
        f = tmp_path / "s.toml"
        f.write_text(text)
        assert main(["run", str(f)]) == 2
        err = capsys.readouterr().err
        assert key in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_pgtable_dump_shows_the_named_process(tmp_path, capsys):
    f = tmp_path / "s.toml"
    f.write_text(TWO.format(arch="x86-pae"))
    assert main(["pgtable", "dump", str(f), "--no-run", "--process", "b"]) == 0
    out = capsys.readouterr().out
    assert "page tables of process b" in out
    assert main(["pgtable", "dump", str(f), "--no-run", "--process", "zz"]) == 2
    err = capsys.readouterr().err
    assert "no such process" in err and len(err.strip().splitlines()) == 1


def test_retract_two_procs_catches_pte_free_immediate_in_the_other_process():
    """The reader's table, freed at once by the collapser's retract, is used by a
    reader CPU; the correct model stays clean on the same schedules."""
    bad = explore(ExploreConfig("retract_two_procs", variants=("pte_free_immediate",),
                                schedules=200, evidence=False))
    assert bad.failure is not None and bad.report.kind == "use-after-free"
    assert bad.report.cpu in (1, 2, 3)  # a reader CPU, in the other process
    good = explore(ExploreConfig("retract_two_procs", schedules=bad.stats.schedules,
                                 evidence=False))
    assert good.failure is None


# ---- exit ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["x86-pae", "powerpc", "s390", "sparc64", "arm"])
def test_each_process_is_torn_down_when_its_last_vcpu_exits(machine_from, arch):
    """exit_mmap() and __mmdrop() of every declared process: all tables, the pgd and
    the anon/text pages go; the allocator holds only the file's page cache."""
    m = two(machine_from, arch)
    k = m.kernel
    r = m.run(RandomStrategy(2))
    assert r.ok and r.exit_codes == {0: 0, 1: 0}
    m.drain_rcu()
    assert all(mm.dead and mm.nr_ptes == 0 and not any(mm.rss.values()) for mm in k.mms)
    assert all(not vma for vma in (mm.vmas for mm in k.mms))
    assert k.mms[0].find_vma(BASE * m.arch.pmd_size) is None
    cache = {f.pa for f in k.folios.values() if f.in_cache}
    held = [fi for fi in m.frames.frames
            if fi.state.value not in ("free", "reserved") and fi.pfn * m.frames.frame_size not in cache]
    assert held == [] and audit(k) == []
    assert "mmput(a)" in "\n".join(m.trace_lines()) and "mmput(b)" in "\n".join(m.trace_lines())


def test_a_scenario_without_processes_keeps_its_mm_after_the_run():
    m = Machine(load("collapse_shmem"))
    r = m.run(RandomStrategy(0))
    assert r.ok and not m.mm.dead and m.mm.nr_ptes > 0


def test_exit_group_stops_the_other_vcpus_of_the_process_and_tears_it_down(machine_from):
    text = """
    [machine]
    arch = "x86-pae"
    cpus = 2

    [[vma]]
    start = "8 * pmd_size"
    size = "pmd_size"
    kind = "anon"

    [[cpu]]
    calls = [["touch_write", "8 * pmd_size", 4, "page_size"], ["exit_group", 7]]

    [[cpu]]
    calls = [["touch_write", "8 * pmd_size + 8 * page_size", 64, "page_size"],
             ["touch_read", "8 * pmd_size", 64, "page_size"]]
    """
    m = machine_from(text)
    r = m.run(RandomStrategy(4))
    assert r.ok and r.exit_codes == {0: 7, 1: 7}, r
    assert m.mm.dead and audit(m.kernel) == []
    assert "killed by exit_group(7)" in "\n".join(m.trace_lines())


def test_free_pgtables_unlinks_the_file_vma_before_freeing_its_tables(machine_from):
    """While an rmap walker holds i_mmap_rwsem for read, exit's free_pgtables waits
    in unlink_file_vma() and has freed nothing."""
    from emu.testing import Interleaving
    m = two(machine_from, "arm")
    k = m.kernel
    a, b = k.mms
    cache = a.vmas[0].file if a.vmas[0].file else a.find_vma(BASE * m.arch.pmd_size).file
    table = m.arch.table_pa("pmd", pmd_of(m, b, BASE * m.arch.pmd_size))
    il = Interleaving(m)
    il.start(0, _hold_read(cache.i_mmap_rwsem))
    il.step(0)  # the walker holds i_mmap_rwsem
    il.start(1, k.mmput(b))
    il.run_while_runnable(1)
    assert m.frames.info(table).state.value == "pgtable"  # nothing freed yet
    il.finish()
    assert m.frames.info(table).state.value == "free" and b.dead


def _hold_read(sem):
    yield ks.DownRead(sem)
    yield ks.Note("an rmap walker holds i_mmap_rwsem")
    yield ks.UpRead(sem)


def _exit_then_truncate(variants: tuple[str, ...]):
    """exit_truncate on arm, forced: the exiter has zapped and is about to free its
    tables; truncate then walks the exiter's PTE table; then the exiter goes on."""
    from emu.check import default_checkers
    from emu.testing import Interleaving
    sc = load("exit_truncate")
    sc.variants.extend(variants)
    m = Machine(sc, arch="arm", checkers=default_checkers())
    k = m.kernel
    owner, exiter = k.mms
    cache = owner.find_vma(BASE * m.arch.pmd_size).file
    il = Interleaving(m)
    il.start(1, k.mmput(exiter))
    il.run_until(1, lambda op: isinstance(op, (ks.Store, ks.DownWrite))
                 and ("pmd_clear" in str(getattr(op, "what", "")) or
                      getattr(getattr(op, "sem", None), "name", "") == "i_mmap_rwsem"))
    il.start(0, k.truncate(cache, m.arch.pmd_size // m.arch.page_size // 2))
    seen = 0
    while seen < 300:  # well inside the zap of the exiter's table
        op = il.tasks[0].pending
        if isinstance(op, ks.Load) and op.what == "zap_pte_range":
            seen += 1
        il.step(0)
    il.run_while_runnable(1)
    il.finish()
    return m


def test_unlink_after_free_frees_tables_an_rmap_walker_still_reads():
    """Forced order, arm (tables freed right after the flush IPI): with the tables
    freed before unlink_file_vma(), truncate reads the exiter's freed PTE table; with
    Linux's order the exiter waits in unlink_file_vma() for truncate's i_mmap_rwsem.

    PCT (depth 2 and 3, 2,000 schedules) does not find this order on exit_truncate:
    it needs the exiter preempted in a few steps between its zap and its free and
    truncate preempted inside its walk of the exiter's table."""
    from emu.check.base import Violation
    with pytest.raises(Violation, match="use-after-free.*zap_pte_range"):
        _exit_then_truncate(("unlink_after_free",))
    m = _exit_then_truncate(())
    assert m.kernel.mms[1].dead
