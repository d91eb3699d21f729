"""Checker edge cases, each driven by the hooks the machine calls: a value an
entry held before the first recorded store, full-width and half stores, the
table-pointer provenance of a reader. Each test fails on a checker that
forgets one of these (found by tools/mutate.py)."""

from __future__ import annotations

import textwrap

import pytest

from emu import scenario
from emu.check import Accounting, TornRead, UseAfterFree
from emu.check.base import Violation
from emu.kernel import steps as s
from emu.kernel.sync import Spinlock
from emu.machine import Machine
from emu.physmem import FrameState
from emu.sched import RandomStrategy

BASE = 0x1000_0000


def machine(checkers) -> Machine:
    text = f"""
    [machine]
    arch = "x86-pae"
    cpus = 2
    memory_mib = 32

    [[vma]]
    start = {BASE}
    size = "pmd_size"
    kind = "shmem"
    populate = 4

    [[cpu]]
    program = "touch"
    args = [{BASE}, 1, 4096]
    """
    return Machine(scenario.parse(textwrap.dedent(text), "<t>"), checkers=list(checkers))


def first_pte(m: Machine) -> int:
    """Physical address of the first pte of BASE's (populated) pte table."""
    k = m.kernel
    pmd_pa = m.run_kernel_now(k.pmd_offset_alloc(m.mm, BASE, alloc=False), "pmd")
    a = m.arch
    pmdval = m.mem.read_int(pmd_pa, a.level("pmd").entry_size, a.byteorder)
    return a.table_pa("pmd", pmdval)


def store(m: Machine, pa: int, size: int, value: int) -> None:
    """A kernel store as the kernel makes it: the hook first, then memory."""
    m.on_kernel_store(0, pa, size, value, "set_pte")
    m.mem.write_int(pa, size, value, m.arch.byteorder)


def observe(m: Machine, pa: int, value: int) -> None:
    """cpu1's lockless reader concludes `value` for the 8-byte entry at pa."""
    m.on_observed(1, s.Observed(pa, 8, value, "ptep_get_lockless"))


def test_torn_read_accepts_the_value_an_entry_held_before_its_first_store():
    m = machine([TornRead()])
    pte = first_pte(m)
    before = m.mem.read_int(pte, 8, m.arch.byteorder)
    assert before  # populated
    store(m, pte, 8, 0)
    # a reader that loaded the entry before the store concludes its old value
    observe(m, pte, before)


def test_torn_read_remembers_every_full_width_value_and_flags_a_mix():
    m = machine([TornRead()])
    pte = first_pte(m)
    v0 = m.mem.read_int(pte, 8, m.arch.byteorder)
    v1, v2 = 0x1_2345_6067, 0x2_6543_2067
    store(m, pte, 8, v1)
    store(m, pte, 8, v2)
    observe(m, pte, v1)  # held, if briefly
    observe(m, pte, v0)
    torn = (v2 & ~0xFFFF_FFFF) | (v0 & 0xFFFF_FFFF)
    with pytest.raises(Violation, match="never held") as exc:
        observe(m, pte, torn)
    assert exc.value.checker == "torn-read" and exc.value.cpu == 1


def test_torn_read_records_a_half_store_as_the_whole_entry_it_makes():
    m = machine([TornRead()])
    pte = first_pte(m)
    v0 = m.mem.read_int(pte, 8, m.arch.byteorder)
    store(m, pte + 4, 4, 0x7)  # the high half first (set_pte's order)
    mid = (0x7 << 32) | (v0 & 0xFFFF_FFFF)
    store(m, pte, 4, 0x1067)
    observe(m, pte, mid)
    with pytest.raises(Violation):
        observe(m, pte, (v0 & ~0xFFFF_FFFF) | 0x1067)


def test_accounting_runs_the_callbacks_a_run_left_queued_then_closes_the_books():
    acc = Accounting()
    m = machine([acc])
    assert m.run(RandomStrategy(0)).violation is None
    ran = []
    m.kernel.perform(0, s.CallRcu(lambda: ran.append(True), "test callback"))
    acc.on_run_end()  # rcu_barrier(): the callback runs, the audit passes
    assert ran == [True] and not m.kernel.rcu.callbacks



