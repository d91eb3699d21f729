"""sparc64 (sun4v): golden format tests from the fact sheet, the TSB, delay slots, end to end.

Unicorn has no usable sparc64 MMU to compare against, so the expected values
here are written out from pgtable_facts.md section 4 and Linux's
pgtable_64.h / tsb.h (numbers, not the arch module's constants).
"""

from __future__ import annotations

import textwrap

import keystone
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arch import get_arch
from arch import sparc64 as sp
from arch.base import Access, Fault, Prot, PteRead, PteWrite, Translation
from emu import scenario
from emu.kernel.audit import audit, reachable_tables
from emu.machine import Machine
from emu.physmem import FrameState
from emu.sched import RandomStrategy
from guest.asm import AsmError, list_programs, load_program

A = get_arch("sparc64")
K8 = 8192
M4 = 4 << 20

# One root block (pgd | 8K TSB | huge TSB) and the tables below it.
ROOT, PUD, PMD, PT, PAGE, HUGE = 0x10000, 0x20000, 0x22000, 0x24000, 0x40000, 0x800000
TSB, HTSB = ROOT + 0x2000, ROOT + 0x4000
I_PGD, I_PUD, I_PMD, I_PTE = 3, 5, 7, 9
VA = (I_PGD << 43) | (I_PUD << 33) | (I_PMD << 23) | (I_PTE << 13)
INVALID_TAG = 1 << 46
LOCK_TAG = 1 << 47

# sun4v bits, as the fact sheet and pgtable_64.h give them
V, MOD, ACC, READ, WRITE = 1 << 63, 1 << 61, 1 << 60, 1 << 59, 1 << 58
SPECIAL, PMD_HUGE = 1 << 57, 1 << 56
EXEC, HW_W, PRESENT, PRIV = 0x80, 0x40, 0x10, 0x100
CP, CV = 0x400, 0x200
USER_RW = V | PRESENT | ACC | READ | WRITE | MOD | HW_W | CP | CV


def put(mem: bytearray, pa: int, val: int, size: int = 8) -> None:
    mem[pa:pa + size] = val.to_bytes(size, "big")


def get(mem: bytearray, pa: int, size: int = 8) -> int:
    return int.from_bytes(mem[pa:pa + size], "big")


def fresh(size: int = 1 << 24) -> bytearray:
    """An image with an empty root block built by the arch's own alloc_root."""
    mem = bytearray(size)
    root = A.alloc_root(lambda level, nbytes: ROOT, lambda pa, sz, v: put(mem, pa, v, sz))
    assert root == ROOT
    return mem


def mapped(pte: int, va: int = VA) -> bytearray:
    mem = fresh()
    put(mem, ROOT + ((va >> 43) & 1023) * 8, PUD)
    put(mem, PUD + ((va >> 33) & 1023) * 8, PMD)
    put(mem, PMD + ((va >> 23) & 1023) * 8, PT)
    put(mem, PT + ((va >> 13) & 1023) * 8, pte)
    return mem


def walk(mem: bytearray, va: int, access: Access = Access.READ):
    """Run the walker as the machine does (stores land in `mem`): (messages, result)."""
    gen = A.walk(ROOT, va, access, True)
    msgs = []
    try:
        msg = next(gen)
        while True:
            msgs.append(msg)
            if isinstance(msg, PteWrite):
                put(mem, msg.pa, msg.value, msg.size)
                msg = gen.send(msg.value)
            else:
                msg = gen.send(get(mem, msg.pa, msg.size))
    except StopIteration as stop:
        return msgs, stop.value


def tsb_slot(va: int) -> int:
    return TSB + ((va >> 13) % 512) * 16


def htsb_slot(va: int) -> int:
    return HTSB + ((va >> 22) % 512) * 16


# ---- geometry -------------------------------------------------------------------------


def test_geometry_matches_the_fact_sheet():
    assert (A.page_size, A.uc_page_size, A.byteorder, A.word_size) == (8192, 8192, "big", 8)
    assert [(lv.name, lv.shift, lv.entries, lv.entry_size) for lv in A.levels] == [
        ("pgd", 43, 1024, 8), ("pud", 33, 1024, 8), ("pmd", 23, 1024, 8), ("pte", 13, 1024, 8)]
    assert all(lv.table_bytes == 8192 for lv in A.levels)
    assert A.va_bits == 53 and A.pmd_size == 8 << 20
    assert A.pgtable_policy == "page" and A.software_walker and A.rcu_table_free


