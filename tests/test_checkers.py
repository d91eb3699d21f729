"""Each checker catches its bug and stays quiet on the correct code, same scenario."""

from __future__ import annotations

import textwrap

import pytest

from emu import scenario
from emu.check import Accounting, StaleTlb, UseAfterFree, default_checkers
from emu.check.base import Violation
from emu.kernel import steps as s
from emu.machine import Machine
from emu.sched import RandomStrategy
from emu.testing import Interleaving, about_to_read_pte, rcu_pte_reader, zap_and_retract

BASE = 0x1000_0000


def shm_machine(variants=(), populate=4, cpus=2, programs=None, checkers=()) -> Machine:
    progs = programs or [("touch", [BASE, 1, 4096])]
    cpu_text = "".join(f"\n[[cpu]]\nprogram = \"{p}\"\nargs = {a!r}\n" for p, a in progs)
    text = f"""
    [machine]
    arch = "x86-pae"
    cpus = {cpus}
    memory_mib = 32

    [kernel]
    variants = {list(variants)!r}

    [[vma]]
    start = {BASE}
    size = "pmd_size"
    kind = "shmem"
    populate = {populate}
    """
    sc = scenario.parse(textwrap.dedent(text).replace("'", '"') + cpu_text.replace("'", '"'), "<t>")
    return Machine(sc, checkers=list(checkers))


@pytest.mark.parametrize("variant", [(), ("pte_free_immediate",)])
def test_use_after_free_of_a_retracted_table_by_an_rcu_reader(variant):
    m = shm_machine(variant, checkers=[UseAfterFree()])
    k = m.kernel
    pmd_pa = m.run_kernel_now(k.pmd_offset_alloc(m.mm, BASE, alloc=False), "pmd")
    cache = m.mm.find_vma(BASE).file

    il = Interleaving(m)
    il.start(0, rcu_pte_reader(k, pmd_pa, BASE))
    il.start(1, zap_and_retract(k, cache))
    il.run_until(0, about_to_read_pte)
    il.run_while_runnable(1)
    if variant:
        with pytest.raises(Violation, match="freed frame") as exc:
            il.finish()
        assert exc.value.checker == "use-after-free" and "pte table freed" in str(exc.value)
    else:
        il.finish()


class ZapWithoutFlush:
    """Test-local bug: zap_pte_range() releases pages without flushing TLBs
    (the correct routine, with its flush_tlb_range() step dropped)."""

    def zap_pte_range(self, mm, vma, pmd_pa, start, end, tlb=None):
        gen = super().zap_pte_range(mm, vma, pmd_pa, start, end, tlb)
        value = None
        try:
            while True:
                op = gen.send(value)
                value = None if isinstance(op, s.TlbFlushRange) else (yield op)
        except StopIteration as stop:
            return stop.value


def run_guest(m: Machine, n: int) -> None:
    for _ in range(n):
        if not m.cpus[0].runnable():
            return
        m.cpus[0].step()
        m.step += 1


@pytest.mark.parametrize("buggy", [False, True])
def test_stale_tlb_use_after_a_truncate_without_flush(buggy):
    """cpu0 keeps reading page 0 (its TLB maps it); page 0 is truncated out of
    the file and freed; with the flush cpu0 re-walks and faults, without it
    cpu0 still reads the freed page through its TLB."""
    m = shm_machine(populate=1, cpus=1, checkers=[StaleTlb()],
                    programs=[("read_pages", [BASE, 1, 4096, 400])])
    k = m.kernel
    if buggy:
        k.__class__ = type("BuggyKernel", (ZapWithoutFlush, type(k)), {})
    cpu = m.cpus[0]
    while cpu.tlb_lookup(BASE) is None:
        run_guest(m, 1)
    il = Interleaving(m)
    il.start(0, k.truncate(m.mm.find_vma(BASE).file, 0))
    il.finish()
    if buggy:
        with pytest.raises(Violation, match="TLB entry") as exc:
            run_guest(m, 50)
        assert exc.value.checker == "stale-tlb"
        assert "the page frame" in exc.value.message  # the data page, not a table
    else:
        run_guest(m, 50)  # faults (the file is empty now): SIGSEGV, no stale use
        assert cpu.crash and "SIGSEGV" in cpu.crash