def test_use_after_free_flags_each_kind_of_touch_of_a_freed_table():
    uaf = UseAfterFree()
    m = machine([uaf])
    pte = first_pte(m)
    frame = m.frames.frame_base(pte)
    # a store outside RAM, and touches of the live table, are no use after free
    uaf.on_kernel_store(0, m.frames.frame_size * 10**7, 8, 0, "set_pte")
    uaf.on_kernel_store(0, pte, 8, 0, "set_pte")
    uaf.on_walker_write(0, pte, 8, 0x20, "pte")
    m.frames.free(frame, 1, "test: pte table freed")
    lock = Spinlock("ptl", page=frame)
    touches = [
        lambda: uaf.on_walker_write(0, pte, 8, 0x20, "pte"),
        lambda: uaf.on_walker_read(0, pte, 8, 0, "pte"),
        lambda: uaf.on_kernel_load(0, pte, 8, 0, "ptep_get"),
        lambda: uaf.on_kernel_store(0, pte, 8, 0, "set_pte"),
        lambda: uaf.on_kernel_step(0, s.SpinLock(lock)),
    ]
    for touch in touches:
        with pytest.raises(Violation, match="freed frame") as exc:
            touch()
        assert exc.value.checker == "use-after-free" and exc.value.frame == frame


def test_use_after_free_flags_a_store_into_a_table_waiting_for_its_grace_period():
    uaf = UseAfterFree()
    m = machine([uaf])
    pte = first_pte(m)
    frame = m.frames.frame_base(pte)
    m.frames.set_state(frame, FrameState.RCU_PENDING, 1, "test: pte_free_defer")
    uaf.on_kernel_load(0, pte, 8, 0, "ptep_get")  # a read of it is legal
    with pytest.raises(Violation, match="waiting for its grace period"):
        uaf.on_kernel_store(0, pte, 8, 0, "set_pte")


def lockless_sync_machine(arch: str = "x86-pae"):
    from emu.check import LocklessSync
    text = f"""
    [machine]
    arch = "{arch}"
    cpus = 2
    memory_mib = 32

    [[vma]]
    start = {BASE}
    size = "pmd_size"
    kind = "shmem"
    populate = 1

    [[cpu]]
    program = "touch"
    args = [{BASE}, 1, 4096]
    """
    chk = LocklessSync()
    m = Machine(scenario.parse(textwrap.dedent(text), "<t>"), checkers=[chk])
    pmd_pa = m.run_kernel_now(m.kernel.pmd_offset_alloc(m.mm, BASE, alloc=False), "pmd")
    return m, chk, pmd_pa


def lockless_race(m, pmd_pa, *, reader_leaves=False, sync=False, same_cpu=False,
                  other_entry=False):
    """cpu1 opens an IRQs-off pmdp_get_lockless() window on the pmd; cpu0 (or
    cpu1 itself) clears it with pmdp_collapse_flush() and drops the pmd lock."""
    k = m.kernel
    lock = Spinlock("pmd lock")
    k.cpus[1].irq_off = 1
    m.trace_kernel(1, "reader", s.IrqDisable())
    m.trace_kernel(1, "reader", s.Load(pmd_pa + 4, 4, "pmdp_get_lockless high"))
    if reader_leaves:
        k.cpus[1].irq_off = 0
        m.trace_kernel(1, "reader", s.IrqEnable())
    writer = 1 if same_cpu else 0
    target = pmd_pa + 8 if other_entry else pmd_pa
    m.trace_kernel(writer, "collapse", s.Store(target, 4, 0, "pmdp_collapse_flush low"))
    if sync:
        m.trace_kernel(writer, "collapse", s.TlbRemoveTableSyncOne())
    m.trace_kernel(writer, "collapse", s.SpinUnlock(lock))


def test_lockless_sync_flags_a_pmd_clear_left_while_a_reader_is_inside_its_window():
    m, chk, pmd_pa = lockless_sync_machine()
    assert chk.active
    with pytest.raises(Violation, match="rule: cpu0 cleared a pmd"):
        lockless_race(m, pmd_pa)


@pytest.mark.parametrize("how", ["reader_leaves", "sync", "same_cpu", "other_entry"])
def test_lockless_sync_is_quiet_when_the_reader_cannot_pair_halves(how):
    m, chk, pmd_pa = lockless_sync_machine()
    lockless_race(m, pmd_pa, **{how: True})
    # the writer owes nothing afterwards: a later unlock is quiet too
    m.trace_kernel(0, "collapse", s.SpinUnlock(Spinlock("pmd lock")))


@pytest.mark.parametrize("arch", ["arm", "s390"])
def test_lockless_sync_is_off_where_pmd_reads_do_not_tear(arch):
    m, chk, pmd_pa = lockless_sync_machine(arch)
    assert not chk.active
    lockless_race(m, pmd_pa)


