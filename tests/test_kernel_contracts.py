"""Contracts of the seed series' routines, under interleavings stated by hand.

Each test runs kernel routines on two CPUs of a real machine (x86-PAE tables
in guest memory) in an explicit order (emu.testing.Interleaving), and checks
what Linux promises: pte_offset_map_lock() fails rather than lock a table
that went away, _rw_nolock callers' pmd_same() recheck refuses a stale
table, pte_free_defer() waits for earlier readers, and each named variant
breaks its contract under the same interleaving.
"""

from __future__ import annotations

import textwrap

import pytest

from emu import scenario
from emu.kernel import steps as s
from emu.kernel.audit import audit
from emu.kernel.core import KernelBug
from emu.machine import Machine
from emu.physmem import FrameState
from emu.testing import Interleaving, about_to_read_pte, rcu_pte_reader, zap_and_retract

BASE = 0x1000_0000  # 2 MiB aligned on every arch whose PMD is <= 8 MiB... x86 here


def machine(variants=(), thp=False, pmd_mapping=True, arch="x86-pae", populate=True,
            version="6.14", size="pmd_size") -> Machine:
    text = f"""
    [machine]
    arch = "{arch}"
    cpus = 2
    memory_mib = 32

    [kernel]
    version = "{version}"
    variants = {list(variants)!r}

    [[vma]]
    start = {BASE}
    size = "{size}"
    kind = "shmem"
    populate = {str(populate).lower()}
    thp = {str(thp).lower()}
    pmd_mapping = {str(pmd_mapping).lower()}

    # two real CPUs: both online, so grace periods wait for both and IPIs
    # wait for both (a CPU without a program would be offline)
    [[cpu]]
    program = "touch"
    args = [{BASE}, 1, 4096]

    [[cpu]]
    program = "touch"
    args = [{BASE}, 1, 4096]
    """
    m = Machine(scenario.parse(textwrap.dedent(text).replace("'", '"'), "<test>"))
    assert m.kernel.online_cpus() == [0, 1]
    return m


def pmd_of(m: Machine, addr: int = BASE) -> int:
    """The pmd entry's address (computed outside the schedule, before tasks start)."""
    return m.run_kernel_now(m.kernel.pmd_offset_alloc(m.mm, addr, alloc=False), "pmd")


def clear_pmd(m: Machine, pmd_pa: int, addr: int = BASE):
    """What retract_page_tables() does to the pmd, as one routine (no free)."""
    k = m.kernel
    ptl = yield from k.pmd_lock(m.mm, pmd_pa, addr)
    old = yield from k.pmdp_collapse_flush(addr, pmd_pa)
    yield s.SpinUnlock(ptl)
    return old


def is_op(kind, lock=None):
    return lambda op: isinstance(op, kind) and (lock is None or op.lock is lock)


def test_pte_offset_map_lock_fails_when_pmd_cleared_between_read_and_lock():
    m = machine()
    k = m.kernel
    pmd_pa = pmd_of(m)
    il = Interleaving(m)
    il.start(0, k.pte_offset_map_lock(m.mm, pmd_pa, BASE))
    il.start(1, clear_pmd(m, pmd_pa))
    il.run_until(0, is_op(s.SpinLock))  # the lockless read is done; the ptl is next
    il.run_while_runnable(1)  # the pmd goes away
    il.finish()
    assert il.tasks[0].result is None
    assert k.cpus[0].rcu_nesting == 0 and not k.cpus[0].held


def test_pte_offset_map_lock_fails_when_pmd_became_huge():
    m = machine()
    k, a = m.kernel, m.arch
    pmd_pa = pmd_of(m)
    il = Interleaving(m)
    il.start(0, k.pte_offset_map_lock(m.mm, pmd_pa, BASE))

    def make_huge():
        old = yield from clear_pmd(m, pmd_pa)
        yield from k.set_entry("pmd", pmd_pa, a.mk_pmd_huge(0x400000, m.mm.find_vma(BASE).prot))
        return old

    il.start(1, make_huge())
    il.run_until(0, is_op(s.SpinLock))
    il.run_while_runnable(1)
    il.finish()
    assert il.tasks[0].result is None


def test_pte_offset_map_lock_succeeds_without_interference():
    m = machine()
    il = Interleaving(m)
    il.start(0, m.kernel.pte_offset_map_lock(m.mm, pmd_of(m), BASE))
    il.finish()
    ptep, ptl = il.tasks[0].result
    assert ptl.owner == 0 and m.kernel.cpus[0].rcu_nesting == 1


def test_rw_nolock_pmd_same_refuses_a_stale_table():
    m = machine()
    k = m.kernel
    pmd_pa = pmd_of(m)

    def rw_nolock_user():
        ptep, pmdval, ptl = yield from k.pte_offset_map_rw_nolock(m.mm, pmd_pa, BASE)
        yield s.SpinLock(ptl)
        same = yield from k.rw_nolock_pmd_same(pmd_pa, pmdval)
        yield s.SpinUnlock(ptl)
        yield from k.pte_unmap(ptep)
        return same

    il = Interleaving(m)
    il.start(0, rw_nolock_user())
    il.start(1, clear_pmd(m, pmd_pa))
    il.run_until(0, is_op(s.SpinLock))
    il.run_while_runnable(1)
    il.finish()
    assert il.tasks[0].result is False