def test_accounting_checker_flags_books_that_disagree_with_the_tables():
    progs = [("madvise_dontneed", [BASE, 4096 * 2])]
    good = shm_machine(populate=4, cpus=1, programs=progs, checkers=[Accounting()])
    assert good.run(RandomStrategy(0)).violation is None
    bad = shm_machine(populate=4, cpus=1, programs=progs, checkers=[Accounting()])
    bad.mm.rss["shmem"] += 1  # the books say one page more than the tables map
    r = bad.run(RandomStrategy(0))
    assert r.violation is not None and r.violation.checker == "accounting"
    assert "rss[shmem]" in r.violation.message


def test_default_checkers_are_fresh_instances():
    a, b = default_checkers(), default_checkers()
    assert [type(x) for x in a] == [type(x) for x in b]
    assert all(x is not y for x, y in zip(a, b, strict=True))


def _detached_while_locked(store: bool):
    """cpu0 holds a table's ptl; the table is detached and its free deferred;
    cpu0 then re-reads an entry (what pte_same() rechecks do) or writes one."""
    import sys
    from pathlib import Path

    from emu.check import DetachedTable
    sys.path.insert(0, str(Path(__file__).parent))
    from test_kernel_contracts import BASE as CBASE
    from test_kernel_contracts import clear_pmd, machine, pmd_of
    m = machine()
    m.add_checker(DetachedTable())
    k = m.kernel
    pmd_pa = pmd_of(m, CBASE)
    table = m.arch.table_pa("pmd", k.read_entry_now(pmd_pa, 8))

    def holder():
        ptep, ptl = yield from k.pte_offset_map_lock(m.mm, pmd_pa, CBASE)
        yield s.Note("locked")
        cur = yield s.Load(ptep, 8, "re-read under ptl")
        if store:
            yield s.Store(ptep, 8, cur | 0x20, "set young under ptl")
        yield from k.pte_unmap_unlock(ptep, ptl)

    def detacher():
        yield from clear_pmd(m, pmd_pa, CBASE)
        yield from k.pte_free_defer(m.mm, table)

    il = Interleaving(m)
    il.start(0, holder())
    il.start(1, detacher())
    il.run_until(0, lambda op: isinstance(op, s.Load) and op.what == "re-read under ptl")
    il.run_while_runnable(1)  # blocks on the ptl cpu0 holds, or defers the free
    il.finish()


def test_detached_table_checker_tolerates_a_recheck_read_under_the_ptl():
    """Issue 9c: Linux re-reads a table detached after its lockless read (the
    pte_same() of handle_pte_fault, pte_unmap_same) and gives up: no report."""
    _detached_while_locked(store=False)


def test_detached_table_checker_flags_a_store_into_a_detached_table():
    with pytest.raises(Violation, match="update is lost") as exc:
        _detached_while_locked(store=True)
    assert exc.value.checker == "detached-table"


@pytest.mark.parametrize("variant", [(), ("free_before_flush",)])
def test_table_freed_before_the_flush_ipi_reaches_a_walk_in_flight(variant):
    """On an arch without RCU table freeing (arm 2-level; here x86-PAE tables with
    IPI flushes and immediate frees), munmap's flush IPI is what waits for a
    hardware walk still reading the table: free it first and the walk reads a
    freed table."""
    from emu.cpu import Mode
    text = f"""
    [machine]
    arch = "x86-pae"
    cpus = 2
    memory_mib = 16

    [kernel]
    variants = {list(variant)!r}

    [[vma]]
    start = {BASE}
    size = "pmd_size"
    kind = "anon"
    populate = 2

    [[cpu]]
    program = "read_pages"
    args = [{BASE}, 2, 4096, 1000]
    """
    m = Machine(scenario.parse(textwrap.dedent(text).replace("'", '"'), "<t>"),
                checkers=[UseAfterFree()])
    m.arch.rcu_table_free = False  # instance knobs: a non-RCU, IPI-flushing arch
    m.arch.tlb_flush_kind = "ipi"
    k, cpu = m.kernel, m.cpus[0]
    il = Interleaving(m)
    il.start(1, k.do_munmap(m.mm, BASE, BASE + m.arch.pmd_size))
    # let munmap detach and zap (its zap flush waits for no walk: cpu0 is idle)
    il.run_until(1, lambda op: isinstance(op, s.Store) and op.what == "free_pgtables: pmd_clear")
    # cpu0 starts a walk for its data access and reads the pmd: the table is still attached
    cpu.flush_all()
    while not (cpu.mode is Mode.WALK and cpu.walk_msg.level == "pte" and BASE <= cpu.walk_req[0] < BASE + m.arch.pmd_size):
        cpu.step()
        m.step += 1
    il.run_while_runnable(1)  # clears the pmd; frees and/or flushes
    if variant:
        assert k.frames.info(cpu.walk_msg.pa).state.value == "free"
        with pytest.raises(Violation, match="walker"):
            cpu.step()
    else:
        assert not il.tasks[1].done  # the flush IPI waits for the walk
        cpu.step()  # the walk reads the (detached, still allocated) table
        il.finish()


