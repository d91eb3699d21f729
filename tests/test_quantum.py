"""--quantum: guest slices that end before every load and store, trap and
TLB miss; every shipped variant still found, every correct scenario clean."""

from __future__ import annotations

import pytest

from emu import scenario
from emu.explore import ExploreConfig, explore
from emu.machine import Machine
from emu.sched import RandomStrategy, RoundRobin

SPIN = '''
[machine]
arch = "x86-pae"
cpus = 1
memory_mib = 16
[[vma]]
start = 0x10000000
size = "page_size"
kind = "anon"
populate = true
[[cpu]]
asm = """
    mov ecx, 50
spin:
    add eax, 3
    xor edx, eax
    dec ecx
    jnz spin
    mov ebx, 0x10000000
    mov dword ptr [ebx], eax
    mov esi, dword ptr [ebx]
    cmp esi, eax
    jne bad
    mov eax, SYS_exit
    xor ebx, ebx
    int 0x80
bad:
    mov eax, SYS_exit
    mov ebx, 1
    int 0x80
"""
'''


def spin_machine(quantum: int) -> Machine:
    m = Machine(scenario.parse(SPIN))
    for c in m.cpus:
        c.quantum = quantum
    return m


def test_register_work_runs_in_slices_and_each_load_and_store_is_a_step():
    one = spin_machine(1)
    r1 = one.run(RoundRobin())
    sliced = spin_machine(64)
    r64 = sliced.run(RoundRobin())
    assert r1.ok and r64.ok and r1.exit_codes == r64.exit_codes == {0: 0}
    def guest_steps(m: Machine) -> int:
        return sum(1 for rec in m.trace.records if rec[2] == "guest")
    # the same walks and faults; 200 spin instructions in a handful of slices
    assert guest_steps(one) > 200 and guest_steps(sliced) < 20
    assert r1.steps - guest_steps(one) == r64.steps - guest_steps(sliced)
    guest = [ln for ln in sliced.trace_lines() if "guest" in ln]
    # the store and the load each start a guest step of their own
    assert any("mov dword ptr [ebx], eax" in ln for ln in guest)
    assert any("mov esi, dword ptr [ebx]" in ln for ln in guest)


def test_quantum_one_is_the_machine_as_it_was():
    a = spin_machine(1).run(RandomStrategy(5))
    b = Machine(scenario.parse(SPIN)).run(RandomStrategy(5))
    assert (a.steps, a.schedule, a.trace_digest) == (b.steps, b.schedule, b.trace_digest)


def test_slices_are_deterministic():
    digests = {spin_machine(16).run(RandomStrategy(3)).trace_digest for _ in range(3)}
    assert len(digests) == 1


def test_a_failure_found_in_slices_replays_from_its_report(tmp_path):
    cfg = ExploreConfig("lockless_sync_pae", variants=("no_lockless_sync",), schedules=200,
                        quantum=16)
    res = explore(cfg)
    assert res.report is not None and res.report.kind == "lockless-sync"
    assert res.report.quantum == 16
    from emu.api import replay
    path = tmp_path / "f.json"
    path.write_text(res.report.to_json())
    out = replay(path)
    assert out.report is not None and out.report.kind == "lockless-sync"


@pytest.mark.parametrize("name,variant,kind", [
    ("lockless_sync_pae", "no_lockless_sync", "lockless-sync"),
    ("collapse_fault", "missing_pte_unmap", "imbalance"),
    ("retract_x86", "pte_free_immediate", "use-after-free"),
])
def test_variants_are_still_found_in_slices(name, variant, kind):
    res = explore(ExploreConfig(name, variants=(variant,), schedules=1000, minimize=False,
                                quantum=64))
    assert res.failure is not None and res.failure.kind == kind


@pytest.mark.parametrize("name", ["torn_pae", "retract_x86", "collapse_gup"])
def test_correct_scenarios_stay_clean_in_slices(name):
    res = explore(ExploreConfig(name, schedules=60, minimize=False, quantum=64))
    assert res.failure is None


@pytest.mark.slow
def test_every_results_table_cell_keeps_its_verdict_in_slices():
    import results_table
    bad = []
    for name, arch, variant in results_table.cells([]):
        text, ok, _ = results_table.run_cell(name, arch, variant, clean=300, budget=1000,
                                             depth=2, jobs=1, seed=0, quantum=64)
        if not ok:
            bad.append((name, arch, variant, text))
    assert not bad


FOLD = '''
description = "cpu0 folds one page into a checksum in a register loop; cpu1 zaps that page."
[machine]
arch = "x86-pae"
cpus = 2
memory_mib = 16
[[vma]]
start = 0x10000000
size = "page_size"
kind = "anon"
populate = true
[[cpu]]
asm = """
    mov ecx, 6
    mov ebx, 0x10000000
fold:
    mov eax, dword ptr [ebx]
    imul eax, eax, 7
    add eax, 13
    xor eax, 0x55
    shl eax, 1
    add edx, eax
    dec ecx
    jnz fold
    mov eax, SYS_exit
    xor ebx, ebx
    int 0x80
"""
[[cpu]]
program = "madvise_dontneed"
args = [0x10000000, "page_size"]
'''


@pytest.mark.slow
def test_slices_shrink_the_exhaustive_search_of_a_guest_loop(tmp_path):
    path = tmp_path / "fold.toml"
    path.write_text(FOLD)
    counts = {}
    for q in (1, 64):
        res = explore(ExploreConfig(str(path), strategy="exhaustive", depth=1, schedules=5000,
                                    minimize=False, quantum=q))
        assert res.failure is None and res.stats.exhausted
        counts[q] = res.stats.interleavings
    assert counts[64] < counts[1]  # 119 < 165 when measured
