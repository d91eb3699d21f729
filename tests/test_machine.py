"""End to end on x86-PAE: guest code, our MMU, the fault path, schedules, replay."""

from __future__ import annotations

import subprocess
import sys

from emu import scenario
from emu.machine import Machine
from emu.physmem import FrameState
from emu.sched import RandomStrategy, Replay, RoundRobin, decode

SMALL = """
[machine]
arch = "x86-pae"
cpus = 2
memory_mib = 32

[[vma]]
start = 0x10000000
size = "3 * pmd_size"
kind = "anon"

[[cpu]]
program = "touch"
args = [0x10000000, 24, "pmd_size // 8"]

[[cpu]]
program = "touch"
args = [0x10001000, 24, "pmd_size // 8"]
"""


def test_touch_scenario_completes_with_tables_in_arch_format():
    m = Machine(scenario.load("touch"))
    r = m.run(RandomStrategy(3))
    assert r.ok and r.exit_codes == {0: 0, 1: 0}
    assert m.mm.rss["anon"] == 1024
    # >= 3 leaf tables for the heap, each a frame marked as a pte table
    heap = m.mm.find_vma(0x10000000)
    tables = set()
    for va in range(heap.start, heap.end, m.arch.pmd_size):
        pmd_pa = m.run_kernel_now(m.kernel.pmd_offset_alloc(m.mm, va, alloc=False), "t")
        tables.add(m.arch.table_pa("pmd", m.kernel.read_entry_now(pmd_pa, 8)))
    assert len(tables) >= 3
    for t in tables:
        assert m.frames.info(t).state is FrameState.PGTABLE and m.frames.info(t).level == "pte"


def test_replay_reproduces_trace_and_memory(machine_from):
    m1 = machine_from(SMALL)
    r1 = m1.run(RandomStrategy(11))
    assert r1.ok
    m2 = machine_from(SMALL)
    r2 = m2.run(Replay(decode(r1.schedule), strict_end=True))
    assert (r2.trace_digest, r2.memory_digest, r2.schedule) == \
        (r1.trace_digest, r1.memory_digest, r1.schedule)


def user_view(m: Machine, vma_start: int) -> tuple:
    """The VMA's contents as the guest sees them through the page tables:
    (page, bytes) for every mapped page (physical placement left out)."""
    a, k = m.arch, m.kernel
    vma = m.mm.find_vma(vma_start)
    pages = []
    for va in range(vma.start, vma.end, a.page_size):
        pmd_pa = m.run_kernel_now(k.pmd_offset_alloc(m.mm, va, alloc=False), "view")
        if pmd_pa is None:
            continue
        pmd = k.read_entry_now(pmd_pa, a.level("pmd").entry_size)
        if a.entry_none("pmd", pmd):
            continue
        ptep = k.entry_addr("pte", a.table_pa("pmd", pmd), va)
        pte = k.read_entry_now(ptep, a.level("pte").entry_size)
        if a.pte_present(pte):
            pages.append((va, m.mem.read(a.pte_pa(pte), a.page_size)))
    return tuple(pages)


def test_different_seeds_interleave_differently(machine_from):
    runs = [machine_from(SMALL) for _ in range(3)]
    a = runs[0].run(RandomStrategy(1))
    b = runs[1].run(RandomStrategy(2))
    assert a.ok and b.ok and a.schedule != b.schedule
    rr = runs[2].run(RoundRobin())
    assert rr.ok
    # the end state of memory as the guest sees it does not depend on the
    # interleaving here (which CPU's fault got which frame does)
    views = [user_view(m, 0x10000000) for m in runs]
    assert len(views[0]) == 48 and all(any(data) for _, data in views[0])
    assert views[0] == views[1] == views[2]


def test_same_seed_same_trace_in_another_process():
    code = ("from emu import scenario; from emu.machine import Machine; "
            "from emu.sched import RandomStrategy; import textwrap; "
            f"sc = scenario.parse({SMALL!r}); r = Machine(sc).run(RandomStrategy(7)); "
            "print(r.trace_digest, r.memory_digest)")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, env={"PYTHONHASHSEED": str(seed), "PATH": ""}).stdout
            for seed in (1, 2)}
    assert len(outs) == 1


def test_snapshot_reset_gives_identical_runs(machine_from):
    m = machine_from(SMALL)
    m.snapshot()
    r1 = m.run(RandomStrategy(5))
    m.reset()
    r2 = m.run(RandomStrategy(5))
    assert r1.ok and (r1.trace_digest, r1.memory_digest) == (r2.trace_digest, r2.memory_digest)


def test_segfault_outside_any_vma_crashes_only_that_cpu(machine_from):
    m = machine_from(SMALL.replace("args = [0x10001000, 24", "args = [0x30000000, 24"))
    r = m.run(RandomStrategy(0))
    assert 1 in r.crashes and "SIGSEGV" in r.crashes[1]
    assert r.exit_codes[0] == 0


def test_a_guest_step_is_one_instruction(machine_from):
    """A schedule may switch CPUs between any two guest instructions: each
    guest step runs exactly one (x86-PAE has no delay slots), or none when
    its access missed the TLB and a walk comes first. So a CPU's next traced
    pc is the same instruction, the next one, or a branch's target."""
    import capstone
    m = machine_from(SMALL)
    assert m.run(RoundRobin()).ok
    cs = capstone.Cs(m.arch.cs_arch, m.arch.cs_mode)

    def insn_at(pc):
        for prog in m.programs.values():
            off = pc - prog.base
            if 0 <= off < len(prog.code):
                return next(cs.disasm(prog.code[off: off + 16], pc, 1))
        raise AssertionError(f"no program at {pc:#x}")

    for cpu in ("cpu0", "cpu1"):
        pcs = [text for _, task, kind, text in m.trace.records if task == cpu and kind == "guest"]
        assert len(pcs) > 100
        for a, b in zip(pcs, pcs[1:], strict=False):
            insn = insn_at(a)
            allowed = {a, a + insn.size}
            if insn.mnemonic.startswith("j"):
                allowed.add(int(insn.op_str, 16))
            assert b in allowed, f"{cpu}: {a:#x} {insn.mnemonic} then {b:#x}"