@pytest.mark.parametrize("variant", [(), ("free_before_flush",)])
def test_munmap_flushes_once_after_the_table_free_as_one_mmu_gather(variant):
    """munmap's zap and free_pgtables share one mmu_gather (vms_clear_ptes, v6.12):
    nothing sends an IPI until tlb_finish_mmu. So a GUP-fast walk on arm (IRQs
    off, table freed right after the flush) that read the pmd before the zap
    holds up only that one flush, after the pmd_clear: the correct code frees
    the table after it, free_before_flush frees it under the walk. (ptemu used
    to flush after each zap_pte_range, which waited for the walk before the
    table was even detached, so no fuzz run could ever see this variant.)"""
    text = f"""
    [machine]
    arch = "arm"
    cpus = 2
    memory_mib = 16

    [kernel]
    variants = {list(variant)!r}

    [[vma]]
    start = {BASE}
    size = "2 * page_size"
    kind = "anon"
    populate = 2

    [[cpu]]
    calls = [["getcpu"]]

    [[cpu]]
    calls = [["getcpu"]]
    """
    m = Machine(scenario.parse(textwrap.dedent(text).replace("'", '"'), "<t>"),
                checkers=[UseAfterFree()])
    k = m.kernel
    pmd_pa = m.run_kernel_now(k.pmd_offset_alloc(m.mm, BASE, alloc=False), "pmd")
    il = Interleaving(m)
    il.start(0, k.gup_fast(m.mm, BASE, 2, False))
    il.run_until(0, lambda op: isinstance(op, s.Load) and op.what == "ptep_get_lockless")
    il.start(1, k.do_munmap(m.mm, BASE, BASE + 2 * m.arch.page_size))
    il.run_while_runnable(1)  # zaps, clears the pmd and waits in the one flush
    assert m.arch.entry_none("pmd", k.read_entry_now(pmd_pa, 4))
    assert isinstance(il.tasks[1].pending, s.TlbFlushRange)
    table = m.frames.frame_base(il.tasks[0].pending.pa)
    if variant:
        assert m.frames.info(table).state.value == "free"
        with pytest.raises(Violation, match="freed frame") as exc:
            il.finish()
        assert exc.value.checker == "use-after-free"
    else:
        assert m.frames.info(table).state.value == "pgtable"
        il.finish()
        assert m.frames.info(table).state.value == "free"


@pytest.mark.parametrize("variant", [(), ("pte_free_immediate",)])
def test_taking_the_ptl_of_a_freed_table_is_a_use_after_free(variant):
    """collapse step 2 has mapped the table (rcu_read_lock held) when retract
    detaches it: pte_free_defer() keeps the page, so the ptl step 2 takes next
    is still a lock in a live ptdesc; freed at once, taking it writes into a
    free page."""
    from test_kernel_contracts import machine as contract_machine
    m = contract_machine(variant, thp=True, pmd_mapping=False)
    m.add_checker(UseAfterFree())
    k = m.kernel
    cache = m.mm.find_vma(BASE).file
    pmd_pa = m.run_kernel_now(k.pmd_offset_alloc(m.mm, BASE, alloc=False), "pmd")
    ptl = k.pte_lockptr(m.mm, k.read_entry_now(pmd_pa, 8))

    def collapse():
        yield s.DownRead(m.mm.mmap_lock)
        r = yield from k.collapse_pte_mapped_thp(m.mm, BASE, True)
        yield s.UpRead(m.mm.mmap_lock)
        return r

    taken = []

    def second_ptl(op):
        if isinstance(op, s.SpinLock) and op.lock is ptl:
            taken.append(op)
        return len(taken) == 2

    il = Interleaving(m)
    il.start(0, collapse())
    il.run_until(0, second_ptl)
    il.start(1, zap_and_retract(k, cache))
    il.run_while_runnable(1)
    if variant:
        with pytest.raises(Violation, match="spin_lock") as exc:
            il.finish()
        assert exc.value.checker == "use-after-free" and exc.value.cpu == 0
        return
    il.finish()
    il.pass_grace_period()