@pytest.mark.parametrize("variant", [(), ("pte_free_immediate",)])
def test_deferred_table_free_waits_for_earlier_reader(variant):
    """A table retracted while cpu0 is inside pte_offset_map() stays allocated
    until cpu0's pte_unmap(); pte_free_immediate frees it under the reader."""
    m = machine(variant, thp=True, pmd_mapping=False)
    k = m.kernel
    pmd_pa = pmd_of(m)
    table = m.arch.table_pa("pmd", k.read_entry_now(pmd_pa, 8))
    cache = m.mm.find_vma(BASE).file

    il = Interleaving(m)
    il.start(0, rcu_pte_reader(k, pmd_pa, BASE, note="reader holds the table"))
    il.start(1, zap_and_retract(k, cache))
    # the reader has mapped the table and is about to read it
    il.run_until(0, about_to_read_pte)
    il.run_while_runnable(1)
    il.pass_grace_period()  # cpu0 is in a read-side section: the GP cannot end
    state = m.frames.info(table).state
    if variant:
        assert state is FrameState.FREE, "pte_free_immediate frees under the reader"
    else:
        assert state is FrameState.RCU_PENDING
        il.finish()  # the reader unmaps
        il.pass_grace_period()
        assert m.frames.info(table).state is FrameState.FREE


def test_missing_pte_unmap_leaves_rcu_held():
    from arch.base import Access
    for variant, held in (((), 0), (("missing_pte_unmap",), 1)):
        m = machine(variant, populate=False)
        k = m.kernel
        il = Interleaving(m)
        il.start(0, k.handle_mm_fault(BASE, Access.READ))  # the pte is none
        il.finish()
        assert il.tasks[0].result == 0
        assert k.cpus[0].rcu_nesting == held


@pytest.mark.parametrize("variant", [(), ("collapse_no_clear",)])
def test_truncate_racing_collapse_step_2(variant):
    """Truncate's first unmap pass (no folio lock, no mmap_lock) runs between
    collapse_pte_mapped_thp()'s step 2 and step 4: with the entries cleared it
    finds nothing; left in place, it removes them a second time."""
    m = machine(variant, thp=True, pmd_mapping=False)
    k = m.kernel
    pmd_pa = pmd_of(m)
    pml = k.pmd_lockptr(m.mm, pmd_pa, BASE)
    cache = m.mm.find_vma(BASE).file
    il = Interleaving(m)

    def collapse():
        yield s.DownRead(m.mm.mmap_lock)
        r = yield from k.collapse_pte_mapped_thp(m.mm, BASE, True)
        yield s.UpRead(m.mm.mmap_lock)
        return r

    il.start(0, collapse())
    il.start(1, k.truncate(cache, 0))
    il.run_until(0, is_op(s.SpinLock, pml))  # steps 1-3 done, step 4 next
    if variant:
        with pytest.raises(KernelBug, match="underflow"):
            il.run_while_runnable(1)
        return
    il.run_while_runnable(1)
    il.finish()
    il.pass_grace_period()
    assert audit(k) == []


def two_mappings(variants=()) -> Machine:
    """A file mapped twice in one mm (A unpopulated, B populated), on x86-PAE tables
    with aliasing caches switched on, so a fault in A runs make_coherent on B."""
    text = f"""
    [machine]
    arch = "x86-pae"
    cpus = 2
    memory_mib = 32

    [kernel]
    variants = {list(variants)!r}

    [[vma]]
    start = {BASE}
    size = "pmd_size"
    kind = "file"
    name = "A"

    [[vma]]
    start = "{BASE} + 2 * pmd_size"
    size = "pmd_size"
    kind = "file"
    name = "B"
    share = "A"
    populate = true

    [[cpu]]
    program = "touch"
    args = [{BASE}, 1, 4096]

    [[cpu]]
    program = "touch"
    args = [{BASE}, 1, 4096]
    """
    m = Machine(scenario.parse(textwrap.dedent(text).replace("'", '"'), "<test>"))
    from arch import x86_pae
    m.arch.vivt_cache_aliasing = True
    m.arch.pte_mkuncached = lambda v: v | x86_pae.PCD
    return m


class AccessesToDeadTables:
    """Test-local observer: kernel accesses to frames that are no longer live tables."""

    def __init__(self, m: Machine) -> None:
        self.m = m
        self.bad: list[str] = []

    def attach(self, m):  # noqa: D102
        self.m = m

    def __getattr__(self, name):
        return lambda *a, **k: None

    def on_kernel_load(self, cpu, pa, size, value, what):
        fi = self.m.frames.info(pa)
        if fi.state is not FrameState.PGTABLE and fi.state is not FrameState.DATA:
            self.bad.append(f"cpu{cpu} {what} from {fi.state.value} frame {pa:#x}")

    on_kernel_store = on_kernel_load


