"""powerpc: two PTE fragments of one page retracted and deferred concurrently.

pte_free_defer() on pages shared by fragments must not queue the page's one
rcu_head twice (seed 004's v2 of 05/12, 32cc0b7c9d50: "fix rcu_head usage to
cope with concurrent deferrals"). Two CPUs each retract a table whose
fragments share a page, under explicit interleavings.
"""

from __future__ import annotations

import textwrap

import pytest

from emu import scenario
from emu.kernel.audit import audit
from emu.kernel.core import KernelBug
from emu.machine import Machine
from emu.physmem import FrameState
from emu.testing import Interleaving, about_to_read_pte, rcu_pte_reader, zap_and_retract

TEXT = """
[machine]
arch = "powerpc"
cpus = 2
memory_mib = 64

[kernel]
variants = {variants}

[[vma]]
start = "8 * pmd_size"
size = "pmd_size"
kind = "shmem"
populate = 2
name = "a"

[[vma]]
start = "10 * pmd_size"
size = "pmd_size"
kind = "shmem"
populate = 2
name = "b"

# both CPUs real (online): grace periods wait for both
[[cpu]]
program = "touch"
args = ["8 * pmd_size", 1, "page_size"]

[[cpu]]
program = "touch"
args = ["8 * pmd_size", 1, "page_size"]
"""


def build(variants) -> Machine:
    return Machine(scenario.parse(textwrap.dedent(TEXT.format(variants=list(variants)))
                                  .replace("'", '"'), "<test>"))


def retract(m: Machine, base: int):
    return zap_and_retract(m.kernel, m.mm.find_vma(base).file)


@pytest.mark.parametrize("variant", [(), ("frag_shared_rcu_head",)])
def test_two_fragments_of_one_page_deferred_in_one_grace_period(variant):
    m = build(variant)
    k, a = m.kernel, m.arch
    bases = [8 * a.pmd_size, 10 * a.pmd_size]
    tables = []
    for base in bases:
        pmd_pa = m.run_kernel_now(k.pmd_offset_alloc(m.mm, base, alloc=False), "pmd")
        tables.append(a.table_pa("pmd", k.read_entry_now(pmd_pa, 8)))
    assert k.frames.frame_base(tables[0]) == k.frames.frame_base(tables[1]), \
        "the two PTE tables must be fragments of one page"
    il = Interleaving(m)
    il.start(0, retract(m, bases[0]))
    il.start(1, retract(m, bases[1]))
    if variant:
        with pytest.raises(KernelBug, match="already queued"):
            il.finish()
        return
    il.finish()
    frame = k.frames.frame_base(tables[0])
    # the page still holds the mm's unissued fragments; neither deferral freed it
    assert k.frames.info(frame).state is FrameState.PGTABLE
    il.pass_grace_period()
    assert audit(k) == []


@pytest.mark.parametrize("variant", [(), ("pte_free_immediate",)])
def test_reader_of_a_fragment_freed_inside_a_live_page_is_caught(variant):
    """pte_free() of one fragment leaves the page (other tables live in it): a
    reader still holding that fragment reads freed memory all the same."""
    from emu.check import UseAfterFree
    from emu.check.base import Violation
    m = build(variant)
    m.add_checker(UseAfterFree())
    k, a = m.kernel, m.arch
    base = 8 * a.pmd_size
    pmd_pa = m.run_kernel_now(k.pmd_offset_alloc(m.mm, base, alloc=False), "pmd")

    il = Interleaving(m)
    il.start(0, rcu_pte_reader(k, pmd_pa, base))
    il.start(1, retract(m, base))
    il.run_until(0, about_to_read_pte)
    il.run_while_runnable(1)
    if variant:
        with pytest.raises(Violation, match="fragment that was freed"):
            il.finish()
    else:
        il.finish()