def test_a_kernel_store_into_a_freed_table_is_a_use_after_free():
    from test_kernel_contracts import machine as contract_machine
    m = contract_machine(("pte_free_immediate",), thp=True, pmd_mapping=False)
    m.add_checker(UseAfterFree())
    k = m.kernel
    cache = m.mm.find_vma(BASE).file
    pmd_pa = m.run_kernel_now(k.pmd_offset_alloc(m.mm, BASE, alloc=False), "pmd")
    table = m.arch.table_pa("pmd", k.read_entry_now(pmd_pa, 8))
    il = Interleaving(m)
    il.start(0, rcu_pte_reader(k, pmd_pa, BASE))  # a read-side section, over before the free
    il.finish()
    il.start(1, zap_and_retract(k, cache))
    il.finish()
    assert m.frames.info(table).state.value == "free"
    il.start(0, k.clear_entry("pte", table, "stale pte_clear"))
    with pytest.raises(Violation, match="kernel store") as exc:
        il.finish()
    assert exc.value.checker == "use-after-free" and exc.value.frame == table
    assert "it holds no RCU/IRQs-off protection" in exc.value.message


def test_audit_flags_a_mapped_folio_whose_frame_was_freed():
    """A folio the tables still map must live in a DATA frame; freed behind
    the books (what a double put does), the audit says where."""
    from emu.kernel.audit import audit
    m = shm_machine(populate=1)
    k = m.kernel
    assert audit(k) == []
    folio = m.mm.find_vma(BASE).file.lookup(0)
    m.frames.free(folio.pa, None, "freed behind the books")
    problems = audit(k)
    assert any(f"{folio.pa:#x}" in p and "lives in a frame that is free" in p for p in problems)


def test_a_walk_through_a_table_freed_and_reused_is_a_stale_pointer():
    """free_before_flush on an IPI-flushing arch: the table a walk in flight
    has its pointer to is freed, and a fault elsewhere gets the same frame as
    its new table. The walk's next read is no use-after-free (the frame is
    live again) but a read through a stale pointer: StalePointer says so."""
    from emu.check.reuse import StalePointer
    from emu.cpu import Mode
    other = BASE + 0x1000_0000
    text = f"""
    [machine]
    arch = "x86-pae"
    cpus = 3
    memory_mib = 16

    [kernel]
    variants = ["free_before_flush"]

    [[vma]]
    start = {BASE}
    size = "pmd_size"
    kind = "anon"
    populate = 2

    [[vma]]
    start = {other}
    size = "pmd_size"
    kind = "anon"

    [[cpu]]
    program = "read_pages"
    args = [{BASE}, 2, 4096, 1000]
    """
    m = Machine(scenario.parse(textwrap.dedent(text), "<t>"), checkers=[StalePointer()])
    m.arch.rcu_table_free = False
    m.arch.tlb_flush_kind = "ipi"
    m.frames.quarantine_len = 0  # a freed frame is the next one handed out
    k, cpu = m.kernel, m.cpus[0]
    il = Interleaving(m)
    il.start(1, k.do_munmap(m.mm, BASE, BASE + m.arch.pmd_size))
    il.run_until(1, lambda op: isinstance(op, s.Store) and op.what == "free_pgtables: pmd_clear")
    cpu.flush_all()
    while not (cpu.mode is Mode.WALK and cpu.walk_msg.level == "pte"
               and BASE <= cpu.walk_req[0] < BASE + m.arch.pmd_size):
        cpu.step()
        m.step += 1
    table = m.frames.frame_base(cpu.walk_msg.pa)
    il.run_while_runnable(1)  # the table is freed before the flush
    assert m.frames.info(table).state.value == "free"

    def new_table():  # another table is allocated (munmap still holds mmap_lock)
        pmd_pa = yield from k.pmd_offset_alloc(m.mm, other, alloc=True)
        yield from k.pte_alloc(m.mm, pmd_pa, other)

    il.start(2, new_table())
    il.run_while_runnable(2)
    assert m.frames.info(table).state.value == "pgtable"  # the same frame, reused
    with pytest.raises(Violation, match="the walker reading a pte entry") as exc:
        cpu.step()
    assert exc.value.checker == "stale-pointer" and exc.value.frame == table