def test_alloc_root_marks_every_tsb_slot_invalid():
    mem = fresh()
    for base in (TSB, HTSB):
        assert {get(mem, base + 16 * i) for i in range(512)} == {INVALID_TAG}
    assert get(mem, ROOT, 8192) == 0  # the pgd itself is empty
    assert A.root_block_bytes() == 3 * 8192


def test_walk_reads_tsbs_then_each_level_at_its_index_and_fills_the_tsb():
    pte = PAGE | USER_RW
    msgs, tr = walk(mapped(pte), VA + 0x1ABC, Access.WRITE)
    assert [(type(m).__name__, m.pa, m.size, m.level) for m in msgs] == [
        ("PteRead", tsb_slot(VA), 16, "tsb"),
        ("PteRead", htsb_slot(VA), 16, "tsb-huge"),
        ("PteRead", ROOT + I_PGD * 8, 8, "pgd"),
        ("PteRead", PUD + I_PUD * 8, 8, "pud"),
        ("PteRead", PMD + I_PMD * 8, 8, "pmd"),
        ("PteRead", PT + I_PTE * 8, 8, "pte"),
        ("PteWrite", tsb_slot(VA), 16, "tsb"),
    ]
    assert msgs[-1].value == ((VA >> 22) << 64) | pte  # tag = TAG TARGET, context 0
    assert isinstance(tr, Translation)
    assert (tr.va_base, tr.pa_base, tr.size) == (VA, PAGE, 8192)
    assert tr.pa(VA + 0x1ABC) == PAGE + 0x1ABC
    assert tr.tables == (ROOT, PUD, PMD, PT) and tr.leaf_pa == PT + I_PTE * 8


@pytest.mark.parametrize("level,shift", [("pgd", 43), ("pud", 33), ("pmd", 23), ("pte", 13)])
@pytest.mark.parametrize("idx", [1, 512, 1023])
def test_each_level_indexes_with_its_own_ten_bits(level, shift, idx):
    va = idx << shift
    msgs, tr = walk(mapped(PAGE | USER_RW, va), va)
    reads = {m.level: m.pa for m in msgs if isinstance(m, PteRead)}
    table = {"pgd": ROOT, "pud": PUD, "pmd": PMD, "pte": PT}[level]
    assert reads[level] == table + idx * 8
    for other in ("pgd", "pud", "pmd", "pte"):
        if other != level:
            assert reads[other] == {"pgd": ROOT, "pud": PUD, "pmd": PMD, "pte": PT}[other]
    assert isinstance(tr, Translation) and tr.pa(va) == PAGE


@pytest.mark.parametrize("off", [0, 1, 0x1000, 0x1FFF])
def test_8k_offsets(off):
    tr = A.translate_functional(mapped(PAGE | USER_RW), ROOT, VA + off, Access.READ)
    assert tr.pa(VA + off) == PAGE + off and tr.va_base == VA


def test_va_beyond_53_bits_faults():
    mem = mapped(PAGE | USER_RW)
    res = A.translate_functional(mem, ROOT, VA | (1 << 53), Access.READ)
    assert isinstance(res, Fault)


# ---- one bit at a time ---------------------------------------------------------------------


def test_valid_bit_is_what_the_refill_tests_present_is_what_linux_tests():
    old = PAGE | (USER_RW & ~V)  # present but not valid: pte_mkold / PROT_NONE
    res = A.translate_functional(mapped(old), ROOT, VA, Access.READ)
    assert isinstance(res, Fault) and res.level == "pte" and res.reason == "not-present"
    assert A.pte_present(old)
    no_present = PAGE | (USER_RW & ~PRESENT)
    assert isinstance(A.translate_functional(mapped(no_present), ROOT, VA, Access.READ), Translation)
    assert not A.pte_present(no_present)
    assert A.pte_none(0) and not A.pte_none(old)