@pytest.mark.parametrize("variant", [(), ("no_pmd_same_recheck",)])
def test_adjust_pte_rechecks_pmd_against_empty_table_reclaim(variant):
    from arch.base import Access
    m = two_mappings(variant)
    k = m.kernel
    b = BASE + 2 * m.arch.pmd_size
    obs = AccessesToDeadTables(m)
    m.add_checker(obs)
    b_pmd = pmd_of(m, b)
    b_ptl = k.pte_lockptr(m.mm, k.read_entry_now(b_pmd, 8))
    il = Interleaving(m)
    il.start(0, k.handle_mm_fault(BASE, Access.READ))
    il.start(1, k.madvise_dontneed(m.mm, b, b + m.arch.pmd_size))
    # cpu0 mapped the page in A and, in adjust_pte(), is about to take B's ptl
    il.run_until(0, is_op(s.SpinLock, b_ptl))
    il.run_while_runnable(1)  # cpu1 zaps B and reclaims its now-empty table
    il.finish()
    if variant:
        # without the recheck it reads (and would write) the detached table
        assert obs.bad and "do_adjust_pte" in obs.bad[0] and "rcu-pending" in obs.bad[0]
    else:
        assert obs.bad == []
        assert k.cpus[0].rcu_nesting == 0


def test_fault_during_collapse_file_waits_on_the_old_folio_then_maps_the_new():
    """Regression: collapse_file() once left a replaced index empty until the
    end, so a racing fault added a fresh small page that the huge folio then
    hid (its mapping leaked). As in v6.6+, the old folios stay in the page
    cache, locked, until the new folio replaces them all: the fault sleeps on
    the old folio's lock and, woken, finds it gone and retries."""
    from arch.base import Access
    m = machine(populate=False)
    k = m.kernel
    cache = m.mm.find_vma(BASE).file
    il = Interleaving(m)
    for page in (0, 1):  # pages 0 and 1 small and PTE-mapped
        il.start(1, k.handle_mm_fault(BASE + page * m.arch.page_size, Access.READ))
        il.finish()
    old = cache.lookup(0)
    il.start(0, k.collapse_file(cache, 0))
    # collapse holds page 0's lock and is isolating page 1
    il.run_until(0, lambda op: isinstance(op, s.DownWrite) and op.sem is cache.lookup(1).lock)
    il.start(1, k.handle_mm_fault(BASE, Access.READ))
    il.run_while_runnable(1)
    assert not il.tasks[1].done, "the fault must wait on the locked old folio"
    assert cache.lookup(0) is old and old.lock.writer == 0
    il.finish()
    il.pass_grace_period()
    assert cache.lookup(0).large and not old.in_cache
    assert audit(k) == []


def test_collapse_file_backs_off_a_pinned_page_and_keeps_the_file_intact():
    """A page with a reference collapse does not own (a GUP pin) is not
    collapsed: SCAN_PAGE_COUNT, and the rollback leaves the old folios the
    file's, unlocked, with nothing leaked."""
    from arch.base import Access
    from emu.kernel.khugepaged import SCAN_PAGE_COUNT
    m = machine(populate=False)
    k = m.kernel
    cache = m.mm.find_vma(BASE).file
    il = Interleaving(m)
    for page in (0, 1):
        il.start(1, k.handle_mm_fault(BASE + page * m.arch.page_size, Access.READ))
        il.finish()
    pinned = cache.lookup(1)
    pinned.get()  # as gup_fast's try_grab_folio() holds it
    free_before = m.frames.free_count()
    il.start(0, k.collapse_file(cache, 0))
    il.finish()
    assert il.tasks[0].result == SCAN_PAGE_COUNT
    assert cache.lookup(0) is not None and not cache.lookup(0).large
    assert cache.lookup(1) is pinned and pinned.in_cache and pinned.lock.writer is None
    k.put_folio(pinned)
    assert m.frames.free_count() == free_before
    assert audit(k) == []


@pytest.mark.parametrize("variant", [(), ("no_pmd_same_recheck",)])
def test_collapse_step4_rechecks_a_table_reclaimed_while_ptl_was_dropped(variant):
    """Regression: step 4 retook pmd_lock + ptl and collapsed whatever the pmd
    held; MADV_DONTNEED (mmap_read_lock only) can reclaim the empty table in
    between. Correct code rechecks pmd_same and gives up."""
    m = machine(variant, thp=True, pmd_mapping=False, populate=False)
    k = m.kernel
    from arch.base import Access
    il = Interleaving(m)
    il.start(1, k.handle_mm_fault(BASE, Access.READ))  # one PTE maps the THP's page 0
    il.finish()
    pmd_pa = pmd_of(m)
    pml = k.pmd_lockptr(m.mm, pmd_pa, BASE)

    def collapse():
        yield s.DownRead(m.mm.mmap_lock)
        r = yield from k.collapse_pte_mapped_thp(m.mm, BASE, True)
        yield s.UpRead(m.mm.mmap_lock)
        return r

    il.start(0, collapse())
    il.run_until(0, is_op(s.SpinLock, pml))  # steps 1-3 done, ptl dropped
    il.start(1, k.madvise_dontneed(m.mm, BASE, BASE + m.arch.pmd_size))
    il.run_while_runnable(1)
    assert il.tasks[1].done
    if variant:
        from emu.kernel.core import KernelBug
        with pytest.raises(KernelBug, match="free the table of a none pmd"):
            il.finish()
        return
    il.finish()
    il.pass_grace_period()
    assert audit(k) == []


