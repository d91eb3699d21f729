"""x86-PAE entry primitives per Linux version, and the two-load read that tears against them.

Each primitive is run by the kernel routine that uses it (a fault's
set_pte_at and do_set_pmd, collapse's pte_clear, zap's get-and-clears,
retract's pmdp_collapse_flush), and the trace must show the stores Linux
makes at that version: 6.1 (xchg of the low word, then the high word;
set_64bit) or 6.2+ (pxx_xchg64). Then a hand-forced interleaving puts the
primitive between the two loads of a plain two-load reader
(plain_two_load_read), which combines halves of two different values,
while pmdp_get_lockless()'s re-read of the low half returns a value the
entry held.
"""

from __future__ import annotations

import re
import textwrap

import pytest

from arch.base import Access, Prot
from emu import scenario
from emu.check.base import Violation
from emu.check.torn import TornRead
from emu.kernel import steps as s
from emu.kernel.audit import audit
from emu.machine import Machine
from emu.testing import Interleaving, zap_and_retract

BASE = 0x1000_0000
OLD, NEW = "6.1", "6.2"
VERSIONS = [OLD, NEW, "6.14"]


def machine(version: str, kind: str = "shmem", thp: bool = False, pmd_mapping: bool = True,
            populate: bool | int = True, variants: tuple[str, ...] = ()) -> Machine:
    text = f"""
    [machine]
    arch = "x86-pae"
    cpus = 2
    memory_mib = 32

    [kernel]
    version = "{version}"
    variants = {list(variants)!r}

    [[vma]]
    start = {BASE}
    size = "pmd_size"
    kind = "{kind}"
    populate = {str(populate).lower()}
    thp = {str(thp).lower()}
    pmd_mapping = {str(pmd_mapping).lower()}

    [[cpu]]
    program = "touch"
    args = [{BASE}, 1, 4096]

    [[cpu]]
    program = "touch"
    args = [{BASE}, 1, 4096]
    """
    return Machine(scenario.parse(textwrap.dedent(text).replace("'", '"'), "<test>"))


def pmd_of(m: Machine) -> int:
    return m.run_kernel_now(m.kernel.pmd_offset_alloc(m.mm, BASE, alloc=False), "pmd")


def pte_of(m: Machine, addr: int = BASE) -> int:
    a = m.arch
    pmdval = m.kernel.read_entry_now(pmd_of(m), 8)
    return m.kernel.entry_addr("pte", a.table_pa("pmd", pmdval), addr)


_OP = re.compile(r"\b(load|store|xchg)(\d+) \[(0x[0-9a-f]+)\]")


def entry_ops_in_trace(m: Machine, label: str) -> list[tuple[str, int, int]]:
    """(kind, bits, offset in the entry) of every traced memory step whose comment is `label`."""
    ops = []
    for _step, _task, kind, text in m.trace.records:
        if kind != "kernel" or not text.endswith(f"; {label}"):
            continue
        op = _OP.search(text)
        if op:
            ops.append((op.group(1), int(op.group(2)), int(op.group(3), 16)))
    assert ops, f"no {label!r} in the trace"
    base = min(pa for _k, _b, pa in ops) & ~7
    return [(k, b, pa - base) for k, b, pa in ops]


def run_alone(m: Machine, gen, cpu: int = 0):  # noqa: ANN001
    il = Interleaving(m)
    il.start(cpu, gen)
    il.finish()
    return il.tasks[cpu].result


GET_AND_CLEAR = {OLD: [("xchg", 32, 0), ("load", 32, 4), ("store", 32, 4)],
                 NEW: [("xchg", 64, 0)]}
SET_PMD = {OLD: [("store", 64, 0)], NEW: [("xchg", 64, 0)]}


def era(version: str) -> str:
    return OLD if version == OLD else NEW


# ---- the store sequence each primitive leaves in the trace ----------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_set_pte_writes_high_then_low(version):
    m = machine(version, kind="anon", populate=False)
    run_alone(m, m.kernel.handle_mm_fault(BASE, Access.WRITE))
    assert entry_ops_in_trace(m, "set_pte_at (new page)") == [("store", 32, 4), ("store", 32, 0)]


@pytest.mark.parametrize("version", VERSIONS)
def test_pte_clear_writes_low_then_high(version):
    m = machine(version, thp=True, pmd_mapping=False, populate=2)
    assert run_alone(m, m.kernel.collapse_pte_mapped_thp(m.mm, BASE, False)) == 1  # SCAN_SUCCEED
    assert entry_ops_in_trace(m, "collapse_pte_mapped_thp: pte_clear") == \
        [("store", 32, 0), ("store", 32, 4), ("store", 32, 8), ("store", 32, 12)]  # two ptes