def test_hardware_w_bit_not_the_software_write_bit_allows_stores():
    clean = PAGE | (USER_RW & ~(HW_W | MOD))  # writable (1<<58) but clean: no 0x40
    res = A.translate_functional(mapped(clean), ROOT, VA, Access.WRITE)
    assert isinstance(res, Fault) and res.reason == "protection"
    tr = A.translate_functional(mapped(clean), ROOT, VA, Access.READ)
    assert tr.perms & 2 == 0, "a clean page must not be writable in the TLB"
    tr = A.translate_functional(mapped(clean | HW_W), ROOT, VA, Access.WRITE)
    assert isinstance(tr, Translation) and tr.perms & 2
    assert A.pte_write(clean) and not A.pte_write(clean & ~WRITE)


def test_exec_bit_gates_fetches():
    res = A.translate_functional(mapped(PAGE | USER_RW), ROOT, VA, Access.FETCH)
    assert isinstance(res, Fault) and res.reason == "protection"
    tr = A.translate_functional(mapped(PAGE | USER_RW | EXEC), ROOT, VA, Access.FETCH)
    assert isinstance(tr, Translation) and tr.perms & 4


def test_privileged_bit_refuses_user_access():
    res = A.translate_functional(mapped(PAGE | USER_RW | PRIV), ROOT, VA, Access.READ)
    assert isinstance(res, Fault) and res.reason == "protection"


def test_mk_pte_and_the_software_bits_at_61_to_58():
    rw = A.mk_pte(PAGE, Prot(write=True))
    assert rw == PAGE | V | PRESENT | CP | CV | ACC | READ | WRITE
    ro = A.mk_pte(PAGE, Prot(write=False))
    assert ro == rw & ~WRITE
    assert A.mk_pte(PAGE, Prot(exec=True)) & EXEC and not rw & EXEC
    assert A.mk_pte(PAGE, Prot(user=False)) & PRIV and not rw & PRIV
    # pte_mkdirty: MOD, and the hardware W only when WRITE is set too
    assert A.pte_mkdirty(rw) == rw | MOD | HW_W
    assert A.pte_mkdirty(ro) == ro | MOD
    # pte_mkyoung: ACCESSED and _PAGE_R, which is the valid bit 63
    assert A.pte_mkyoung(rw & ~(V | ACC)) == rw
    assert A.pte_pa(rw) == PAGE


def test_table_entries_are_bare_physical_addresses_and_pmd_bad_is_any_subpage_bit():
    for level in ("pgd", "pud", "pmd"):
        assert A.mk_table_entry(level, PMD) == PMD  # pmd_set = __pa
        assert A.table_pa(level, PMD) == PMD
        assert not A.entry_bad(level, PMD) and A.entry_present(level, PMD)
        for bit in range(13):
            assert A.entry_bad(level, PMD | (1 << bit)), (level, bit)
        assert not A.entry_bad(level, PMD | (1 << 13))  # another page: not bad
        assert A.entry_none(level, 0) and not A.entry_present(level, 0)


def test_pmd_huge_bit_maps_8m_as_two_4m_ttes():
    huge = A.mk_pmd_huge(HUGE, Prot())
    assert huge & PMD_HUGE and huge & 0x7 == 3  # 1<<56 and the 4 MiB size code
    assert A.pmd_trans_huge(huge) and not A.entry_bad("pmd", huge)
    assert not A.pmd_trans_huge(PT)
    assert A.pmd_huge_pa(huge) == HUGE
    assert huge & HW_W, "a writable huge pmd is created dirty (see mk_pmd_huge)"
    mem = mapped(0)
    put(mem, PMD + I_PMD * 8, huge)
    va = (I_PGD << 43) | (I_PUD << 33) | (I_PMD << 23)
    for half in (0, 1):
        vah = va + half * M4 + 0x1234
        msgs, tr = walk(mem, vah)
        assert (tr.va_base, tr.pa_base, tr.size) == (va + half * M4, HUGE + half * M4, M4)
        assert tr.pa(vah) == HUGE + half * M4 + 0x1234 and tr.leaf_pa == PMD + I_PMD * 8
        fill = msgs[-1]
        assert isinstance(fill, PteWrite) and fill.pa == htsb_slot(vah) and fill.level == "tsb-huge"
        assert fill.value == ((vah >> 22) << 64) | (huge & ~M4) | (half * M4)
    # now both halves hit in the huge TSB without touching the tables
    msgs, tr = walk(mem, va + M4)
    assert [m.level for m in msgs] == ["tsb", "tsb-huge"] and tr.pa_base == HUGE + M4