@pytest.mark.parametrize("reads", [1, 2])
@pytest.mark.parametrize("variant", [(), ("no_lockless_sync",)])
def test_retract_waits_out_an_irqs_off_pmd_reader(variant, reads):
    """x86-PAE: GUP-fast has read half of the pmd with IRQs off when retract
    clears it. pmdp_get_lockless_sync() holds retract until that window
    closes; without it retract drops its locks with the reader still inside."""
    from emu.check.base import Violation
    from emu.check.lockless_sync import LocklessSync
    m = machine(variant, populate=4)
    m.add_checker(LocklessSync())
    k = m.kernel
    cache = m.mm.find_vma(BASE).file
    pmd_pa = pmd_of(m)
    il = Interleaving(m)
    il.start(0, k.gup_fast(m.mm, BASE, 1, False))
    # GUP-fast: IRQs off, then the low half of the pmd (and the high half)
    il.run_until(0, lambda op: isinstance(op, s.Load) and op.pa == pmd_pa)
    for _ in range(reads):
        il.step(0)

    def retract():
        yield from k.unmap_mapping_range(cache, 0, cache.size_pages)
        yield from k.retract_page_tables(cache, 0)

    il.start(1, retract())
    if variant:
        with pytest.raises(Violation, match="pmdp_get_lockless_sync"):
            il.run_while_runnable(1)
        return
    il.run_while_runnable(1)
    assert isinstance(il.tasks[1].pending, s.TlbRemoveTableSyncOne)  # waiting for cpu0
    assert il.tasks[1].blocked_on() == "TlbRemoveTableSyncOne IPI waiting for IRQs on at cpu0"
    il.finish()
    assert k.cpus[0].irq_off == 0 and il.tasks[1].done


@pytest.mark.parametrize("variant", [(), ("plain_two_load_read",)])
def test_lockless_pmd_read_never_returns_a_value_the_entry_never_held(variant):
    """The low half is read, then the whole pmd changes, then the high half:
    pmdp_get_lockless() sees the low half change and retries; two plain
    loads return a mix of the old low and the new high halves."""
    from emu.check.base import Violation
    from emu.check.torn import TornRead
    m = machine(variant, populate=False)
    m.add_checker(TornRead())
    k, a = m.kernel, m.arch
    pmd_pa = m.run_kernel_now(m.kernel.pmd_offset_alloc(m.mm, BASE, alloc=True), "pmd")
    il = Interleaving(m)
    il.start(0, k.pmdp_get_lockless(pmd_pa))
    il.run_until(0, lambda op: isinstance(op, s.Load) and op.pa == pmd_pa + 4)  # low half read
    huge = a.mk_pmd_huge(0x400000, m.mm.find_vma(BASE).prot)  # NX: the high half is not 0
    il.start(1, k.set_entry("pmd", pmd_pa, huge))
    il.run_while_runnable(1)
    if variant:
        with pytest.raises(Violation, match="never held"):
            il.finish()
        return
    il.finish()
    assert il.tasks[0].result == huge


def test_collapse_finding_a_folio_that_truncate_is_removing():
    """Regression (found by PCT on collapse_truncate): collapse looked the huge
    folio up, slept on its lock while truncate removed and freed it, then took
    a reference on the freed folio and freed it again."""
    m = machine(thp=True, pmd_mapping=False, populate=2)
    k = m.kernel
    cache = m.mm.find_vma(BASE).file
    folio = cache.lookup(0)
    il = Interleaving(m)
    il.start(1, k.truncate(cache, 0))
    # truncate takes the folio lock and starts its second unmap pass; the folio
    # is still in the cache, so collapse finds it and sleeps on the lock
    il.run_until(1, lambda op: isinstance(op, s.DownWrite) and op.sem is folio.lock)
    il.step(1)
    il.run_until(1, lambda op: isinstance(op, s.DownRead))

    def collapse():
        yield s.DownRead(m.mm.mmap_lock)
        r = yield from k.collapse_pte_mapped_thp(m.mm, BASE, True)
        yield s.UpRead(m.mm.mmap_lock)
        return r

    il.start(0, collapse())
    il.run_while_runnable(0)  # blocks on the folio lock
    il.finish()
    il.pass_grace_period()
    assert audit(k) == []