@pytest.mark.parametrize("version", VERSIONS)
def test_ptep_get_and_clear(version):
    m = machine(version, populate=1)
    vma = m.mm.find_vma(BASE)
    run_alone(m, m.kernel.zap_page_range(m.mm, vma, BASE, BASE + m.arch.page_size))
    assert entry_ops_in_trace(m, "zap_pte_range: ptep_get_and_clear") == GET_AND_CLEAR[era(version)]
    assert m.kernel.read_entry_now(pte_of(m), 8) == 0 and audit(m.kernel) == []


@pytest.mark.parametrize("version", VERSIONS)
def test_pmdp_get_and_clear(version):
    m = machine(version, thp=True, populate=1)
    assert m.arch.pmd_trans_huge(m.kernel.read_entry_now(pmd_of(m), 8))
    vma = m.mm.find_vma(BASE)
    run_alone(m, m.kernel.zap_page_range(m.mm, vma, BASE, BASE + m.arch.pmd_size))
    assert entry_ops_in_trace(m, "zap_huge_pmd: pmdp_huge_get_and_clear") == \
        GET_AND_CLEAR[era(version)]
    assert audit(m.kernel) == []


@pytest.mark.parametrize("version", VERSIONS)
def test_pmdp_collapse_flush(version):
    m = machine(version, populate=2)
    run_alone(m, zap_and_retract(m.kernel, m.mm.find_vma(BASE).file))
    assert entry_ops_in_trace(m, "pmdp_collapse_flush: pmdp_huge_get_and_clear") == \
        GET_AND_CLEAR[era(version)]
    assert m.kernel.read_entry_now(pmd_of(m), 8) == 0


@pytest.mark.parametrize("version", VERSIONS)
def test_set_pmd(version):
    m = machine(version, thp=True, populate=False)
    run_alone(m, m.kernel.handle_mm_fault(BASE, Access.READ))
    assert entry_ops_in_trace(m, "do_set_pmd") == SET_PMD[era(version)]
    assert m.arch.pmd_trans_huge(m.kernel.read_entry_now(pmd_of(m), 8))


# ---- the two-load read against each primitive ---------------------------------------------


def torn_or_real(m: Machine, level: str, entry_pa: int, writer, variant: bool):  # noqa: ANN001
    """The reader loads the low half, `writer` runs to the end, the reader loads the high half.

    With plain_two_load_read that pairs the old low with the new high: the
    torn-read checker must stop it. pmdp_get_lockless() re-reads the low
    half, sees it changed and retries: it returns the entry's value now.
    """
    m.add_checker(TornRead())
    k = m.kernel
    il = Interleaving(m)
    il.start(0, k.entry_get_lockless(level, entry_pa))
    il.step(0)  # the low half, before the writer
    assert isinstance(il.tasks[0].pending, s.Load) and il.tasks[0].pending.pa == entry_pa + 4
    il.start(1, writer)
    il.run_while_runnable(1)
    assert il.tasks[1].done
    if variant:
        with pytest.raises(Violation, match="never held"):
            il.finish()
        return
    il.finish()
    assert il.tasks[0].result == k.read_entry_now(entry_pa, 8)


def plain(flag: bool) -> tuple[str, ...]:
    return ("plain_two_load_read",) if flag else ()


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("variant", [False, True])
def test_two_load_read_tears_against_pte_clear(version, variant):
    m = machine(version, populate=1, variants=plain(variant))
    ptep = pte_of(m)
    assert m.kernel.read_entry_now(ptep, 8) >> 32, "NX: the high half of the pte is not 0"
    torn_or_real(m, "pte", ptep, m.kernel.clear_entry("pte", ptep, "pte_clear"), variant)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("variant", [False, True])
def test_two_load_read_tears_against_ptep_get_and_clear(version, variant):
    m = machine(version, populate=1, variants=plain(variant))
    vma = m.mm.find_vma(BASE)
    torn_or_real(m, "pte", pte_of(m),
                 m.kernel.zap_page_range(m.mm, vma, BASE, BASE + m.arch.page_size), variant)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("variant", [False, True])
def test_two_load_read_tears_against_pmdp_get_and_clear(version, variant):
    m = machine(version, thp=True, populate=1, variants=plain(variant))
    vma = m.mm.find_vma(BASE)
    torn_or_real(m, "pmd", pmd_of(m),
                 m.kernel.zap_page_range(m.mm, vma, BASE, BASE + m.arch.pmd_size), variant)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("variant", [False, True])
