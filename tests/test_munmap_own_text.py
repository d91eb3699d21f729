"""munmap of a vCPU's own text really unmaps it (issue 10 item 7).

The shipped scenario `munmap_own_text`: the guest's next instruction fetch
after the munmap faults, no VMA allows it, and the process dies of SIGSEGV
as Linux kills it (status 139, its mm torn down), a clean outcome because
the scenario says `signal = "SIGSEGV"`; without that key the same death is
reported as a crash, as every unexpected SIGSEGV is.
"""

from __future__ import annotations

import textwrap

import pytest

from emu import scenario
from emu.explore import failure_of
from emu.kernel.audit import leftovers
from emu.machine import SIGSEGV_STATUS, Machine
from emu.sched import RandomStrategy

ARCHES = ["x86-pae", "powerpc", "s390", "sparc64"]


@pytest.mark.parametrize("arch", ARCHES)
def test_a_guest_that_munmaps_its_own_text_dies_of_sigsegv_cleanly(arch):
    sc = scenario.load("munmap_own_text")
    for seed in range(3):
        m = Machine(sc, arch=arch)
        r = m.run(RandomStrategy(seed))
        assert failure_of(r) is None, failure_of(r)
        assert r.exit_codes[0] == SIGSEGV_STATUS and m.cpus[0].signalled == "SIGSEGV"
        assert r.exit_codes[1] == 0
        victim = m.process["victim"]
        assert victim.dead and not victim.vmas
        notes = [line for line in m.trace_lines(10_000) if "SIGSEGV at guest pc" in line]
        assert len(notes) == 1
        # the fault is the next instruction fetch, from the unmapped text page
        text = m.arch.code_base
        lines = m.trace_lines(10_000)
        assert any(f"walk fault: fetch {text:#x}" in ln for ln in lines)
        assert any(f"fault at {text:#x}: SIGSEGV (no vma)" in ln for ln in lines)
        assert leftovers(m.kernel) == []


def test_without_the_signal_key_the_same_death_is_a_crash():
    sc = scenario.load("munmap_own_text")
    sc.programs[0].signal = ""
    m = Machine(sc)
    r = m.run(RandomStrategy(0))
    kind, msg = failure_of(r)
    assert kind == "crash" and "SIGSEGV" in msg


def test_the_signal_key_is_checked():
    text = """
    [machine]
    arch = "x86-pae"
    cpus = 1
    [[cpu]]
    program = "touch"
    args = [0x10000000, 1, 4096]
    signal = "SIGBUS"
    """
    with pytest.raises(scenario.ScenarioError, match="signal"):
        scenario.parse(textwrap.dedent(text), "<t>")