def test_fault_reading_a_half_cleared_pae_pte_retries():
    """Regression (found by PCT on walker-vs-retract): a fault's lockless read
    caught zap's PAE clear between its two stores (low=0, high=NX): neither
    none nor present. Linux rechecks under the ptl (pte_unmap_same()) and
    retries; the model returned SIGSEGV. Up to 6.1 ptep_get_and_clear() is
    xchg(low), then the high word, so the half-cleared pte is real there
    (6.2+ clears all 64 bits in one exchange)."""
    from arch.base import Access
    from emu.kernel.fault import VM_FAULT_RETRY_ACCESS
    m = machine(populate=1, version="6.1")
    k = m.kernel
    vma = m.mm.find_vma(BASE)
    il = Interleaving(m)
    il.start(1, k.zap_page_range(m.mm, vma, BASE, BASE + m.arch.page_size))
    # zap has cleared the low word of the pte, not yet the high one
    il.run_until(1, lambda op: isinstance(op, s.Store) and op.what.startswith("zap_pte_range")
                 and op.pa % 8 == 4)
    il.start(0, k.handle_mm_fault(BASE, Access.READ))
    il.run_until(0, is_op(s.SpinLock))  # read the half-cleared pte locklessly
    il.finish()
    assert il.tasks[0].result == VM_FAULT_RETRY_ACCESS


# ---- tests that each kill a mutant the suite used to let live (tools/mutate.py) -------------


def collapse_locked(m: Machine, install: bool = True):
    """collapse_pte_mapped_thp() under mmap_read_lock, as MADV_COLLAPSE calls it."""
    yield s.DownRead(m.mm.mmap_lock)
    r = yield from m.kernel.collapse_pte_mapped_thp(m.mm, BASE, install)
    yield s.UpRead(m.mm.mmap_lock)
    return r


def second_lock_of(lock):
    """run_until() predicate: the second time the task is about to take `lock`."""
    seen = []

    def pred(op):
        if isinstance(op, s.SpinLock) and op.lock is lock:
            if seen:
                return True
            seen.append(op)
        return False
    return pred


@pytest.mark.parametrize("variant", [(), ("no_pmd_same_recheck",)])
def test_collapse_step2_gives_up_on_a_table_retracted_before_its_ptl(variant):
    """The variant half of the rw_nolock contract, on its real caller: step 2
    maps the table with _rw_nolock, then retract detaches it before step 2
    has the ptl. The pmd_same() recheck makes collapse give up without
    touching the table; without it, step 2 reads the entries of a table
    whose free is already deferred (and goes on to collapse a pmd that is
    gone)."""
    m = machine(variant, thp=True, pmd_mapping=False)
    k = m.kernel
    obs = AccessesToDeadTables(m)
    m.add_checker(obs)
    cache = m.mm.find_vma(BASE).file
    pmd_pa = pmd_of(m)
    table = m.arch.table_pa("pmd", k.read_entry_now(pmd_pa, 8))
    ptl = k.pte_lockptr(m.mm, k.read_entry_now(pmd_pa, 8))
    il = Interleaving(m)
    il.start(0, collapse_locked(m))
    il.run_until(0, second_lock_of(ptl))  # step 1 done; step 2 has mapped the table
    il.start(1, zap_and_retract(k, cache))
    il.run_while_runnable(1)
    assert il.tasks[1].done
    assert m.frames.info(table).state is FrameState.RCU_PENDING
    if variant:
        with pytest.raises(KernelBug):
            il.finish()
        assert obs.bad and "collapse step 2" in obs.bad[0] and "rcu-pending" in obs.bad[0]
        return
    il.finish()
    from emu.kernel.khugepaged import SCAN_FAIL
    assert il.tasks[0].result == SCAN_FAIL and obs.bad == []
    assert k.cpus[0].rcu_nesting == 0 and not k.cpus[0].held
    il.pass_grace_period()
    assert m.frames.info(table).state is FrameState.FREE
    assert audit(k) == []


@pytest.mark.parametrize("variant", [(), ("pte_free_immediate",)])
def test_collapse_defers_the_free_of_the_table_it_removes(variant):
    """Step 4's own free, with no retract in the run (pte_free_immediate
    changes both call sites; this test fails if only collapse's is wrong):
    a pte_offset_map() reader on cpu1 holds the table that collapse removes,
    and the table stays allocated until that reader's pte_unmap()."""
    m = machine(variant, thp=True, pmd_mapping=False)
    k = m.kernel
    pmd_pa = pmd_of(m)
    table = m.arch.table_pa("pmd", k.read_entry_now(pmd_pa, 8))
    il = Interleaving(m)
    il.start(1, rcu_pte_reader(k, pmd_pa, BASE))
    il.run_until(1, about_to_read_pte)
    il.start(0, collapse_locked(m))
    il.run_while_runnable(0)
    from emu.kernel.khugepaged import SCAN_SUCCEED
    assert il.tasks[0].done and il.tasks[0].result == SCAN_SUCCEED
    assert m.arch.pmd_trans_huge(k.read_entry_now(pmd_pa, 8))
    il.pass_grace_period()  # cpu1 is still inside its read-side section
    state = m.frames.info(table).state
    if variant:
        assert state is FrameState.FREE, "pte_free_immediate frees under the reader"
        return
    assert state is FrameState.RCU_PENDING
    il.finish()
    il.pass_grace_period()
    assert m.frames.info(table).state is FrameState.FREE
    assert audit(k) == []


