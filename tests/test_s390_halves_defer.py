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


# ---- the halves' invariants: each disagreement is reported -------------------------------

def _halves_page():
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).parent))
    from test_checker_edges import first_pte, s390_halves_machine
    m = s390_halves_machine([])
    k = m.kernel
    frame = m.frames.frame_base(first_pte(m))
    return m, k, k.policy, frame


def _corrupt(how, m, k, policy, frame):
    from emu.physmem import FrameState
    page, lst = policy.pages[frame], policy.context(m.mm)[1]
    fi = m.frames.info(frame)
    if how == "listed twice":
        lst.append(frame)
    elif how == "stray bits":
        page.bits |= 0x04
    elif how == "not a table page":
        m.frames.set_state(frame, FrameState.DATA, 0, "test")
    elif how == "allocated but not live":
        fi.subtables[0] = "free"
    elif how == "live but not allocated":
        fi.subtables[policy.half_size(k)] = "live"
    elif how == "PP but not pending":
        page.bits |= 0x20
    elif how == "both AA and PP":
        page.bits |= 0x10
        fi.subtables[0] = "pending"
    elif how == "active but listed":
        page.active = True
    elif how == "listed with both halves used":
        page.bits |= 0x02
        fi.subtables[policy.half_size(k)] = "live"
    elif how == "free half not listed":
        lst.remove(frame)
    elif how == "listed without tables":
        lst.append(frame + 16 * m.frames.frame_size)


@pytest.mark.parametrize("how, says", [
    ("listed twice", "holds a page twice"),
    ("stray bits", "stray _refcount bits 0x05"),
    ("not a table page", "holds tables but is data"),
    ("allocated but not live", "half 0: allocated but free"),
    ("live but not allocated", "half 1: live but not allocated"),
    ("PP but not pending", "half 1: PP set but free"),
    ("both AA and PP", "half 0: both AA and PP"),
    ("active but listed", "is PG_active but listed"),
    ("listed with both halves used", "is listed with AA 0x3"),
    ("free half not listed", "has a free half but is not listed"),
    ("listed without tables", "which holds no tables"),
])
def test_each_disagreement_of_pages_list_and_halves_is_reported(how, says):
    m, k, policy, frame = _halves_page()
    assert policy.invariants(k, m.mm) == []  # one half in use, the page listed
    _corrupt(how, m, k, policy, frame)
    problems = policy.invariants(k, m.mm)
    assert any(says in p for p in problems), problems