def test_detached_table_flags_a_store_only_by_the_holder_of_that_tables_lock():
    from emu.check import DetachedTable
    det = DetachedTable()
    m = machine([det])
    pte = first_pte(m)
    frame = m.frames.frame_base(pte)
    other = m.frames.alloc("another table", 0, FrameState.PGTABLE, level="pte")
    m.frames.set_state(frame, FrameState.RCU_PENDING, 1, "test: pte_free_defer")
    held = m.kernel.cpus[0].held
    held.append(Spinlock("another ptl", page=other))
    held.append(Spinlock("page_table_lock"))  # a lock in no table page
    det.on_kernel_store(0, pte, 8, 0, "set_pte")  # not this table's ptl: no rule broken
    held.append(Spinlock("ptl", page=frame))
    with pytest.raises(Violation, match="update is lost"):
        det.on_kernel_store(0, pte, 8, 0, "set_pte")


def test_torn_read_remembers_the_values_walker_ad_updates_put_in_an_entry():
    """A lockless reader may conclude the value of an A/D update that a later
    update replaced: the walker's writes are history too."""
    torn = TornRead()
    m = machine([torn])
    pte = first_pte(m)
    v0 = m.mem.read_int(pte, 8, m.arch.byteorder) & ~0x60
    m.mem.write_int(pte, 8, v0, m.arch.byteorder)  # old and clean
    young = v0 | 0x20  # _PAGE_ACCESSED
    for value in (young, young | 0x40):  # then _PAGE_DIRTY, as the walker's hook reports them
        torn.on_walker_write(0, pte, 8, value, "pte")
        m.mem.write_int(pte, 8, value, m.arch.byteorder)
    store(m, pte, 8, 0)
    observe(m, pte, young)
    with pytest.raises(Violation, match="never held"):
        observe(m, pte, v0 | 0x40)  # dirty but not young: never there


def test_frame_story_tells_the_last_four_events_oldest_first():
    from emu.check.uaf import frame_story
    m = machine([])
    pa = m.frames.alloc("story", 0)
    for i in range(3):
        m.frames.free(pa, 0, f"free {i}")
        while m.frames.alloc("story", 0) != pa:
            pass
    fi = m.frames.info(pa)
    story = frame_story(fi)
    assert story.count("step ") == 4
    assert story.endswith(fi.history[-1].what) and fi.history[-4].what in story.split(";")[0]
    assert fi.history[-5].what not in story or fi.history[-5].what == fi.history[-3].what


def s390_halves_machine(checkers) -> Machine:
    """s390 as Linux <= 6.7 has it: two 2 KiB pte tables share a page."""
    text = f"""
    [machine]
    arch = "s390"
    cpus = 2
    memory_mib = 32
    [kernel]
    version = "6.6"
    [[vma]]
    start = {BASE}
    size = "pmd_size"
    kind = "anon"
    populate = 1
    [[cpu]]
    program = "touch"
    args = [{BASE}, 1, 4096]
    """
    return Machine(scenario.parse(textwrap.dedent(text), "<t>"), checkers=list(checkers))


def test_detached_table_flags_a_store_into_any_half_of_a_page_waiting_for_rcu():
    """s390 (tables ≤ 6.7: two 2 KiB pte tables per page): once the page's free
    is deferred, a store into either half by its ptl holder is lost, even into
    the half that was freed first (its sub-table state says "free")."""
    from emu.check import DetachedTable
    det = DetachedTable()
    m = s390_halves_machine([det])
    pte = first_pte(m)
    frame = m.frames.frame_base(pte)
    fi = m.frames.info(frame)
    half = m.kernel.policy.half_size(m.kernel)
    assert fi.subtables  # this page holds halves
    m.frames.set_state(frame, FrameState.RCU_PENDING, 1, "test: call_rcu(pte_free_now)")
    fi.subtables.update({0: "free", half: "pending"})
    m.kernel.cpus[0].held.append(Spinlock("ptl", page=frame))
    for off in (0, half):
        with pytest.raises(Violation, match="update is lost"):
            det.on_kernel_store(0, frame + off, 8, 0, "set_pte")


