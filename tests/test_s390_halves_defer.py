"""s390 (<= 6.7): two 2 KiB page tables share a 4 KiB page.

Freeing one half while the other half is live (or its own free pending)
must keep the page; the s390_free_page_early variant frees it at once and
the live half's table is then a freed frame still linked from a pmd.
"""

from __future__ import annotations

import textwrap

import pytest

from emu import scenario
from emu.kernel.audit import audit
from emu.kernel.core import BadPageState
from emu.machine import Machine
from emu.physmem import FrameState
from emu.testing import Interleaving, zap_and_retract

TEXT = """
[machine]
arch = "s390"
cpus = 2
memory_mib = 32

[arch_options]
pgtable = "halves"

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


@pytest.mark.parametrize("variant", [(), ("s390_free_page_early",)])
def test_retracting_one_half_keeps_the_page_for_the_other(variant):
    m = build(variant)
    k, a = m.kernel, m.arch
    bases = [8 * a.pmd_size, 10 * a.pmd_size]
    tables = []
    for base in bases:
        pmd_pa = m.run_kernel_now(k.pmd_offset_alloc(m.mm, base, alloc=False), "pmd")
        tables.append(a.table_pa("pmd", k.read_entry_now(pmd_pa, 8)))
    frame = k.frames.frame_base(tables[0])
    assert frame == k.frames.frame_base(tables[1]), "the two tables must be halves of one page"
    cache = m.mm.find_vma(bases[0]).file

    il = Interleaving(m)
    il.start(0, zap_and_retract(k, cache))
    if variant:
        # the page goes back to the allocator with its other half allocated:
        # free_pages_prepare()'s "Bad page state"
        with pytest.raises(BadPageState, match=f"page {frame:#x} freed with _refcount bits"):
            il.finish()
            il.pass_grace_period()
        return
    il.finish()
    il.pass_grace_period()
    problems = audit(k)
    assert problems == []
    assert k.frames.info(frame).state is FrameState.PGTABLE
    # the retracted half is no longer live (its free may stay pending until
    # the page goes); the other half is untouched
    assert k.frames.info(frame).subtables[0] in ("pending", "free")
    assert k.frames.info(frame).subtables[0x800] == "live"
