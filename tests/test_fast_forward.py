"""Fast-forward: a program's set-up before `race_begin` runs free when the
machine is built, and only what follows is interleaved."""

from __future__ import annotations

from pathlib import Path

from emu import scenario
from emu.explore import ExploreConfig, explore
from emu.machine import Machine
from emu.sched import RandomStrategy, RoundRobin


def torn_with_setup(marker: bool) -> str:
    """torn_pae with a real guest loop first on cpu0: 64 pages of a private
    heap faulted in and written, then (optionally) the marker, then the
    fault on the shmem THP range that GUP-fast on cpu1 races."""
    mark = '["race_begin"], ' if marker else ""
    return f'''
[machine]
arch = "x86-pae"
cpus = 2
memory_mib = 16

[[vma]]
start = "8 * pmd_size"
size = "pmd_size"
kind = "shmem"
thp = true
name = "shm"

[[vma]]
start = "12 * pmd_size"
size = "page_size"
kind = "anon"
populate = true
name = "gup-out"

[[vma]]
start = "14 * pmd_size"
size = "64 * page_size"
kind = "anon"
name = "scratch"

[[cpu]]
calls = [["touch_write", "14 * pmd_size", 64, "page_size"], {mark}["touch_write", "8 * pmd_size", 1, "page_size"]]

[[cpu]]
program = "gup"
args = ["8 * pmd_size", 1, "12 * pmd_size", 1]
'''


def write(tmp_path: Path, marker: bool) -> str:
    p = tmp_path / f"torn_setup_{int(marker)}.toml"
    p.write_text(torn_with_setup(marker))
    return str(p)


def test_setup_before_the_marker_is_no_step(tmp_path):
    plain = Machine(scenario.load(write(tmp_path, False))).run(RoundRobin())
    fast = Machine(scenario.load(write(tmp_path, True))).run(RoundRobin())
    assert plain.ok and fast.ok
    assert plain.exit_codes == fast.exit_codes == {0: 0, 1: 0}
    # 64 pages of faults and stores were steps; now they are set-up
    assert plain.steps > 10 * fast.steps


def test_setup_ran_to_the_marker_and_the_guest_goes_on_after_it(tmp_path):
    m = Machine(scenario.load(write(tmp_path, True)))
    heap = m.kernel.mm.find_vma(14 * m.arch.pmd_size)
    assert m.mm.rss.get("anon", 0) >= 64 + 1  # the loop's pages were faulted in at build
    assert heap is not None
    r = m.run(RoundRobin())
    assert r.ok and r.exit_codes == {0: 0, 1: 0}


def test_a_program_without_the_marker_is_not_fast_forwarded(tmp_path):
    m = Machine(scenario.load(write(tmp_path, False)))
    assert m.cpus[0].pc == m.programs[0].base and m.cpus[1].pc == m.programs[1].base


def test_fast_forwarded_runs_are_deterministic(tmp_path):
    path = write(tmp_path, True)
    digests = {Machine(scenario.load(path)).run(RandomStrategy(7)).trace_digest for _ in range(3)}
    assert len(digests) == 1


def test_the_torn_read_hidden_by_a_long_setup_is_found_once_it_is_fast_forwarded(tmp_path):
    path = write(tmp_path, True)
    bug = explore(ExploreConfig(path, variants=("plain_two_load_read",), schedules=200,
                                minimize=False))
    assert bug.failure is not None and bug.failure.kind == "torn-read"
    clean = explore(ExploreConfig(path, schedules=60, minimize=False))
    assert clean.failure is None


def test_race_begin_again_under_the_schedule_is_a_no_op(tmp_path):
    text = torn_with_setup(True).replace('["race_begin"], ', '["race_begin"], ["race_begin"], ')
    p = tmp_path / "twice.toml"
    p.write_text(text)
    r = Machine(scenario.load(str(p))).run(RoundRobin())
    assert r.ok and r.exit_codes == {0: 0, 1: 0}


def test_setup_that_refills_a_tlb_entry_explores(tmp_path):
    """A set-up whose guest uses a TLB entry again after Unicorn's TLB was
    flushed (a frame freed by its own MADV_DONTNEED) goes through the TLB
    model's refill while the exploring machine is still being built, before
    its memory is tracked: it must explore, not raise (a fuzz workload on arm
    found `'PhysMem' object has no attribute 'log'`)."""
    text = torn_with_setup(True).replace(
        '[["touch_write", "14 * pmd_size", 64, "page_size"], ',
        '[["touch_write", "14 * pmd_size", 4, "page_size"], '
        '["madvise", "14 * pmd_size + 8 * page_size", "page_size", 4], '
        '["touch_write", "14 * pmd_size + 8 * page_size", 1, "page_size"], '
        '["madvise", "14 * pmd_size + 8 * page_size", "page_size", 4], '
        '["touch_read", "14 * pmd_size", 4, "page_size"], ')
    p = tmp_path / "refill.toml"
    p.write_text(text)
    res = explore(ExploreConfig(str(p), schedules=5, minimize=False))
    assert res.failure is None and res.stats.schedules == 5