def test_invalid_huge_pmd_faults():
    mem = mapped(0)
    put(mem, PMD + I_PMD * 8, A.mk_pmd_huge(HUGE, Prot()) & ~V)
    res = A.translate_functional(mem, ROOT, VA, Access.READ)
    assert isinstance(res, Fault) and res.level == "pmd"


def test_special_bit_is_ignored_by_the_refill_and_shown_in_dumps():
    tr = A.translate_functional(mapped(PAGE | USER_RW | SPECIAL), ROOT, VA, Access.READ)
    assert isinstance(tr, Translation)
    assert "SPECIAL" in A.describe_entry("pte", PAGE | USER_RW | SPECIAL)
    assert "BAD" in A.describe_entry("pmd", PT | 4)


# ---- the TSB ------------------------------------------------------------------------------


def test_tsb_hit_needs_no_table_read_and_keeps_serving_until_flushed():
    mem = mapped(PAGE | USER_RW)
    walk(mem, VA)  # miss and fill
    assert get(mem, tsb_slot(VA)) == VA >> 22 and get(mem, tsb_slot(VA) + 8) == PAGE | USER_RW
    msgs, tr = walk(mem, VA + 8)
    assert [(m.pa, m.size) for m in msgs] == [(tsb_slot(VA), 16)]
    assert tr.pa_base == PAGE and tr.tables == (TSB,) and tr.leaf_pa == tsb_slot(VA) + 8
    # the kernel changes the pte: the TSB serves the old TTE until a flush
    put(mem, PT + I_PTE * 8, (PAGE + K8) | USER_RW)
    assert A.translate_functional(mem, ROOT, VA, Access.READ).pa_base == PAGE
    A.flush_tsb(ROOT, VA, VA + K8, lambda pa, sz: get(mem, pa, sz),
                lambda pa, sz, v: put(mem, pa, v, sz))
    assert get(mem, tsb_slot(VA)) == INVALID_TAG
    assert A.translate_functional(mem, ROOT, VA, Access.READ).pa_base == PAGE + K8


@pytest.mark.parametrize("tag_bits", [INVALID_TAG, LOCK_TAG])
def test_locked_or_invalid_tags_miss(tag_bits):
    mem = mapped(PAGE | USER_RW)
    put(mem, tsb_slot(VA), (VA >> 22) | tag_bits)
    put(mem, tsb_slot(VA) + 8, (PAGE + K8) | USER_RW)
    msgs, tr = walk(mem, VA)
    assert any(m.level == "pte" for m in msgs) and tr.pa_base == PAGE


def test_a_va_sharing_the_slot_misses_and_replaces_the_entry():
    mem = mapped(PAGE | USER_RW)
    walk(mem, VA)
    alias = VA + M4  # same index bits 13..21, other tag
    assert tsb_slot(alias) == tsb_slot(VA)
    put(mem, PMD + ((alias >> 23) & 1023) * 8, PT + K8)
    put(mem, PT + K8 + ((alias >> 13) & 1023) * 8, (PAGE + 2 * K8) | USER_RW)
    msgs, tr = walk(mem, alias)
    assert any(m.level == "pte" for m in msgs) and tr.pa_base == PAGE + 2 * K8
    assert get(mem, tsb_slot(VA)) == alias >> 22


def test_flush_invalidates_only_matching_slots_per_page_and_by_scan():
    mem = mapped(PAGE | USER_RW)
    vas = [VA + i * K8 for i in range(6)]
    for i in range(1, 6):
        put(mem, PT + (I_PTE + i) * 8, (PAGE + i * K8) | USER_RW)
    for va in vas:
        walk(mem, va)
    rd = lambda pa, sz: get(mem, pa, sz)  # noqa: E731
    wr = lambda pa, sz, v: put(mem, pa, v, sz)  # noqa: E731
    A.flush_tsb(ROOT, VA + 6 * K8, VA + 100 * K8, rd, wr)  # none of ours
    assert all(get(mem, tsb_slot(va)) == va >> 22 for va in vas)
    A.flush_tsb(ROOT, vas[2], vas[4], rd, wr)  # per page: exactly two
    assert [get(mem, tsb_slot(va)) == INVALID_TAG for va in vas] == [
        False, False, True, True, False, False]
    A.flush_tsb(ROOT, 0, 1 << 53, rd, wr)  # wider than the TSB: the scan
    assert all(get(mem, tsb_slot(va)) == INVALID_TAG for va in vas)


