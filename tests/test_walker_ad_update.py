"""Hardware A/D updates are a compare-and-OR: never into an entry that changed under the walk.

A walk reads a pte, a racing ptep_get_and_clear() empties it, then the walk's
accessed/dirty update comes: hardware (x86, powerpc radix) and the hash MMU's
__hash_page_64K() pte_xchg() loop leave the cleared pte alone and do not
translate through it. (Found by `ptemu fuzz` on powerpc-hash: the update
wrote R|HASHPTE into a pte khugepaged had just cleared and cached a
translation with no permissions, so the guest's load re-walked forever.)
"""

from __future__ import annotations

import textwrap

import pytest

from arch import powerpc as ppc
from arch import x86_pae as x86
from arch.base import Access, Fault, PteSetBits, Translation
from emu import scenario
from emu.machine import Machine

VA_PMD = 8
CASES = {
    "x86-pae": ("x86-pae", {}, x86.A | x86.D),
    "powerpc-radix": ("powerpc", {}, ppc.R | ppc.C),
    "powerpc-hash": ("powerpc", {"mmu": "hash"}, ppc.R | ppc.C | ppc.H_PAGE_HASHPTE),
}


def machine(arch: str, options: dict) -> Machine:
    opts = "".join(f'\n{k} = "{v}"' for k, v in options.items())
    text = textwrap.dedent(f"""
        [machine]
        arch = "{arch}"
        cpus = 1
        memory_mib = 64
        [arch_options]{opts}
        [[vma]]
        start = "{VA_PMD} * pmd_size"
        size = "pmd_size"
        kind = "anon"
        populate = 1
        [[cpu]]
        program = "touch"
        args = [0, 0, 0]
        """)
    return Machine(scenario.parse(text, "<test>"))


def walk(m: Machine, va: int, race: bool) -> tuple[Translation | Fault, list]:
    """Run one write walk; with `race`, clear the leaf just before its A/D update."""
    cpu = m.cpus[0]
    gen = m.arch.walk(m.root, va, Access.WRITE, True)
    sets = []
    try:
        msg = next(gen)
        while True:
            if isinstance(msg, PteSetBits):
                sets.append(msg)
                if race:
                    m.mem.write_int(msg.pa, msg.size, 0, m.arch.byteorder)
            msg = gen.send(m.walker_access(cpu, msg))
    except StopIteration as stop:
        return stop.value, sets


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_cleared_pte_stays_clear_and_is_not_translated(case):
    arch, options, bits = CASES[case]
    m = machine(arch, options)
    a = m.arch
    va = VA_PMD * a.pmd_size
    leaf = a.translate_functional(m.mem.buf, m.root, va, Access.READ).leaf_pa
    old = m.mem.read_int(leaf, 8, a.byteorder)
    m.mem.write_int(leaf, 8, old & ~bits, a.byteorder)  # aged: the walk must set them
    res, sets = walk(m, va, race=True)
    assert sets and sets[-1].pa == leaf
    assert m.mem.read_int(leaf, 8, a.byteorder) == 0
    assert isinstance(res, Fault) and res.reason == "changed"
    # the same walk with no race sets the bits and translates
    m.mem.write_int(leaf, 8, old & ~bits, a.byteorder)
    res, sets = walk(m, va, race=False)
    assert isinstance(res, Translation) and sets
    assert m.mem.read_int(leaf, 8, a.byteorder) & bits == bits


def test_an_entry_that_refuses_the_access_is_dropped_before_the_refill():
    """A stale no-permission 4 KiB entry over a now PMD-mapped page: the access
    faults on it, the fault drops it, and the 2 MiB refill is what gets used."""
    from arch.base import Translation as Tr
    from emu.sched import RoundRobin
    text = textwrap.dedent(f"""
        [machine]
        arch = "x86-pae"
        cpus = 1
        memory_mib = 32
        [[vma]]
        start = "{VA_PMD} * pmd_size"
        size = "pmd_size"
        kind = "shmem"
        thp = true
        populate = 1
        [[cpu]]
        calls = [["touch_read", "{VA_PMD} * pmd_size + 5 * page_size", 1, "page_size"]]
        """)
    m = Machine(scenario.parse(text, "<test>"))
    va = VA_PMD * m.arch.pmd_size + 5 * m.arch.page_size
    m.cpus[0].tlb_insert(Tr(va, 0, m.arch.page_size, 0, (), 0))
    r = m.run(RoundRobin(1), max_steps=2000)
    assert not r.step_limit and r.exit_codes == {0: 0}
    assert m.cpus[0].tlb_lookup(va).tr.size == m.arch.pmd_size
