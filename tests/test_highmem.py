"""RAM above 4 GiB on x86-PAE (`[machine] highmem`, `pte_placement`), and what a
torn pmd read does once page tables live there (`torn_pmd_highpte`)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from arch.base import Access, Translation
from emu import scenario
from emu.check import LocklessSync, TornRead, WildPointer, default_checkers
from emu.explore_machine import ExploreMachine
from emu.kernel import steps as s
from emu.machine import Machine
from emu.physmem import FrameAllocator, FrameState, PhysMem, PhysMemError
from emu.scenario import ScenarioError
from emu.sched import RandomStrategy

GIB = 1 << 30
SHM = 8 * 0x200000  # the shm VMA of torn_pmd_highpte


def machine_text(extra: str = "", arch: str = "x86-pae", vmas: int = 3) -> str:
    body = f"""
    [machine]
    arch = "{arch}"
    cpus = 1
    memory_mib = 16
    {extra}
    """ + "".join(f"""
    [[vma]]
    start = "{8 + 2 * i} * pmd_size"
    size = "pmd_size"
    kind = "anon"
    populate = 3
    """ for i in range(vmas)) + """
    [[cpu]]
    program = "touch"
    args = ["8 * pmd_size", 4, "page_size"]
    """
    return textwrap.dedent(body)


def build(extra: str, **kw) -> Machine:
    return Machine(scenario.parse(machine_text(extra, **kw), "<t>"), **kw.get("mkw", {}))


# ---- memory and allocation above 4 GiB ----------------------------------------------------


def test_banks_are_ram_and_holes_are_not():
    mem = PhysMem(1 << 20, ((4 * GIB, 1 << 20),))
    mem.write_int(4 * GIB + 8, 8, 0x1122334455667788, "little")
    assert mem.read_int(4 * GIB + 8, 8, "little") == 0x1122334455667788
    for pa in (1 << 20, 2 * GIB, 4 * GIB + (1 << 20) - 4, 5 * GIB):
        with pytest.raises(PhysMemError, match="outside RAM"):
            mem.read(pa, 8)
    image = mem.snapshot()
    assert len(image) == 2 << 20 and image[mem.image_offset(4 * GIB + 8)] == 0x88
    mem.write_int(4 * GIB + 8, 8, 0, "little")
    mem.restore(image)
    assert mem.read_int(4 * GIB + 8, 8, "little") == 0x1122334455667788
    with pytest.raises(IndexError):
        mem.image().read(2 * GIB, 8)


def test_one_bank_digest_is_the_old_whole_buffer_hash():
    import hashlib
    mem = PhysMem(1 << 20)
    mem.write(0x1234, b"x")
    assert mem.digest() == hashlib.sha256(mem.buf).hexdigest()[:16]


def test_highpte_places_pte_tables_high_and_everything_else_low():
    m = build('highmem = [{ base = 0x1_0000_0000, mib = 4 }]\npte_placement = "highmem"')
    ptes = [fi for fi in m.frames.frames if fi.level == "pte"]
    assert len(ptes) == 3 and all(fi.pfn << 12 >= 4 * GIB for fi in ptes)
    assert all(fi.pfn << 12 < 16 << 20 for fi in m.frames.frames
               if fi.state is not FrameState.FREE and fi.level != "pte")
    for i in range(3):  # the walker follows the 36-bit pointers to the pages
        tr = m.arch.translate_functional(m.mem.image(), m.arch.hw_root(m.root),
                                         (8 + 2 * i) * 0x200000, Access.READ)
        assert isinstance(tr, Translation) and tr.tables[-1] >= 4 * GIB


def test_interleave_takes_the_banks_in_turn_at_the_same_offset():
    m = build('highmem = [{ base = 0x1_0000_0000, mib = 4 }, { base = 0x2_0000_0000, mib = 4 }]\n'
              'pte_placement = "interleave"', vmas=4)
    ptes = {fi.pfn << 12 for fi in m.frames.frames if fi.level == "pte"}
    assert ptes == {4 * GIB, 8 * GIB, 4 * GIB + 4096, 8 * GIB + 4096}


def test_low_placement_uses_high_banks_only_when_low_memory_is_full():
    mem = PhysMem(0x10000, ((4 * GIB, 0x10000),))
    fa = FrameAllocator(mem, 4096, reserved_frames=1, quarantine=0)
    got = [fa.alloc("p", None) for _ in range(31)]
    assert got[:15] == [i * 4096 for i in range(1, 16)]
    assert got[15:] == [4 * GIB + i * 4096 for i in range(16)]
    with pytest.raises(PhysMemError, match="out of guest physical memory"):
        fa.alloc("p", None)
    fa.free(got[20], None)
    assert fa.info(got[20]).state is FrameState.FREE and fa.by_pfn(got[20] >> 12).pfn == got[20] >> 12


def test_multi_frame_blocks_never_straddle_a_hole():
    mem = PhysMem(0x10000, ((0x20000, 0x10000),))  # banks [0, 64K) and [128K, 192K)
    fa = FrameAllocator(mem, 4096, reserved_frames=4, quarantine=0)
    for _ in range(8):
        fa.alloc("filler", None)  # low frames 4..11 taken: 12..15 free and 4-aligned
    a = fa.alloc("block", None, nframes=4)
    b = fa.alloc("block", None, nframes=4)
    assert a == 12 * 4096 and b == 0x20000


def test_explore_machine_resets_high_banks_and_frames():
    text = machine_text('highmem = [{ base = 0x1_0000_0000, mib = 4 }]\npte_placement = "highmem"')
    m = ExploreMachine(scenario.parse(text, "<t>"), checkers=default_checkers())
    m.digests = True
    before = (m.mem.digest(), [(fi.state, fi.generation) for fi in m.frames.frames])
    m.snapshot()
    first = m.run(RandomStrategy(3))
    assert first.ok and m.mem.digest() != before[0]
    m.reset()
    assert (m.mem.digest(), [(fi.state, fi.generation) for fi in m.frames.frames]) == before
    second = m.run(RandomStrategy(3))
    m.reset()
    third = m.run(RandomStrategy(3))
    assert second.schedule == first.schedule and second.memory_digest == first.memory_digest
    assert (third.trace_digest, third.memory_digest) == (second.trace_digest, second.memory_digest)


# ---- bad input: one line, exit 2 ------------------------------------------------------------


@pytest.mark.parametrize("extra, key, reason", [
    ('highmem = [{ base = 0x800000, mib = 4 }]', "machine.highmem[0].base", "overlaps the memory_mib bank"),
    ('highmem = [{ base = 0x1_0000_0000, mib = 4 }, { base = 0x1_0020_0000, mib = 4 }]',
     "machine.highmem[1].base", "overlaps machine.highmem[0]"),
    ('highmem = [{ base = 0x1_0000_1000, mib = 4 }]', "machine.highmem[0].base", "not a multiple of 64 KiB"),
    ('highmem = [{ base = 0xF_FFF0_0000, mib = 4 }]', "machine.highmem[0]", "beyond the 36-bit"),
    ('highmem = [{ base = 0x1_0000_0000, mib = 0 }]', "machine.highmem[0].mib", "must be 1..2048"),
    ('highmem = [{ base = 0x1_0000_0000 }]', "machine.highmem[0].mib", "missing"),
    ('highmem = [{ base = 0x1_0000_0000, mib = 4, node = 1 }]', "machine.highmem[0].node", "unknown key"),
    ('highmem = 5', "machine.highmem", "expected"),
    ('pte_placement = "highmem"', "machine.pte_placement", "needs machine.highmem"),
    ('highmem = [{ base = 0x1_0000_0000, mib = 4 }]\npte_placement = "top"', "machine.pte_placement",
     "must be one of low, highmem, interleave"),
])
def test_hostile_highmem_values_are_one_clear_error(extra, key, reason):
    with pytest.raises(ScenarioError) as exc:
        build(extra)
    assert exc.value.key == key and reason in exc.value.reason, str(exc.value)


def test_maxphyaddr_bounds_the_banks():
    extra = 'highmem = [{ base = 0x10_0000_0000, mib = 4 }]'
    with pytest.raises(ScenarioError, match="beyond the 36-bit"):
        build(extra)
    text = machine_text(extra) + "\n[arch_options]\nmaxphyaddr = 40\n"
    m = Machine(scenario.parse(text, "<t>"))
    assert m.mem.banks[-1] == (64 * GIB, 4 << 20)


@pytest.mark.parametrize("arch, why", [("arm", "LPAE"), ("s390", "x86-pae only"),
                                       ("powerpc", "x86-pae only"), ("sparc64", "x86-pae only")])
def test_other_arches_refuse_highmem_with_the_reason(arch, why):
    with pytest.raises(ScenarioError) as exc:
        build('highmem = [{ base = 0x1_0000_0000, mib = 4 }]', arch=arch)
    assert exc.value.key == "machine.highmem" and why in exc.value.reason


def test_unknown_checker_to_switch_off_names_the_known_ones():
    with pytest.raises(ScenarioError, match="no checker 'lockless_sync'.*lockless-sync"):
        Machine(scenario.parse(machine_text() + '\n[checkers]\noff = ["lockless_sync"]\n', "<t>"))


def test_cli_bad_highmem_is_one_line_exit_2(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text(machine_text('highmem = [{ base = 0x1_0000_0000, mib = 4 }, '
                              '{ base = 0x1_0010_0000, mib = 1 }]'))
    r = subprocess.run([sys.executable, "-m", "emu.cli", "run", str(f)], capture_output=True,
                       text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "machine.highmem[1].base" in r.stderr and "overlaps" in r.stderr


# ---- the consequence of a torn pmd read, on the shipped scenario ------------------------------


class TornPmdOrder:
    """A machine-level schedule that makes the race of torn_pmd_highpte happen.

    cpu1 (GUP-fast) until it is about to load the high half of the shm's pmd
    while the pmd still points to the first table; cpu0 (khugepaged, then a
    fault) until the pmd is clear; cpu1 one step (the high half: 0); cpu0
    until the pmd points to a table again; then cpu1 first. Where a task
    cannot run (cpu0 waiting for pmdp_get_lockless_sync()'s IPI, which cpu1's
    IRQs-off window holds off) the other one runs.
    """

    name = "torn-pmd-order"

    def __init__(self, m: Machine, pmd_pa: int, high_load: str) -> None:
        self.m, self.pmd_pa, self.high_load = m, pmd_pa, high_load
        self.new_execution()

    def new_execution(self) -> None:
        self.phase = 0

    def _pmd(self) -> int:
        return self.m.mem.read_int(self.pmd_pa, 8, "little")

    def choose(self, runnable: list[int], step: int) -> int:
        if self.phase == 0:
            task = self.m.cpus[1].task
            op = task.pending if task is not None else None
            if type(op) is s.Load and op.what == self.high_load and op.pa == self.pmd_pa + 4 \
                    and self._pmd():
                self.phase = 1
            else:
                return 1 if 1 in runnable else runnable[0]
        if self.phase == 1:
            if self._pmd() == 0:
                self.phase = 2
            else:
                return 0 if 0 in runnable else runnable[0]
        if self.phase == 2:
            self.phase = 3
            return 1
        if self.phase == 3:
            if self._pmd() == 0:
                return 0 if 0 in runnable else runnable[0]
            self.phase = 4
        return 1 if 1 in runnable else runnable[0]


def run_torn_order(variants: tuple[str, ...], checkers_off: list[str] | None = None):
    sc = scenario.load("torn_pmd_highpte")
    sc.variants = list(variants)
    if checkers_off is not None:
        sc.checkers_off = checkers_off
    m = Machine(sc, checkers=default_checkers())
    pmd_pa = m.run_kernel_now(m.kernel.pmd_offset_alloc(m.mm, SHM, alloc=False), "pmd")
    high = "pmd read high" if "plain_two_load_read" in variants else "pmdp_get_lockless high"
    return m, m.run(TornPmdOrder(m, pmd_pa, high))


def test_shipped_scenario_puts_the_old_and_new_table_4g_apart_at_one_offset():
    m, r = run_torn_order(())
    assert r.ok, r.violation
    tables = sorted(fi.pfn << 12 for fi in m.frames.frames if fi.generation and
                    any("pte table" in e.what for e in fi.history) and fi.pfn << 12 >= 4 * GIB)
    assert 0x1_8000_1000 in tables and 0x2_8000_1000 in tables


@pytest.mark.parametrize("variant", ["no_lockless_sync", "plain_two_load_read"])
def test_torn_pmd_is_followed_outside_ram_and_the_wild_pointer_checker_says_so(variant):
    """The consequence, not the rule: GUP-fast reads ptes through (0, low half of
    both tables' pmd), 0x80001000, below 4 GiB and outside RAM. The rule
    (lockless-sync) and torn-read checkers are off, as the scenario ships."""
    m, r = run_torn_order((variant,))
    v = r.violation
    assert v is not None and v.checker == "wild-pointer", v
    assert "read 0x80001000, outside RAM" in v.message and "0x80001067" in v.message
    assert not any(isinstance(c, (LocklessSync, TornRead)) for c in m.checkers)
    # the same schedule replays to the same report, from the CLI
    out = subprocess.run([sys.executable, "-m", "emu.cli", "replay", "torn_pmd_highpte",
                          "--variant", variant, "--schedule", r.schedule, "--trace", "0"],
                         capture_output=True, text=True)
    assert out.returncode == 1 and "wild-pointer" in out.stdout + out.stderr


def test_correct_model_under_the_same_order_is_clean():
    """pmdp_get_lockless_sync() holds khugepaged until GUP-fast's IRQs-off window
    closes: the order cannot happen, the re-read low half never matches."""
    m, r = run_torn_order(())
    assert r.ok and r.violation is None


def test_the_rule_and_the_never_held_value_are_shown_separately():
    """With the scenario's [checkers] off emptied, the rule checker reports the
    missing sync first (its report starts "rule:"), and torn-read the value."""
    _m, r = run_torn_order(("no_lockless_sync",), checkers_off=[])
    assert r.violation.checker == "lockless-sync" and r.violation.message.startswith("rule:")
    _m, r = run_torn_order(("no_lockless_sync",), checkers_off=["lockless-sync"])
    assert r.violation.checker == "torn-read" and "0x80001067" in r.violation.message


def test_wild_pointer_names_a_data_frame_the_hardware_walker_reads_as_a_table():
    m = build("")
    va = 8 * 0x200000
    tr = m.arch.translate_functional(m.mem.image(), m.arch.hw_root(m.root), va, Access.READ)
    page = tr.pa_base  # a data page
    pmd_pa = m.run_kernel_now(m.kernel.pmd_offset_alloc(m.mm, va, alloc=False), "pmd")
    m.mem.write_int(pmd_pa, 8, m.arch.mk_table_entry("pmd", page), "little")
    m.add_checker(WildPointer())
    from emu.check.base import Violation
    with pytest.raises(Violation, match=r"data frame .*never a page table"):
        m.run_walk_now(m.cpus[0], va + 0x5000, Access.READ)