def test_flush_of_a_wide_range_keeps_entries_outside_it():
    mem = mapped(PAGE | USER_RW)
    walk(mem, VA)
    rd = lambda pa, sz: get(mem, pa, sz)  # noqa: E731
    wr = lambda pa, sz, v: put(mem, pa, v, sz)  # noqa: E731
    A.flush_tsb(ROOT, VA + K8, VA + 4096 * K8, rd, wr)
    assert get(mem, tsb_slot(VA)) == VA >> 22
    A.flush_tsb(ROOT, VA - 4096 * K8, VA + K8, rd, wr)
    assert get(mem, tsb_slot(VA)) == INVALID_TAG


def test_huge_tsb_entries_are_flushed_by_4m_granule():
    mem = mapped(0)
    put(mem, PMD + I_PMD * 8, A.mk_pmd_huge(HUGE, Prot()))
    va = (I_PGD << 43) | (I_PUD << 33) | (I_PMD << 23)
    walk(mem, va)
    walk(mem, va + M4)
    rd = lambda pa, sz: get(mem, pa, sz)  # noqa: E731
    wr = lambda pa, sz, v: put(mem, pa, v, sz)  # noqa: E731
    A.flush_tsb(ROOT, va + M4 + K8, va + M4 + 2 * K8, rd, wr)  # one 8K page of the upper half
    assert get(mem, htsb_slot(va)) == va >> 22
    assert get(mem, htsb_slot(va + M4)) == INVALID_TAG


# ---- functional translation ------------------------------------------------------------------


def test_functional_translation_writes_nothing():
    mem = mapped(PAGE | USER_RW)
    before = bytes(mem)
    tr = A.translate_functional(mem, ROOT, VA, Access.WRITE)
    assert isinstance(tr, Translation) and bytes(mem) == before


@pytest.mark.parametrize("pgd,reason", [(0xFFFF_FFFF_FFFF_E000, "outside-ram"),
                                        (PUD | 4, "bad-entry"), (0, "not-present")])
def test_functional_translate_never_raises_on_wild_entries(pgd, reason):
    mem = fresh(size=1 << 20)
    put(mem, ROOT + I_PGD * 8, pgd)
    res = A.translate_functional(mem, ROOT, VA, Access.READ)
    assert isinstance(res, Fault) and res.reason == reason


@settings(max_examples=200, derandomize=True)
@given(st.integers(0, (1 << 43) - 1), st.booleans(), st.booleans(), st.booleans())
def test_encode_decode_round_trips(pfn, write, exec_, user):
    pa = pfn << 13
    prot = Prot(write=write, exec=exec_, user=user)
    pte = A.mk_pte(pa, prot)
    assert A.pte_pa(pte) == pa and A.pte_write(pte) == write and A.pte_present(pte)
    assert A.pte_pa(A.pte_mkdirty(A.pte_mkyoung(pte))) == pa
    assert A.table_pa("pmd", A.mk_table_entry("pmd", pa)) == pa
    assert not A.entry_bad("pmd", A.mk_table_entry("pmd", pa)) or pa == 0
    huge_pa = pa & ~((8 << 20) - 1)
    huge = A.mk_pmd_huge(huge_pa, prot)
    assert A.pmd_trans_huge(huge) and A.pmd_huge_pa(huge) == huge_pa


@settings(max_examples=100, derandomize=True)
@given(st.integers(0, (1 << 53) - 1))
def test_tsb_slot_and_tag_identify_one_page(va):
    # index bits 13..21 and tag bits 22.. together are the whole page number
    idx = (va >> 13) & 511
    assert (sp.tsb_tag(va) << 22) | (idx << 13) == va & ~(K8 - 1)