def test_use_after_free_flags_a_touch_of_a_freed_half_of_a_live_table_page():
    uaf = UseAfterFree()
    m = s390_halves_machine([uaf])
    pte = first_pte(m)
    frame = m.frames.frame_base(pte)
    fi = m.frames.info(frame)
    half = m.kernel.policy.half_size(m.kernel)
    assert fi.state is FrameState.PGTABLE and pte == frame  # the table in the first half
    fi.subtables[half] = "free"  # the other half: freed, the page lives on
    uaf.on_walker_read(0, pte, 8, 0, "pte")  # the live half: fine
    with pytest.raises(Violation, match="page-table fragment that was freed") as exc:
        uaf.on_walker_read(0, frame + half + 8, 8, 0, "pte")
    assert exc.value.frame == frame


def test_wild_pointer_flags_a_kernel_load_from_a_data_frame_and_names_what_it_followed():
    from emu.check import WildPointer
    wild = WildPointer()
    m = machine([wild])
    data = m.frames.alloc("anon page", 0)
    wild.on_lockless_value(1, 0x1234, 8, 0xabc067, "pmdp_get_lockless")
    with pytest.raises(Violation) as exc:
        wild.on_kernel_load(0, data, 8, 0, "ptep_get")
    assert "a data frame (anon page), never a page table of this mm. Frame history" \
        in exc.value.message  # cpu0 followed nothing: no source sentence
    with pytest.raises(Violation, match="It followed the value 0xabc067 that "
                       "pmdp_get_lockless of the entry at 0x1234"):
        wild.on_kernel_load(1, data, 8, 0, "ptep_get")
    wild.on_service_end(1, "gup_fast")  # the call is over: what it followed is forgotten
    with pytest.raises(Violation) as exc:
        wild.on_kernel_load(1, data, 8, 0, "ptep_get")
    assert "It followed" not in exc.value.message


def test_wild_pointer_leaves_freed_tables_to_use_after_free_but_flags_never_allocated_frames():
    from emu.check import WildPointer
    wild = WildPointer()
    m = machine([wild])
    frame = m.frames.frame_base(first_pte(m))
    never = next(m.frames.pa(s.pfn) for s in m.frames.frames
                 if s.generation == 0 and s.state is FrameState.FREE)
    with pytest.raises(Violation, match="a frame never allocated"):
        wild.on_kernel_load(0, never, 8, 0, "ptep_get")
    m.frames.free(frame, 1, "test: pte table freed")
    wild.on_kernel_load(0, frame, 8, 0, "ptep_get")  # use-after-free's to report


def test_wild_pointer_checks_every_walker_read_below_the_root():
    """s390's walk reads its root (pud) table first, then the pmd: a pmd read
    landing in a data frame is wild."""
    from emu.check import WildPointer
    wild = WildPointer()
    m = s390_halves_machine([wild])
    data = m.frames.alloc("anon page", 0)
    with pytest.raises(Violation, match="walker reading a pmd entry"):
        wild.on_walker_read(0, data, 8, 0, "pmd")


def _secondary_read(m, chk, pa, filled):
    chk.on_kernel_step(0, s.SecondaryLoad(pa, 8, BASE, filled, None, "secondary read"))


def test_secondary_mmu_read_of_a_page_freed_before_its_fill_and_still_free_is_flagged():
    from emu.check import SecondaryStale
    chk = SecondaryStale()
    m = machine([chk])
    page = m.frames.alloc("anon page", 0)
    m.frames.step = 3
    m.frames.free(page, 1, "test: freed")
    with pytest.raises(Violation, match="was freed"):
        _secondary_read(m, chk, page, filled=5)


def test_secondary_mmu_read_of_a_page_freed_and_reused_before_its_fill_is_fine():
    """A frame freed at setup (step 0) and handed out again, read through a
    translation filled at the first step: the fill saw the new page."""
    from emu.check import SecondaryStale
    chk = SecondaryStale()
    m = machine([chk])
    m.frames.step = 0
    page = m.frames.alloc("anon page", 0)
    m.frames.free(page, 1, "test: freed")
    while m.frames.alloc("anon page", 0) != page:
        pass
    _secondary_read(m, chk, page, filled=0)
    _secondary_read(m, chk, page, filled=1)


def test_secondary_mmu_read_of_a_freed_half_is_flagged_from_its_first_byte():
    from emu.check import SecondaryStale
    chk = SecondaryStale()
    m = s390_halves_machine([chk])
    frame = m.frames.frame_base(first_pte(m))
    half = m.kernel.policy.half_size(m.kernel)
    m.frames.info(frame).subtables.update({0: "live", half: "free"})
    _secondary_read(m, chk, frame + half - 8, filled=5)  # the live half
    with pytest.raises(Violation):
        _secondary_read(m, chk, frame + half, filled=5)