def test_two_load_read_tears_against_pmdp_collapse_flush_and_the_huge_pmd(version, variant):
    """The table pmd's high half is 0, so the flush alone leaves a value that
    was in memory; collapse step 5 then installs the huge pmd (NX high):
    old table low + new huge high, as in the no_lockless_sync story."""
    m = machine(version, thp=True, pmd_mapping=False, populate=2, variants=plain(variant))
    torn_or_real(m, "pmd", pmd_of(m), m.kernel.collapse_pte_mapped_thp(m.mm, BASE, True), variant)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("variant", [False, True])
def test_two_load_read_tears_against_set_pmd(version, variant):
    m = machine(version, thp=True, populate=False, variants=plain(variant))
    vma = m.mm.find_vma(BASE)
    pmd_pa = pmd_of(m)
    huge = m.arch.mk_pmd_huge(m.arch.pmd_size * 5, vma.prot)
    torn_or_real(m, "pmd", pmd_pa, m.kernel.set_entry("pmd", pmd_pa, huge, "set_pmd"), variant)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("variant", [False, True])
def test_two_load_read_tears_against_set_pte_after_a_clear(version, variant):
    """set_pte writes high then low, so against set_pte alone a low-then-high
    reader only ever pairs halves that were in memory together (next test).
    Across a clear and a set_pte whose high half differs (an exec mapping
    replaced by an NX one) it tears: the old low with set_pte's high."""
    m = machine(version, populate=1, variants=plain(variant))
    k, a = m.kernel, m.arch
    ptep = pte_of(m)
    page = a.pte_pa(k.read_entry_now(ptep, 8))
    m.run_kernel_now(k.set_entry("pte", ptep, a.mk_pte(page, Prot(exec=True))), "exec pte")

    def replace():
        yield from k.clear_entry("pte", ptep, "pte_clear")
        yield from k.set_entry("pte", ptep, a.pte_mkdirty(a.mk_pte(page, Prot())), "set_pte")

    torn_or_real(m, "pte", ptep, replace(), variant)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("low_after,high_after", [(i, j) for i in range(3) for j in range(i, 3)])
def test_set_pte_alone_never_tears_a_low_then_high_read(version, low_after, high_after):
    """The reason for set_pte's order: whatever the reader's low half, the high
    half it reads next was in memory together with it (every placement of the
    reader's two loads among set_pte's two stores)."""
    m = machine(version, populate=1, variants=plain(True))
    m.add_checker(TornRead())
    k, a = m.kernel, m.arch
    ptep = pte_of(m)
    page = a.pte_pa(k.read_entry_now(ptep, 8))
    m.run_kernel_now(k.set_entry("pte", ptep, a.mk_pte(page, Prot(exec=True))), "exec pte")
    il = Interleaving(m)
    il.start(0, k.entry_get_lockless("pte", ptep))
    il.start(1, k.set_entry("pte", ptep, a.mk_pte(page, Prot()), "set_pte"))
    for _ in range(low_after):
        il.step(1)
    il.step(0)  # the low half
    for _ in range(high_after - low_after):
        il.step(1)
    il.step(0)  # the high half: no violation
    il.finish()


@pytest.mark.parametrize("version", VERSIONS)
def test_get_and_clear_returns_both_halves_of_the_old_entry(version):
    """Whether one 64-bit xchg (6.2+) or xchg low, load high, clear high (6.1):
    the value returned is the whole entry, high half (NX, PFN bits 32-35) included."""
    m = machine(version, populate=1)
    pte = pte_of(m)
    old = m.kernel.read_entry_now(pte, 8)
    full = old | (1 << 63) | (0x3 << 32)  # NX and a PFN above 4 GiB
    m.mem.write_int(pte, 8, full, m.arch.byteorder)
    got = run_alone(m, m.kernel.get_and_clear_entry("pte", pte, "test: ptep_get_and_clear"))
    assert got == full and m.kernel.read_entry_now(pte, 8) == 0


def test_a_lockless_read_reports_the_value_it_concluded():
    """pmdp_get_lockless() ends in an Observed step: the checkers that judge
    lockless reads (torn-read, wild-pointer) see the value it returns."""
    seen = []

    class Watch:
        name = "watch"

        def attach(self, m):  # noqa: ANN001
            pass

        def __getattr__(self, name):
            return lambda *a: seen.append(a) if name == "on_lockless_value" else None

    m = machine(NEW, populate=1)
    m.checkers.append(Watch())
    pmd = pmd_of(m)
    value = run_alone(m, m.kernel.pmdp_get_lockless(pmd))
    assert value == m.kernel.read_entry_now(pmd, 8)
    assert seen == [(0, pmd, 8, value, "pmdp_get_lockless")]