# ---- instruction decoding and the guest assembler ---------------------------------------------


def words(src: str) -> list[int]:
    ks = keystone.Ks(A.ks_arch, A.ks_mode)
    code = bytes(ks.asm(src, 0x100000)[0])
    return [int.from_bytes(code[i:i + 4], "big") for i in range(0, len(code), 4)]


@pytest.mark.parametrize("src,n", [
    ("bne %xcc, x\nx: nop", 2), ("be x\nx: nop", 2), ("ba x\nx: nop", 2), ("call x\nx: nop", 2),
    ("brz %o1, x\nx: nop", 2), ("ba,a x\nx: nop", 1), ("bn,a x\nx: nop", 1),
    ("bne,a %xcc, x\nx: nop", 2), ("jmpl %g3+8, %g0", 2), ("retl", 2),
    ("ta 0x6d", 1), ("ldx [%o0], %o1", 1), ("stx %o0, [%o0]", 1), ("add %o0, %o2, %o0", 1),
    ("nop", 1), ("sethi %hi(0x12345678), %o0", 1),
])
def test_step_len_decodes_delayed_control_transfers(src, n):
    assert sp.step_len(words(src)[0]) == n


REFUSED = {
    "load in slot": ("loop:\n  subcc %o1, 1, %o1\n  bne %xcc, loop\n   ldx [%o0], %o5\n  ta 0x6d\n",
                     "line 4: `ldx [%o0], %o5` is a memory access in the delay slot of "
                     "`bne %xcc, loop` (line 3)"),
    "store in slot": ("x:\n  call x\n   stx %o0, [%o0]\n", "line 3: `stx %o0, [%o0]` is a memory"),
    "trap in slot": ("x: ba x\n ta 0x6d\n", "line 2: `ta 0x6d` is a trap"),
    "set in slot": ("x: ba x\n set 0x12345678, %o0\n", "may assemble to two instructions"),
    "dcti couple": ("x: ba x\n ba x\n nop\n", "line 2: `ba x` is a control transfer"),
    "annulled": ("x: bne,a %xcc, x\n nop\n", "line 1: `bne,a %xcc, x` is a conditional annulled"),
    "windows": ("  save %sp, -192, %sp\n", "register windows"),
    "retl": ("  retl\n  nop\n", "register-indirect jump"),
    "no slot": ("  nop\nx: ba x\n", "line 2: `ba x` has no delay slot"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_assembler_refuses_what_cannot_be_stepped_exactly(name):
    text, msg = REFUSED[name]
    with pytest.raises(AsmError) as err:
        A.check_guest_asm(text, "t.S")
    assert msg in str(err.value) and "\n" not in str(err.value)


def test_assembler_accepts_annulled_branch_always_and_the_shipped_programs():
    A.check_guest_asm("x: ba,a x\n nop\n", "t.S")
    names = list_programs(A)
    assert {"touch", "sum_calls", "gup", "khugepaged", "read_pages"} <= set(names)
    for name in names:
        assert load_program(A, name, A.code_base).code


def test_dcti_in_the_last_word_of_an_8k_page_is_refused():
    text = "  nop\n" * 2047 + "x: ba x\n  nop\n"
    with pytest.raises(AsmError, match="byte offset 0x1ffc"):
        A.check_guest_asm(text, "t.S")
    A.check_guest_asm("  nop\n" * 2046 + "x: ba x\n  nop\n", "t.S")


# ---- end to end -------------------------------------------------------------------------------

SMALL = """
[machine]
arch = "sparc64"
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
args = [0x10002000, 24, "pmd_size // 8"]
"""

SUM = """
[machine]
arch = "sparc64"
cpus = 2
memory_mib = 16

[[cpu]]
program = "sum_calls"
args = [150, 22650]

[[cpu]]
program = "sum_calls"
args = [97, 9506]
"""


def test_touch_scenario_on_two_cpus_over_three_leaf_tables():
    m = Machine(scenario.load("touch"), arch="sparc64")
    r = m.run(RandomStrategy(3))
    assert r.ok and r.exit_codes == {0: 0, 1: 0}
    assert m.mm.rss["anon"] == 1024
    heap = m.mm.find_vma(0x10000000)
    leaves = set()
    for va in range(heap.start, heap.end, m.arch.pmd_size):
        pmd_pa = m.run_kernel_now(m.kernel.pmd_offset_alloc(m.mm, va, alloc=False), "t")
        leaves.add(m.arch.table_pa("pmd", m.kernel.read_entry_now(pmd_pa, 8)))
    assert len(leaves) >= 3
    for t in leaves:
        fi = m.frames.info(t)
        assert fi.state is FrameState.PGTABLE and fi.level == "pte"
    assert audit(m.kernel) == []
    # no two live tables (nor the TSBs beside the pgd) share a frame
    frames = [t for lst in reachable_tables(m.kernel).values() for t in lst]
    frames += [m.root + 0x2000, m.root + 0x4000]
    assert len({m.frames.frame_base(t) for t in frames}) == len(frames)
    # the TSB caches the heap pages the CPUs used last
    tags = [m.kernel.read_entry_now(m.root + 0x2000 + 16 * i, 8) for i in range(512)]
    assert sum(1 for t in tags if t != INVALID_TAG) > 0


def test_machine_tlb_flush_invalidates_the_tsb(machine_from):
    m = machine_from(SMALL)
    r = m.run(RandomStrategy(1))
    assert r.ok
    tsb = m.root + 0x2000

    def cached() -> dict[int, int]:
        """va -> slot of every valid 8K TSB entry"""
        out = {}
        for i in range(512):
            tag = m.kernel.read_entry_now(tsb + 16 * i, 8)
            if tag != INVALID_TAG:
                out[(tag << 22) | (i << 13)] = tsb + 16 * i
        return out

    before = cached()
    va = max(v for v in before if 0x10000000 <= v < 0x10000000 + 3 * (8 << 20))
    m.tlb_flush(va, va + K8)
    after = cached()
    assert va not in after and m.kernel.read_entry_now(before[va], 8) == INVALID_TAG
    assert set(after) == set(before) - {va}
    assert any("flush_tsb" in line for line in m.trace_lines(5))


def test_snapshot_reset_gives_identical_runs(machine_from):
    m = machine_from(SMALL)
    m.snapshot()
    r1 = m.run(RandomStrategy(5))
    m.reset()
    r2 = m.run(RandomStrategy(5))
    assert r1.ok and r1.exit_codes == {0: 0, 1: 0}
    assert (r1.trace_digest, r1.memory_digest) == (r2.trace_digest, r2.memory_digest)


@pytest.mark.parametrize("quantum", [1, 7, 64])
def test_delay_slots_survive_single_steps_and_slices(machine_from, quantum):
    m = machine_from(SUM)
    for c in m.cpus:
        c.quantum = quantum
    r = m.run(RandomStrategy(quantum))
    assert r.ok and r.exit_codes == {0: 0, 1: 0}


def test_slices_that_ignore_delay_slots_would_break_sum_calls(machine_from, monkeypatch):
    """The sum_calls check is not vacuous: slicing blindly loses a branch."""
    from arch.base import Arch
    monkeypatch.setattr(sp.Sparc64, "slice_count", Arch.slice_count)
    m = machine_from(SUM)
    for c in m.cpus:
        c.quantum = 64
    r = m.run(RandomStrategy(64))
    assert r.exit_codes != {0: 0, 1: 0}


def test_cli_refuses_a_load_in_a_delay_slot(tmp_path, monkeypatch, capsys):
    import guest.asm
    from emu.cli import main
    progs = tmp_path / "programs" / "sparc64"
    progs.mkdir(parents=True)
    (progs / "slot.S").write_text(textwrap.dedent("""\
        loop:
            subcc %o1, 1, %o1
            bne %xcc, loop
             ldx [%o0], %o5
            ta 0x6d
        """))
    monkeypatch.setattr(guest.asm, "PROGRAMS", tmp_path / "programs")
    f = tmp_path / "s.toml"
    f.write_text("[machine]\narch='sparc64'\ncpus=1\n[[cpu]]\nprogram='slot'\n")
    assert main(["run", str(f)]) == 2
    err = capsys.readouterr().err
    assert "line 4: `ldx [%o0], %o5` is a memory access in the delay slot" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_cli_pgtable_dump_shows_all_four_levels(capsys):
    from emu.cli import main
    assert main(["pgtable", "dump", "touch", "--arch", "sparc64", "--start", "0x10000000",
                 "--end", "0x10010000"]) == 0
    out = capsys.readouterr().out
    for level in ("pgd", "pud", "pmd", "pte"):
        assert f" {level} " in out  # plain columns when piped
    assert "V|MOD|ACC|R|WRITE" in out


def stale_tsb_entries(m: Machine) -> list[tuple[int, int, int | None]]:
    """(va, cached TTE, TTE a refill would load now) for every TSB entry that
    differs from what walking the tables gives now (None: the walk faults)."""
    read = m.kernel.read_entry_now
    cached = m.arch.tsb_entries(m.root, read)
    img = bytearray(m.mem.buf)  # a copy whose TSBs are empty
    for base in (m.root + 0x2000, m.root + 0x4000):
        for i in range(512):
            img[base + 16 * i: base + 16 * i + 8] = INVALID_TAG.to_bytes(8, "big")
    out = []
    for va, _size, tte in cached:
        gen = m.arch.walk(m.root, va, Access.READ, True)
        now = None
        try:
            msg = next(gen)
            while True:
                if isinstance(msg, PteWrite):
                    now = msg.value & ((1 << 64) - 1)
                    msg = gen.send(msg.value)
                else:
                    msg = gen.send(get(img, msg.pa, msg.size))
        except StopIteration:
            pass
        if now != tte:
            out.append((va, tte, now))
    return out


SHM = """
[machine]
arch = "sparc64"
cpus = 3
memory_mib = 32

[[vma]]
start = "8 * pmd_size"
size = "pmd_size"
kind = "shmem"
thp = true
pmd_mapping = false
populate = 8
name = "shm"

[[vma]]
start = "12 * pmd_size"
size = "page_size"
kind = "anon"
populate = true
name = "gup-out"
"""

# Kernel paths that change live tables (retract_page_tables, MADV_COLLAPSE,
# truncate, MADV_DONTNEED) against touching, reading and GUP-fast CPUs.
KERNEL_RACES = {
    "khugepaged": (("khugepaged", '"8 * pmd_size", 1'),
                   ("read_pages", '"8 * pmd_size", 4, "page_size", 3'),
                   ("gup", '"8 * pmd_size", 4, "12 * pmd_size", 3')),
    "collapse": (("madvise_collapse", '"8 * pmd_size", "pmd_size"'),
                 ("touch", '"8 * pmd_size", 16, "page_size"'),
                 ("madvise_loop", '"8 * pmd_size + page_size", "page_size", 4, 2')),
    "truncate": (("madvise_collapse", '"8 * pmd_size", "pmd_size"'),
                 ("truncate", '"8 * pmd_size", 0'),
                 ("madvise_dontneed", '"8 * pmd_size", "pmd_size"')),
}


@pytest.mark.parametrize("name", sorted(KERNEL_RACES))
@pytest.mark.parametrize("seed", [1, 2])
def test_kernel_races_run_on_sparc64_and_leave_the_tsb_coherent(machine_from, name, seed):
    text = SHM + "".join(f"\n[[cpu]]\nprogram = \"{p}\"\nargs = [{args}]\n"
                         for p, args in KERNEL_RACES[name])
    m = machine_from(text)
    r = m.run(RandomStrategy(seed))
    assert r.ok and r.exit_codes == {0: 0, 1: 0, 2: 0}, (r.violation, r.exit_codes)
    assert audit(m.kernel) == []
    assert stale_tsb_entries(m) == []


def test_without_tsb_flushes_retracted_tables_stay_cached(machine_from, monkeypatch):
    """The coherence check is not vacuous: skip flush_tsb_user and entries go stale."""
    from arch.base import Arch
    monkeypatch.setattr(sp.Sparc64, "flush_tsb", Arch.flush_tsb)
    m = machine_from(SHM + "".join(f"\n[[cpu]]\nprogram = \"{p}\"\nargs = [{args}]\n"
                                  for p, args in KERNEL_RACES["collapse"]))
    assert m.run(RandomStrategy(1)).ok
    assert stale_tsb_entries(m)
