"""Stale-pointer checker: a reader's table pointer outlives its table, and the
frame is handed out again. UseAfterFree cannot see it (the frame is not free
any more); following pointer provenance can. Same scenario, correct code clean."""

from __future__ import annotations

import textwrap

import pytest

from arch.base import Access
from emu import scenario
from emu.check import StalePointer, UseAfterFree
from emu.check.base import Violation
from emu.machine import Machine
from emu.testing import Interleaving, about_to_read_pte, rcu_pte_reader, zap_and_retract

BASE = 0x1000_0000
OTHER = 0x2000_0000


def machine(variants) -> Machine:
    text = f"""
    [machine]
    arch = "x86-pae"
    cpus = 3
    memory_mib = 32

    [kernel]
    variants = {list(variants)!r}

    [[vma]]
    start = {BASE}
    size = "pmd_size"
    kind = "shmem"
    populate = 4

    [[vma]]
    start = {OTHER}
    size = "pmd_size"
    kind = "anon"

    [[cpu]]
    program = "touch"
    args = [{BASE}, 1, 4096]
    """
    sc = scenario.parse(textwrap.dedent(text).replace("'", '"'), "<reuse>")
    m = Machine(sc, checkers=[UseAfterFree(), StalePointer()])
    m.frames.quarantine_len = 0  # a freed frame is the next one handed out
    return m


@pytest.mark.parametrize("variant", [(), ("pte_free_immediate",)])
def test_reader_through_a_table_freed_and_reused_under_it(variant):
    m = machine(variant)
    k = m.kernel
    pmd_pa = m.run_kernel_now(k.pmd_offset_alloc(m.mm, BASE, alloc=False), "pmd")
    table = m.arch.table_pa("pmd", k.read_entry_now(pmd_pa, 8))
    cache = m.mm.find_vma(BASE).file

    il = Interleaving(m)
    il.start(0, rcu_pte_reader(k, pmd_pa, BASE))
    il.start(1, zap_and_retract(k, cache))
    il.run_until(0, about_to_read_pte)
    il.run_while_runnable(1)
    il.start(2, k.handle_mm_fault(OTHER, Access.WRITE))  # allocates: a table, a page
    il.run_while_runnable(2)
    fi = m.frames.info(table)
    if variant:
        assert fi.generation == 2 and fi.state.value != "free"  # reused, not free
        with pytest.raises(Violation, match="reused") as exc:
            il.finish()
        v = exc.value
        assert v.checker == "stale-pointer" and v.cpu == 0 and v.frame == table
        assert "pte table freed" in v.message
    else:
        assert fi.generation == 1 and fi.state.value == "rcu-pending"
        assert il.run()[0] is not None
        il.pass_grace_period()
        assert m.frames.info(table).state.value == "free"


def test_walker_pointers_are_forgotten_between_walks():
    """A new walk reading a reused frame through a fresh pointer is fine."""
    m = machine(())
    chk = StalePointer()
    chk.attach(m)
    m.kernel.cpus[0].walk_start_step = 1
    chk.walk[0] = {5: (1, 0)}
    chk.walk_id[0] = 1
    m.kernel.cpus[0].walk_start_step = 9  # another walk
    assert chk._walk_ptrs(0) == {}