def test_collapse_abort_gives_back_what_step_2_took():
    """Step 2 has cleared pte 0 (one rmap and one reference taken off, rss
    not yet) when it finds pte 1 mapping another page (a CoW'd private copy:
    installed here by hand, the model has no CoW). The abort path flushes,
    drops the references and the rss it took, and unlocks: the books match
    the tables again."""
    m = machine(thp=True, pmd_mapping=False)
    k, a = m.kernel, m.arch
    pmd_pa = pmd_of(m)
    pmdval = k.read_entry_now(pmd_pa, 8)
    ptl = k.pte_lockptr(m.mm, pmdval)
    pte1 = k.entry_addr("pte", a.table_pa("pmd", pmdval), BASE + a.page_size)
    huge = m.mm.find_vma(BASE).file.lookup(0)
    il = Interleaving(m)
    il.start(0, collapse_locked(m))
    il.run_until(0, second_lock_of(ptl))  # step 1 passed; step 2 takes the ptl next

    def cow_pte1():
        copy = k.new_folio("anon", 1, "private copy of page 1")
        yield s.SpinLock(ptl)
        old = yield from k.read_entry("pte", pte1)
        copy.map()
        m.mm.rss[k.mm_counter_kind(copy)] += 1
        yield from k.set_entry("pte", pte1, a.mk_pte(copy.pa, m.mm.find_vma(BASE).prot))
        huge.unmap()
        k.put_folio(huge)
        m.mm.rss[k.mm_counter_kind(huge)] -= 1
        yield s.SpinUnlock(ptl)
        yield s.TlbFlushRange(BASE + a.page_size, BASE + 2 * a.page_size)
        return old

    il.start(1, cow_pte1())
    il.run_while_runnable(1)
    assert il.tasks[1].done
    il.finish()
    from emu.kernel.khugepaged import SCAN_FAIL
    assert il.tasks[0].result == SCAN_FAIL
    assert k.read_entry_now(pte1 - 8, 8) == 0, "step 2 had cleared pte 0"
    assert k.cpus[0].rcu_nesting == 0 and not k.cpus[0].held and ptl.owner is None
    assert audit(k) == []


def refs_taken(folio, before):
    """run_until() predicate: a pmd load after the folio's reference was grabbed."""
    return lambda op: isinstance(op, s.Load) and folio.refcount > before


@pytest.mark.parametrize("change", ["pte", "pmd"])
def test_gup_fast_drops_the_page_if_the_pte_or_pmd_changed_after_the_grab(change):
    """GUP-fast grabs the folio, then rechecks both the pmd and the pte: a
    zap (pte cleared) or a retract (pmd cleared) that lands between the read
    and the grab makes it drop the reference and pin nothing."""
    m = machine(populate=4)
    k = m.kernel
    pmd_pa = pmd_of(m)
    folio = m.mm.find_vma(BASE).file.lookup(0)
    before = folio.refcount
    il = Interleaving(m)
    il.start(0, k.gup_fast(m.mm, BASE, 1, False))
    il.run_until(0, refs_taken(folio, before))  # grabbed; the recheck is next
    if change == "pte":
        vma = m.mm.find_vma(BASE)
        il.start(1, k.zap_page_range(m.mm, vma, BASE, BASE + m.arch.page_size))
    else:
        il.start(1, clear_pmd(m, pmd_pa))
    il.run_while_runnable(1)  # the entry is cleared (a flush would wait for cpu0's IRQs)
    il.finish()
    assert il.tasks[0].result == []
    assert folio.refcount == before - (1 if change == "pte" else 0)
    assert k.cpus[0].irq_off == 0 and k.cpus[0].rcu_nesting == 0


def test_gup_fast_drops_a_huge_page_if_the_pmd_changed_after_the_grab():
    """The first of two PMD-mapped huge pages is zapped between GUP-fast's
    read of its pmd and the recheck after the grab: GUP-fast drops the
    reference and stops there (the second huge page is not pinned either)."""
    m = machine(thp=True, pmd_mapping=True, size="2 * pmd_size")
    k = m.kernel
    pmd_pa = pmd_of(m)
    assert m.arch.pmd_trans_huge(k.read_entry_now(pmd_pa, 8))
    assert m.arch.pmd_trans_huge(k.read_entry_now(pmd_of(m, BASE + m.arch.pmd_size), 8))
    folio = m.mm.find_vma(BASE).file.lookup(0)
    before = folio.refcount
    il = Interleaving(m)
    il.start(0, k.gup_fast(m.mm, BASE, 2 * m.arch.pmd_size // m.arch.page_size, False))
    il.run_until(0, refs_taken(folio, before))
    vma = m.mm.find_vma(BASE)
    il.start(1, k.zap_page_range(m.mm, vma, BASE, BASE + m.arch.pmd_size))
    il.run_while_runnable(1)
    il.finish()
    assert il.tasks[0].result == []
    assert folio.refcount == before - 1  # the pmd mapping's reference went with the zap
    il.pass_grace_period()
    assert audit(k) == []


def test_gup_fast_pins_one_reference_per_page_of_a_huge_pmd():
    m = machine(thp=True, pmd_mapping=True)
    k = m.kernel
    folio = m.mm.find_vma(BASE).file.lookup(0)
    before = folio.refcount
    il = Interleaving(m)
    il.start(0, k.gup_fast(m.mm, BASE + m.arch.page_size, 3, False))
    il.finish()
    pinned = il.tasks[0].result
    ps = m.arch.page_size
    assert [pa for pa, _ in pinned] == [folio.pa + i * ps for i in (1, 2, 3)]
    assert folio.refcount == before + 3
    assert audit(k, pins=3) == []
    k.unpin_user_pages(pinned)
    assert folio.refcount == before and audit(k) == []


def old_clean_pte(m: Machine, ptep: int) -> int:
    """Make the x86-PAE pte at ptep old and clean (A and D clear): a fault has bits to set."""
    from arch import x86_pae
    a = m.arch
    val = m.kernel.read_entry_now(ptep, 8) & ~(x86_pae.A | x86_pae.D)
    m.kernel.mem.write_int(ptep, 8, val, a.byteorder)
    return val


@pytest.mark.parametrize("access", ["READ", "WRITE"])
def test_fault_leaves_a_pte_zapped_after_its_lockless_read_alone(access):
    """handle_pte_fault() read a present pte locklessly; a zap clears it before
    the fault has the ptl. pte_same() under the ptl fails, so the fault
    retries without writing young/dirty bits into the now-empty entry."""
    from arch.base import Access
    from emu.kernel.fault import VM_FAULT_RETRY_ACCESS
    m = machine(populate=1)
    k, a = m.kernel, m.arch
    pmd_pa = pmd_of(m)
    ptep = k.entry_addr("pte", a.table_pa("pmd", k.read_entry_now(pmd_pa, 8)), BASE)
    # an old, clean pte: the fault has young (and dirty) bits to set
    old_clean_pte(m, ptep)
    il = Interleaving(m)
    il.start(0, k.handle_mm_fault(BASE, Access[access]))
    il.run_until(0, is_op(s.SpinLock))  # orig_pte read; the ptl is next
    vma = m.mm.find_vma(BASE)
    il.start(1, k.zap_page_range(m.mm, vma, BASE, BASE + a.page_size))
    il.run_while_runnable(1)
    assert il.tasks[1].done
    il.finish()
    assert il.tasks[0].result == VM_FAULT_RETRY_ACCESS
    assert a.pte_none(k.read_entry_now(ptep, 8))
    il.pass_grace_period()
    assert audit(k) == []


@pytest.mark.parametrize("access", ["READ", "WRITE"])
def test_fault_on_an_old_clean_pte_makes_it_young_and_dirty_on_write(access):
    from arch.base import Access
    m = machine(populate=1)
    k, a = m.kernel, m.arch
    pmd_pa = pmd_of(m)
    ptep = k.entry_addr("pte", a.table_pa("pmd", k.read_entry_now(pmd_pa, 8)), BASE)
    clean = old_clean_pte(m, ptep)
    il = Interleaving(m)
    il.start(0, k.handle_mm_fault(BASE, Access[access]))
    il.finish()
    want = a.pte_mkyoung(clean)
    if access == "WRITE":
        want = a.pte_mkdirty(want)
    assert want != clean and k.read_entry_now(ptep, 8) == want


def test_truncate_that_grows_the_file_unmaps_nothing():
    m = machine(populate=4)
    k = m.kernel
    cache = m.mm.find_vma(BASE).file
    size = cache.size_pages
    rss = dict(m.mm.rss)
    il = Interleaving(m)
    il.start(0, k.truncate(cache, size + 8))
    il.finish()
    assert il.tasks[0].result == 0 and cache.size_pages == size + 8
    assert m.mm.rss == rss and audit(k) == []


def test_a_porters_policy_file_replaces_the_arch_table_policy():
    """[kernel] override naming a TablePolicy subclass swaps the pte_free_defer
    policy: porter_example's flush-then-free frees a retracted table at
    once, under a reader the correct policy would have waited for."""
    from emu.kernel.pgalloc import TablePolicy
    sc = scenario.load("porter_example")
    m = Machine(sc)
    policy = m.kernel.policy
    assert isinstance(policy, TablePolicy) and policy.name == "flush-then-free"
    assert Machine(scenario.load("retract_x86")).kernel.policy.name != "flush-then-free"


def test_a_kernel_mixin_file_overrides_a_routine(tmp_path):
    (tmp_path / "patch.py").write_text(
        "class NoCollapse:\n"
        "    def collapse_pte_mapped_thp(self, mm, addr, install_pmd):\n"
        "        return 0\n"
        "        yield\n")
    text = f"""
    [machine]
    arch = "x86-pae"
    cpus = 1
    memory_mib = 32
    [kernel]
    override = "patch.py:NoCollapse"
    [[vma]]
    start = {BASE}
    size = "pmd_size"
    kind = "shmem"
    populate = true
    thp = true
    pmd_mapping = false
    [[cpu]]
    program = "touch"
    args = [{BASE}, 1, 4096]
    """
    m = Machine(scenario.parse(textwrap.dedent(text), "<test>", base_dir=tmp_path))
    il = Interleaving(m)
    il.start(0, collapse_locked(m))
    il.finish()
    assert il.tasks[0].result == 0
    assert not m.arch.pmd_trans_huge(m.kernel.read_entry_now(pmd_of(m), 8))


def test_a_users_override_takes_precedence_over_named_variants(tmp_path):
    (tmp_path / "mine.py").write_text(
        "class Mine:\n"
        "    def pte_free_defer(self, mm, pa):\n"
        "        self.mine_called = True\n"
        "        yield from super().pte_free_defer(mm, pa)\n")
    from emu.kernel.variants import build_kernel_class
    cls = build_kernel_class(["collapse_no_clear", "pte_free_immediate"], "mine.py:Mine",
                             tmp_path)
    assert cls.pte_free_defer.__qualname__ == "Mine.pte_free_defer"
    assert [c.__name__ for c in cls.__mro__[1:4]] == ["Mine", "CollapseNoClear",
                                                       "PteFreeImmediate"]


def test_a_reader_whose_irqs_off_window_closed_is_owed_no_sync():
    """GUP-fast read the pmd with IRQs off and finished before retract clears
    it: even without pmdp_get_lockless_sync() nobody can pair stale halves,
    so the lockless-sync rule has nothing to report."""
    from emu.check.lockless_sync import LocklessSync
    m = machine(("no_lockless_sync",), populate=4)
    m.add_checker(LocklessSync())
    k = m.kernel
    cache = m.mm.find_vma(BASE).file
    il = Interleaving(m)
    il.start(0, k.gup_fast(m.mm, BASE, 1, False))
    il.finish()
    assert len(il.tasks[0].result) == 1
    k.unpin_user_pages(il.tasks[0].result)

    def retract():
        yield from k.unmap_mapping_range(cache, 0, cache.size_pages)
        yield from k.retract_page_tables(cache, 0)

    il.start(1, retract())
    il.finish()  # no Violation
    assert il.tasks[1].done


def test_a_plain_two_load_read_is_right_when_nothing_races_it():
    """plain_two_load_read is wrong only under a racing writer: alone, its two
    loads return the entry (so its reports come from the race, not the read)."""
    m = machine(("plain_two_load_read",), thp=True, pmd_mapping=True)
    k = m.kernel
    pmd_pa = pmd_of(m)
    want = k.read_entry_now(pmd_pa, 8)
    assert want >> 32, "a huge pmd has NX in its high half"
    il = Interleaving(m)
    il.start(0, k.pmdp_get_lockless(pmd_pa))
    il.finish()
    assert il.tasks[0].result == want


def test_madvise_dontneed_outside_any_vma_is_einval():
    m = machine()
    il = Interleaving(m)
    il.start(0, m.kernel.madvise_dontneed(m.mm, 0x3000_0000, 0x3000_1000))
    il.finish()
    assert il.tasks[0].result == -22
    assert m.kernel.cpus[0].held == []


@pytest.mark.parametrize("arch", ["x86-pae", "powerpc", "s390", "sparc64"])
def test_madvise_dontneed_where_no_table_exists_allocates_none(arch):
    """Empty-table reclaim looks for the table without allocating: over a
    range never faulted, MADV_DONTNEED leaves the page-table frames as they
    were."""
    m = machine(arch=arch, populate=False)
    k = m.kernel
    before = [fi.state for fi in m.frames.frames]
    il = Interleaving(m)
    il.start(0, k.madvise_dontneed(m.mm, BASE, BASE + m.arch.pmd_size))
    il.finish()
    assert il.tasks[0].result == 0
    assert [fi.state for fi in m.frames.frames] == before
    il.pass_grace_period()
    assert audit(k) == []


def test_make_coherent_makes_the_faulting_mapping_uncached_when_it_has_an_alias():
    """Linux's make_coherent(): `if (aliases) do_adjust_pte(vma, addr, pfn, ptep)` — the
    new mapping goes uncached with its present alias, or the two still alias in the cache."""
    from arch import x86_pae
    from arch.base import Access
    m = two_mappings()
    k = m.kernel
    b = BASE + 2 * m.arch.pmd_size
    il = Interleaving(m)
    il.start(0, k.handle_mm_fault(BASE, Access.READ))
    il.finish()

    def pte_at(addr: int) -> int:
        table = m.arch.table_pa("pmd", k.read_entry_now(pmd_of(m, addr), 8))
        return k.read_entry_now(table + m.arch.level("pte").index(addr) * 8, 8)

    a_pte, b_pte = pte_at(BASE), pte_at(b)
    assert m.arch.pte_present(a_pte) and m.arch.pte_pa(a_pte) == m.arch.pte_pa(b_pte)
    assert b_pte & x86_pae.PCD and a_pte & x86_pae.PCD
