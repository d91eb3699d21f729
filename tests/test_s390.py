"""s390: entry encoding, the DAT walk, the two page-table allocators and guests
(the Unicorn oracle: tests/test_oracle.py)."""

from __future__ import annotations

import itertools
import random

import capstone
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arch import UnknownArch, get_arch
from arch import s390 as S
from arch.base import Access, Fault, Prot, Translation
from emu import scenario
from emu.kernel import Kernel
from emu.kernel.audit import audit
from emu.kernel.core import KernelBug
from emu.kernel.mm import MM
from emu.kernel.pgalloc_s390 import FREE, LIVE, PENDING, FullPagePolicy, HalvesPolicy
from emu.kernel.task import KernelTask
from emu.machine import Machine
from emu.pgdump import dump_rows
from emu.physmem import FrameAllocator, FrameState, PhysMem
from guest.asm import assemble_text, load_program

A = get_arch("s390")
NOEDAT = get_arch("s390", edat=False)

ROOT, SEG, PT, PAGE = 0x10000, 0x20000, 0x30800, 0x50000  # PT is an upper 2 KiB half
ASCE = A.asce(ROOT)  # what the vCPU holds for the mm: region-third, TL 3, private
VA = (1 << 31) * 3 + (5 << 20) + (7 << 12)  # region-third index 3, segment 5, page 7


def image(entries: dict[int, int], size: int = 1 << 20) -> bytearray:
    mem = bytearray(size)
    for pa, val in entries.items():
        mem[pa:pa + 8] = val.to_bytes(8, "big")
    return mem


def mapping(pte: int, ste: int | None = None, rtte: int | None = None) -> bytearray:
    return image({ROOT + 3 * 8: A.mk_table_entry("pud", SEG) if rtte is None else rtte,
                  SEG + 5 * 8: A.mk_table_entry("pmd", PT) if ste is None else ste,
                  PT + 7 * 8: pte})


def rw_dirty(pa: int = PAGE) -> int:
    return A.pte_mkdirty(A.mk_pte(pa, Prot(write=True)))


# ---- geometry and encodings ------------------------------------------------------------


def test_geometry_is_region_third_segment_page_with_2k_page_tables():
    assert [(lv.name, lv.shift, lv.entries, lv.table_bytes) for lv in A.levels] == [
        ("pud", 31, 2048, 16384), ("pmd", 20, 2048, 16384), ("pte", 12, 256, 2048)]
    assert A.pmd_size == 1 << 20 and A.byteorder == "big" and A.word_size == 8
    assert A.tlb_flush_kind == "broadcast"


def test_empty_entries_and_new_tables_are_not_zero():
    assert (A.empty_entry("pte"), A.empty_entry("pmd"), A.empty_entry("pud")) == (0x400, 0x20, 0x24)
    for lv in A.levels:
        init = A.table_init(lv.name)
        assert len(init) == lv.table_bytes
        vals = {int.from_bytes(init[i:i + 8], "big") for i in range(0, len(init), 8)}
        assert vals == {A.empty_entry(lv.name)} and A.entry_none(lv.name, A.empty_entry(lv.name))


def test_asce_designates_a_region_third_table_of_a_private_space():
    asce = A.asce(0x44000)
    assert asce & S.ASCE_ORIGIN == 0x44000
    assert asce & 0x0C == S.ASCE_TYPE_R3 and asce & 3 == 3 and asce & S.ASCE_PRIVATE


@settings(derandomize=True, database=None, max_examples=200, deadline=None)
@given(pfn=st.integers(1, (1 << 40) - 1), write=st.booleans(), exec_=st.booleans(),
       dirty=st.booleans())
def test_pte_round_trip_and_emulated_young_dirty(pfn, write, exec_, dirty):
    pte = A.mk_pte(pfn << 12, Prot(write=write, exec=exec_))
    if dirty:
        pte = A.pte_mkdirty(pte)
    assert A.pte_pa(pte) == pfn << 12
    assert A.pte_present(pte) and not A.pte_none(pte) and not A.entry_bad("pte", pte)
    assert A.pte_write(pte) == write
    assert not pte & S.PAGE_INVALID, "mk_pte makes the page young: the hardware may use it"
    # clean or read-only means PROTECT: a store faults and pte_mkdirty lifts it
    assert bool(pte & S.PAGE_PROTECT) == (not write or not dirty)
    assert bool(pte & S.PAGE_NOEXEC) == (not exec_)


@settings(derandomize=True, database=None, max_examples=200, deadline=None)
@given(frame=st.integers(1, (1 << 40) - 1), half=st.integers(0, 1))
def test_table_entries_round_trip(frame, half):
    seg = frame << 12
    assert A.table_pa("pud", A.mk_table_entry("pud", seg)) == seg
    rtte = A.mk_table_entry("pud", seg)
    assert rtte & 0x0F == 0x07 and A.entry_present("pud", rtte) and not A.entry_bad("pud", rtte)
    pt = (frame << 12) + half * 2048
    ste = A.mk_table_entry("pmd", pt)
    assert A.table_pa("pmd", ste) == pt and ste & 0x7FF == 0
    assert A.entry_present("pmd", ste) and not A.entry_bad("pmd", ste) and not A.pmd_trans_huge(ste)


@settings(derandomize=True, database=None, max_examples=100, deadline=None)
@given(mb=st.integers(1, (1 << 30) - 1), write=st.booleans())
def test_huge_segment_round_trip(mb, write):
    ste = A.mk_pmd_huge(mb << 20, Prot(write=write))
    assert A.pmd_trans_huge(ste) and A.pmd_huge_pa(ste) == mb << 20
    assert A.entry_bad("pmd", ste), "pmd_bad() refuses a large entry to table walkers"
    assert not ste & S.SEG_INVALID and bool(ste & S.SEG_PROTECT) == (not write)


def test_entry_bad_checks_type_and_stray_bits():
    assert A.entry_bad("pmd", A.mk_table_entry("pmd", PT) | 0x04)  # TT != segment
    assert A.entry_bad("pmd", A.mk_table_entry("pmd", PT) | 0x100)  # bit outside _SEGMENT_ENTRY_BITS
    assert A.entry_bad("pud", (SEG | 0x0B))  # a region-second type in a region-third table
    assert not A.entry_bad("pud", 0x24) and A.entry_none("pud", 0x24)


# ---- the DAT walk -----------------------------------------------------------------------


def test_4k_translation_through_an_upper_half_page_table():
    tr = A.translate_functional(mapping(rw_dirty()), ASCE, VA + 0x123, Access.WRITE)
    assert isinstance(tr, Translation)
    assert tr.pa(VA + 0x123) == PAGE + 0x123 and tr.size == 4096
    assert tr.tables == (ROOT, SEG, PT) and tr.leaf_pa == PT + 7 * 8
    assert tr.perms == 3, "read, write; IEP forbids fetches from a data page"


def test_walk_reads_one_entry_per_level_big_endian():
    mem = mapping(rw_dirty())
    walk = A.walk(ASCE, VA, Access.READ)
    reads = []
    try:
        msg = next(walk)
        while True:
            reads.append((msg.level, msg.pa, msg.size))
            msg = walk.send(int.from_bytes(mem[msg.pa:msg.pa + 8], "big"))
    except StopIteration as stop:
        assert isinstance(stop.value, Translation)
    assert reads == [("pud", ROOT + 24, 8), ("pmd", SEG + 40, 8), ("pte", PT + 56, 8)]


@pytest.mark.parametrize("pte,access,level,reason", [
    (S.PTE_EMPTY, Access.READ, "pte", "not-present"),
    (A.mk_pte(PAGE, Prot()), Access.WRITE, "pte", "protection"),  # clean: PROTECT until dirty
    (A.pte_mkdirty(A.mk_pte(PAGE, Prot(write=False))), Access.WRITE, "pte", "protection"),
    (rw_dirty(), Access.FETCH, "pte", "protection"),  # IEP
    (rw_dirty() | S.PAGE_INVALID, Access.READ, "pte", "not-present"),  # old: INVALID
    (rw_dirty() | S.PAGE_BIT52, Access.READ, "pte", "bad-entry"),
])
def test_page_level_faults(pte, access, level, reason):
    res = A.translate_functional(mapping(pte), ASCE, VA, access)
    assert isinstance(res, Fault) and (res.level, res.reason) == (level, reason)


def test_old_pte_faults_until_pte_mkyoung_and_clean_until_pte_mkdirty():
    old = A.mk_pte(PAGE, Prot()) | S.PAGE_INVALID & ~S.PAGE_YOUNG
    assert A.pte_present(old) and not A.pte_none(old)
    assert isinstance(A.translate_functional(mapping(old), ASCE, VA, Access.READ), Fault)
    young = A.pte_mkyoung(old)
    tr = A.translate_functional(mapping(young), ASCE, VA, Access.READ)
    assert isinstance(tr, Translation) and not tr.perms & 2, "clean: no write permission yet"
    dirty = A.pte_mkdirty(young)
    assert isinstance(A.translate_functional(mapping(dirty), ASCE, VA, Access.WRITE), Translation)


@pytest.mark.parametrize("ste,level,reason", [
    (S.SEG_EMPTY, "pmd", "not-present"),
    (PT | 0x04, "pmd", "bad-entry"),  # table type must be 00
    (PT | S.SEG_COMMON, "pmd", "bad-entry"),  # common segment in a private space
])
def test_segment_level_faults(ste, level, reason):
    res = A.translate_functional(mapping(rw_dirty(), ste=ste), ASCE, VA, Access.READ)
    assert isinstance(res, Fault) and (res.level, res.reason) == (level, reason)


def test_segment_protect_applies_to_every_page_below_it():
    mem = mapping(rw_dirty(), ste=A.mk_table_entry("pmd", PT) | S.SEG_PROTECT)
    assert isinstance(A.translate_functional(mem, ASCE, VA, Access.READ), Translation)
    res = A.translate_functional(mem, ASCE, VA, Access.WRITE)
    assert isinstance(res, Fault) and res.reason == "protection"


def test_protection_is_judged_after_the_walk_finds_a_frame():
    mem = mapping(S.PTE_EMPTY, ste=A.mk_table_entry("pmd", PT) | S.SEG_PROTECT)
    res = A.translate_functional(mem, ASCE, VA, Access.WRITE)
    assert res.reason == "not-present", "an invalid pte is a page-translation exception first"


@pytest.mark.parametrize("rtte,reason", [
    (S.REG3_EMPTY, "not-present"),
    (SEG | 0x08 | 3, "bad-entry"),  # region-second type in a region-third table
])
def test_region_level_faults(rtte, reason):
    res = A.translate_functional(mapping(rw_dirty(), rtte=rtte), ASCE, VA, Access.READ)
    assert isinstance(res, Fault) and res.level == "pud" and res.reason == reason


@pytest.mark.parametrize("tf,tl,ok", [(0, 3, True), (1, 3, False), (0, 0, True), (1, 1, False)])
def test_region_entry_table_offset_and_length_bound_the_segment_index(tf, tl, ok):
    # VA's segment index 5 lies in the first quarter of the segment table
    rtte = (SEG & S.REG_ORIGIN) | S.REG_TYPE_R3 | (tf << 6) | tl
    res = A.translate_functional(mapping(rw_dirty(), rtte=rtte), ASCE, VA, Access.READ)
    assert isinstance(res, Translation) == ok


def test_addresses_beyond_the_region_third_reach_fault():
    res = A.translate_functional(mapping(rw_dirty()), ASCE, VA | (1 << 42), Access.READ)
    assert isinstance(res, Fault)


def test_edat_1m_segment_frame_and_2g_region_frame():
    big = A.mk_pmd_huge(0x300000, Prot(write=True))
    tr = A.translate_functional(mapping(rw_dirty(), ste=big), ASCE, VA + 0x10, Access.WRITE)
    assert tr.size == 1 << 20 and tr.pa(VA + 0x10) == 0x300000 + (7 << 12) + 0x10
    assert tr.tables == (ROOT, SEG)
    # without EDAT-1 the FC bit is ignored: the origin is walked as a page table
    res = NOEDAT.translate_functional(mapping(rw_dirty(), ste=big), ASCE, VA, Access.READ)
    assert not (isinstance(res, Translation) and res.size == 1 << 20)
    region = (0x8000_0000 & S.REG_LARGE_ORIGIN) | S.REG_LARGE | S.REG_TYPE_R3 | 3
    tr = A.translate_functional(mapping(rw_dirty(), rtte=region), ASCE, VA, Access.READ)
    assert tr.size == 1 << 31 and tr.pa(VA) == 0x8000_0000 + (VA & 0x7FFF_FFFF)


def test_region_protect_needs_edat():
    rtte = A.mk_table_entry("pud", SEG) | S.REG_PROTECT
    mem = mapping(rw_dirty(), rtte=rtte)
    assert isinstance(A.translate_functional(mem, ASCE, VA, Access.WRITE), Fault)
    assert isinstance(NOEDAT.translate_functional(mem, ASCE, VA, Access.WRITE), Translation)


def test_functional_translate_never_raises_on_wild_pointers():
    rng = random.Random(7)
    for _ in range(300):
        mem = mapping(rng.getrandbits(64), ste=rng.getrandbits(64) & ~0x0C & ~S.SEG_COMMON,
                      rtte=rng.getrandbits(64))
        res = A.translate_functional(mem, ASCE, VA, rng.choice(list(Access)))
        assert isinstance(res, (Translation, Fault))
    res = A.translate_functional(mapping(rw_dirty(), ste=0x7FFF_F000), ASCE, VA, Access.READ)
    assert isinstance(res, Fault) and res.reason == "outside-ram"


def test_bad_arch_options_are_clean_errors():
    with pytest.raises(UnknownArch, match="pgtable"):
        get_arch("s390", pgtable="quarters")
    with pytest.raises(UnknownArch, match="no arch option"):
        get_arch("s390", fragments=4)
    assert get_arch("s390", pgtable="full-page").pgtable_policy == "full-page"


def test_the_kernel_version_picks_the_table_layout_and_an_option_overrides_it():
    assert A.pgtable_policy == "full-page", "the default is the newest Linux (6.8+: full page)"
    assert get_arch("s390", (6, 7)).pgtable_policy == "halves"
    assert get_arch("s390", (6, 8)).pgtable_policy == "full-page"
    assert get_arch("s390", pgtable="halves").pgtable_policy == "halves", "an explicit override"
    assert get_arch("s390", (6, 7), True, pgtable="halves").pgtable_policy == "halves"
    with pytest.raises(UnknownArch, match="contradicts"):
        get_arch("s390", (6, 12), True, pgtable="halves")
    with pytest.raises(UnknownArch, match="contradicts"):
        get_arch("s390", (6, 7), True, pgtable="full-page")


# ---- guest assembly ---------------------------------------------------------------------


def branch_target(code: bytes, off: int, base: int) -> int:
    """Decode the target of the RI (4-byte) or RIL (6-byte) relative branch at `off`."""
    if code[off] in (0xA7,):
        imm = int.from_bytes(code[off + 2:off + 4], "big", signed=True)
    else:
        imm = int.from_bytes(code[off + 2:off + 6], "big", signed=True)
    return base + off + 2 * imm


@pytest.mark.parametrize("base", [0x1000, 0x0800_0000, 0x3FF_0000_0000])
def test_label_branches_assemble_to_their_labels_at_any_base(base):
    # Keystone's own encoding is off by the base plus the instruction bytes
    # before the branch (data not counted): mix data in to pin that down
    text = """
top:
    lgr %r1, %r1          # 0
    brctg %r3, top        # 4 backward RI
    jne fwd               # 8 forward RI
    svc 0                 # 12 data (the svc macro)
    larl %r5, top         # 14 RIL after data
    .long 0x12345678      # 20 data
    jg fwd                # 24 RIL
    je top                # 30 RI
fwd:
    lgr %r2, %r2          # 34
    .quad top             # 38: data keeps the absolute address
"""
    code = assemble_text(A, text, base, "<branches>")
    assert branch_target(code, 4, base) == base
    assert branch_target(code, 8, base) == base + 34
    assert code[12:14] == b"\x0a\x00", "svc 0"
    assert branch_target(code, 14, base) == base
    assert branch_target(code, 24, base) == base + 34
    assert branch_target(code, 30, base) == base
    assert int.from_bytes(code[38:46], "big") == base


@pytest.mark.parametrize("program", ["touch", "gup", "hypercall", "khugepaged", "madvise_collapse",
                                     "madvise_dontneed", "madvise_loop", "read_pages", "truncate"])
def test_every_guest_program_branches_inside_itself_to_instruction_starts(program):
    prog = load_program(A, program, A.code_base)
    cs = capstone.Cs(A.cs_arch, A.cs_mode)
    insns = list(cs.disasm(prog.code, prog.base))
    assert sum(i.size for i in insns) == len(prog.code), "decodes to the end"
    starts = {i.address for i in insns}
    for i in insns:
        op2 = i.bytes[1] & 0x0F
        # BRC, BRAS, BRCT, BRCTG (RI) and LARL, BRCL, BRASL (RIL)
        if (i.bytes[0] == 0xA7 and op2 in (4, 5, 6, 7)) or (i.bytes[0] == 0xC0 and op2 in (0, 4, 5)):
            assert branch_target(i.bytes, 0, i.address) in starts, f"{i.mnemonic} {i.op_str}"


# ---- machines: the touch guest under both allocators ------------------------------------------


def touch_machine(pgtable: str) -> Machine:
    if pgtable == "halves":
        sc = scenario.load("touch")
        sc.version, sc.version_given = (6, 7), True  # Linux <= 6.7 shares a page between two tables
        return Machine(sc, arch="s390", trace=False)
    return Machine(scenario.load("touch_s390_full_page"), trace=False)


@pytest.mark.parametrize("pgtable", ["halves", "full-page"])
def test_touch_exits_zero_on_both_cpus(pgtable):
    from emu.sched import RandomStrategy
    m = touch_machine(pgtable)
    assert m.arch.pgtable_policy == pgtable and m.kernel.policy.name == pgtable
    r = m.run(RandomStrategy(3))
    assert r.ok and r.exit_codes == {0: 0, 1: 0}, (r.violation, r.crashes)
    assert m.mm.rss["anon"] == 1024 and m.mm.nr_ptes == 5
    assert audit(m.kernel) == []
    rows = [row for row in dump_rows(m.arch, m.mem, m.frames, m.root, 0, 1 << 42)
            if row.level == "pmd"]
    tables = [m.arch.table_pa("pmd", row.raw) for row in rows]
    assert len(tables) == 5  # four for the data, one for the text
    pages = {t & ~0xFFF for t in tables}
    if pgtable == "halves":
        # 2 KiB tables pack two to a page (racing allocators may each start one)
        assert len(pages) in (3, 4) and {t & 0xFFF for t in tables} == {0, 0x800}
        for t in tables:
            assert m.frames.info(t).subtables[t & 0xFFF] == LIVE
    else:
        assert len(pages) == 5 and all(t & 0xFFF == 0 for t in tables)
        assert all(not m.frames.info(t).subtables for t in tables)
    if isinstance(m.kernel.policy, HalvesPolicy):
        assert m.kernel.policy.invariants(m.kernel, m.mm) == []


@pytest.mark.parametrize("name", ["collapse_fault", "collapse_gup", "collapse_dontneed", "retract_x86"])
@pytest.mark.parametrize("pgtable", ["halves", "full-page"])
def test_collapse_scenarios_run_clean_on_s390(name, pgtable):
    """khugepaged/MADV_COLLAPSE retract tables with pte_free_defer while other
    CPUs fault, read and GUP: every program exits 0 and the books balance."""
    from emu.check import default_checkers
    from emu.sched import RandomStrategy
    sc = scenario.load(name)
    sc.options = {"pgtable": pgtable}
    # an explicit override of the layout the scenario's version would pick
    # (collapse_dontneed names 6.14 for its reclaim; halves are <= 6.7)
    sc.version_given = False
    m = Machine(sc, arch="s390", checkers=default_checkers(), trace=False)
    r = m.run(RandomStrategy(1))
    assert r.ok, (r.violation, r.deadlock, r.crashes)
    assert set(r.exit_codes.values()) == {0}
    assert audit(m.kernel) == []


def test_dump_shows_the_halves_of_a_page():
    from emu.sched import RandomStrategy
    m = touch_machine("halves")
    m.run(RandomStrategy(0))
    rows = dump_rows(m.arch, m.mem, m.frames, m.root, 0x1000_0000, 0x1000_3000)
    ptes = [r for r in rows if r.level == "pte"]
    assert len(ptes) == 3 and "+0x800:live" in ptes[0].frame_note
    assert ptes[0].decoded.startswith("page ") and "w" in ptes[0].decoded.split()[-1]


# ---- the allocators, on a bare kernel ------------------------------------------------------------


def bare_kernel(pgtable: str = "halves") -> Kernel:
    arch = get_arch("s390", pgtable=pgtable)
    mem = PhysMem(1 << 20)
    frames = FrameAllocator(mem, 4096)
    k = Kernel(arch, mem, frames, 2)
    root = frames.alloc("pud table", None, FrameState.PGTABLE, level="pud", nframes=4)
    k.init_table(root, "pud")
    k.mms = [MM(root)]
    return k


def run(k: Kernel, gen, cpu: int = 0):
    return KernelTask(k, cpu, gen, "test").run_to_completion()


def grace_periods(k: Kernel) -> None:
    """Force grace periods until no RCU callback is left (callbacks may queue more)."""
    for _ in range(8):
        online = k.online_cpus()
        for c in online:
            k.rcu.quiescent(c, k.step, online)
        while k.run_one_rcu_callback():
            pass
        if not k.rcu.callbacks:
            return
    raise AssertionError("RCU callbacks keep coming")


def alloc(k: Kernel, level: str = "pte") -> int:
    return run(k, k.alloc_table(k.mm, level))


def state(k: Kernel, pa: int) -> tuple[str, str | None]:
    fi = k.frames.info(pa)
    return fi.state.value, fi.subtables.get(pa - k.frames.frame_base(pa))


def test_two_tables_share_a_page_and_a_split_ptlock():
    k = bare_kernel()
    a, b = alloc(k), alloc(k)
    assert b == a + 0x800 and a % 4096 == 0
    assert k.policy.pages[a].bits == 0x03 and k.policy.context(k.mm)[1] == []
    assert k.policy.ptlock_key(k, a) == k.policy.ptlock_key(k, b)
    c = alloc(k)
    assert c & ~0xFFF != a, "a full page is not on pgtable_list"
    init = k.mem.read(c, 4096)
    assert {init[i:i + 8] for i in range(0, 4096, 8)} == {(0x400).to_bytes(8, "big")}


def test_freed_half_is_reused_first_and_the_page_goes_with_its_last_half():
    k = bare_kernel()
    a, b = alloc(k), alloc(k)
    alloc(k)  # a second page, listed behind
    run(k, k.pte_free(k.mm, a))
    assert state(k, a) == ("pgtable", FREE) and k.policy.context(k.mm)[1][0] == a
    assert alloc(k) == a, "page_table_free lists the page at the head"
    run(k, k.pte_free(k.mm, a))
    run(k, k.pte_free(k.mm, b))
    assert k.frames.info(a).state is FrameState.FREE and a not in k.policy.pages
    assert k.policy.invariants(k, k.mm) == []


def test_freeing_one_half_keeps_the_page_while_the_other_is_live_or_pending():
    k = bare_kernel()
    a, b = alloc(k), alloc(k)
    run(k, k.policy.tlb_remove_table(k, k.mm, b, "pte"))  # b pending a grace period
    run(k, k.pte_free(k.mm, a))
    assert state(k, a) == ("pgtable", FREE) and state(k, b) == ("pgtable", PENDING)
    assert k.policy.pages[a].bits == 0x20
    grace_periods(k)
    assert k.frames.info(a).state is FrameState.FREE


def test_a_pending_half_is_not_reused_before_its_grace_period():
    k = bare_kernel()
    a, b = alloc(k), alloc(k)
    run(k, k.policy.tlb_remove_table(k, k.mm, a, "pte"))
    assert k.policy.context(k.mm)[1] == [a], "page_table_free_rcu lists the page at the tail"
    c = alloc(k)
    assert c & ~0xFFF != a, "the PP bit keeps the half from reuse"
    grace_periods(k)
    assert state(k, a) == ("pgtable", FREE) and k.policy.pages[a].bits == 0x02
    # the fresh page (c) is at the head now; its free half goes first
    assert alloc(k) == c + 0x800
    assert alloc(k) == a
    assert k.policy.invariants(k, k.mm) == []
    del b


def test_pte_free_defer_keeps_both_halves_until_a_grace_period_after_the_last_free():
    k = bare_kernel()
    a, b = alloc(k), alloc(k)
    run(k, k.pte_free_defer(k.mm, a))
    page = k.policy.pages[a]
    assert page.active and page.bits == 0x02 and state(k, a) == ("pgtable", PENDING)
    assert k.policy.context(k.mm)[1] == [], "an Active page is never relisted"
    assert alloc(k) & ~0xFFF != a
    assert not k.rcu.callbacks, "the page's one rcu_head is used only by the last free"
    run(k, k.pte_free(k.mm, b))
    assert k.frames.info(a).state is FrameState.RCU_PENDING and not page.active
    assert [cb.head for cb in k.rcu.callbacks] == [a]
    grace_periods(k)
    assert k.frames.info(a).state is FrameState.FREE


def test_a_gathered_last_half_of_an_active_page_waits_another_grace_period():
    k = bare_kernel()
    a, b = alloc(k), alloc(k)
    run(k, k.pte_free_defer(k.mm, a))
    run(k, k.policy.tlb_remove_table(k, k.mm, b, "pte"))
    online = k.online_cpus()
    for c in online:
        k.rcu.quiescent(c, k.step, online)
    while k.run_one_rcu_callback():
        pass
    assert k.frames.info(a).state is FrameState.RCU_PENDING, "__tlb_remove_table queued pte_free_now"
    grace_periods(k)
    assert k.frames.info(a).state is FrameState.FREE and k.policy.pages == {}


def test_double_free_of_a_half_is_a_kernel_bug():
    k = bare_kernel()
    a, _b = alloc(k), alloc(k)
    run(k, k.pte_free(k.mm, a))
    with pytest.raises(KernelBug, match="double free"):
        run(k, k.pte_free(k.mm, a))


def test_crst_tables_are_four_frames_freed_whole():
    for pgtable in ("halves", "full-page"):
        k = bare_kernel(pgtable)
        seg = alloc(k, "pmd")
        assert seg % 16384 == 0
        frames = [seg + i * 4096 for i in range(4)]
        assert all(k.frames.info(f).state is FrameState.PGTABLE for f in frames)
        assert k.read_entry_now(seg + 16384 - 8, 8) == S.SEG_EMPTY
        run(k, k.policy.free(k, k.mm, seg, "pmd"))
        assert all(k.frames.info(f).state is FrameState.FREE for f in frames)
        seg = alloc(k, "pmd")
        run(k, k.policy.tlb_remove_table(k, k.mm, seg, "pmd"))
        assert all(k.frames.info(seg + i * 4096).state is FrameState.RCU_PENDING for i in range(4))
        grace_periods(k)
        assert all(k.frames.info(seg + i * 4096).state is FrameState.FREE for i in range(4))


def test_full_page_gives_each_table_its_own_page_and_defers_with_call_rcu():
    k = bare_kernel("full-page")
    assert isinstance(k.policy, FullPagePolicy)
    a, b = alloc(k), alloc(k)
    assert a % 4096 == 0 and b % 4096 == 0 and a != b
    assert k.read_entry_now(a, 8) == 0x400 and k.read_entry_now(a + 2048, 8) == 0
    run(k, k.pte_free_defer(k.mm, a))
    assert k.frames.info(a).state is FrameState.RCU_PENDING
    grace_periods(k)
    assert k.frames.info(a).state is FrameState.FREE
    run(k, k.pte_free(k.mm, b))
    assert k.frames.info(b).state is FrameState.FREE


class HalvesModel:
    """Drives the halves allocator and checks it after every routine."""

    def __init__(self) -> None:
        self.k = bare_kernel()
        self.live: list[int] = []
        self.pending: list[int] = []  # halves whose free waits for a grace period

    def alloc(self) -> None:
        t = alloc(self.k)
        assert t not in self.live and t not in self.pending, f"{t:#x} handed out while in use"
        self.live.append(t)

    def free(self, i: int, how: str) -> None:
        t = self.live.pop(i % len(self.live))
        k = self.k
        frame = t & ~0xFFF
        other = frame + (0x800 - (t - frame))
        other_live, other_pending = other in self.live, other in self.pending
        if how == "free":
            run(k, k.pte_free(k.mm, t))
        elif how == "defer":
            run(k, k.pte_free_defer(k.mm, t))
            self.pending.append(t)
        else:
            run(k, k.policy.tlb_remove_table(k, k.mm, t, "pte"))
            self.pending.append(t)
        # freeing one half while the other is live or pending keeps the page:
        # in use while the other is live, at least until a grace period if pending
        if other_live:
            assert k.frames.info(frame).state is FrameState.PGTABLE
        if other_pending:
            assert k.frames.info(frame).state is not FrameState.FREE

    def grace_period(self) -> None:
        grace_periods(self.k)
        self.pending = []

    def check(self) -> None:
        k = self.k
        assert k.policy.invariants(k, k.mm) == []
        spans = sorted((t, t + 2048) for t in self.live)
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert end <= start, "two live tables overlap"
        for t in self.live:
            assert state(k, t) == ("pgtable", LIVE)
        for t in self.pending:
            fi = k.frames.info(t)
            assert fi.state in (FrameState.PGTABLE, FrameState.RCU_PENDING), \
                f"{t:#x} was freed before its grace period"


OPS = st.lists(st.tuples(st.sampled_from(["alloc", "alloc", "free", "defer", "gather", "gp"]),
                         st.integers(0, 1 << 16)), max_size=100)


@settings(derandomize=True, database=None, max_examples=80, deadline=None)
@given(ops=OPS)
def test_halves_allocator_invariants_under_random_sequences(ops):
    hm = HalvesModel()
    for op, arg in ops:
        if op == "alloc":
            hm.alloc()
        elif op == "gp":
            hm.grace_period()
        elif hm.live:
            hm.free(arg, op)
        hm.check()
    while hm.live:
        hm.free(0, "free")
    hm.grace_period()
    k = hm.k
    assert k.policy.pages == {} and k.policy.context(k.mm)[1] == []
    assert [fi.pfn for fi in k.frames.frames if fi.state is not FrameState.FREE and
            fi.level == "pte"] == []


def schedules(make):
    """Every interleaving of the tasks `make()` builds, each replayed on a fresh kernel.

    Yields (kernel, tasks) once all tasks are done; a state where some task is
    unfinished but none can step is a deadlock and fails.
    """
    stack: list[list[int]] = [[]]
    while stack:
        prefix = stack.pop()
        k, tasks = make()
        for i in prefix:
            tasks[i].step()
        runnable = [i for i, t in enumerate(tasks) if not t.done and t.runnable()]
        if not runnable:
            assert all(t.done for t in tasks), f"deadlock after {prefix}"
            yield k, tasks
            continue
        stack.extend(prefix + [i] for i in reversed(runnable))


def routine(k: Kernel, how: str, t: int):
    if how == "free":
        return k.pte_free(k.mm, t)
    if how == "defer":
        return k.pte_free_defer(k.mm, t)
    if how == "gather":
        return k.policy.tlb_remove_table(k, k.mm, t, "pte")
    return k.alloc_table(k.mm, "pte")


@pytest.mark.parametrize("first,second", [("free", "free"), ("defer", "free"), ("defer", "defer"),
                                          ("gather", "free"), ("gather", "defer")])
def test_concurrent_frees_of_both_halves_free_the_page_exactly_once(first, second):
    def make():
        k = bare_kernel()
        a, b = alloc(k), alloc(k)
        return k, [KernelTask(k, 0, routine(k, first, a), "t0"),
                   KernelTask(k, 1, routine(k, second, b), "t1")]

    n = 0
    last = set()  # which CPU dropped the page's last bit
    for k, _tasks in schedules(make):
        assert k.policy.invariants(k, k.mm) == []
        fi = k.frames.info(0x1000)
        last |= {e.cpu for e in fi.history if "pte_free_now" in e.what or "freed" in e.what}
        grace_periods(k)
        assert k.policy.pages == {} and fi.state is FrameState.FREE
        assert [fi for fi in k.frames.frames if fi.level == "pte"] == []
        n += 1
    # the lock orders the AA/PP xor; the PP clears after it race, so either
    # CPU may drop the last bit (a gathered half's PP waits for its grace period)
    assert n >= 6
    if "gather" not in (first, second):
        assert last >= {0, 1}


def test_an_allocation_racing_a_deferred_free_never_gets_a_half_in_use():
    def make():
        k = bare_kernel()
        a, b = alloc(k), alloc(k)
        run(k, k.pte_free(k.mm, b))  # the page is listed with its upper half free
        return k, [KernelTask(k, 0, routine(k, "defer", a), "defer"),
                   KernelTask(k, 1, routine(k, "alloc", 0), "alloc")]

    outcomes = set()
    for k, (_defer, allocation) in schedules(make):
        got = allocation.result
        assert got != 0x1000, "the deferred table was handed out again"
        assert state(k, got) == ("pgtable", LIVE)
        assert k.policy.invariants(k, k.mm) == []
        outcomes.add(got)
    # the allocator either took the free upper half (before pte_free_defer
    # took the lock) or, finding the page gone from the list, a fresh page
    assert outcomes == {0x1800, 0x2000}


# ---- the ASCE: designation types, lengths, real and private space (PoP 3.3.4) ------------

R1, R2 = 0x60000, 0x68000


def five_level(pte: int) -> bytearray:
    """VA 0 + VA through region-first -> -second -> -third -> segment -> page."""
    va_r1, va_r2 = (VA >> 53) & 0x7FF, (VA >> 42) & 0x7FF
    mem = mapping(pte)
    for pa, val in {R1 + 8 * va_r1: R2 | 0x0C | 3, R2 + 8 * va_r2: ROOT | 0x08 | 3}.items():
        mem[pa:pa + 8] = val.to_bytes(8, "big")
    return mem


@pytest.mark.parametrize("dt,origin", [(0x0C, R1), (0x08, R2), (0x04, ROOT), (0x00, SEG)])
def test_every_designation_type_walks_from_its_own_table(dt, origin):
    # a segment ASCE covers 2 GiB: there the segment table's index 5 is VA 5 MiB
    va = VA if dt else (5 << 20) + (7 << 12)
    mem = five_level(rw_dirty())
    tr = A.translate_functional(mem, origin | dt | 3, va, Access.WRITE)
    assert isinstance(tr, Translation) and tr.pa(va) == PAGE
    assert tr.tables[0] == origin


@pytest.mark.parametrize("dt,too_big", [(0x08, 1 << 53), (0x04, 1 << 42), (0x00, 1 << 31)])
def test_an_index_above_the_asce_type_is_an_asce_type_exception(dt, too_big):
    res = A.translate_functional(five_level(rw_dirty()), ROOT | dt | 3, too_big, Access.READ)
    assert isinstance(res, Fault) and res.reason == "bad-entry"


def test_the_asce_table_length_bounds_the_first_index():
    mem = mapping(rw_dirty())  # region-third index 3: quarter 0
    assert isinstance(A.translate_functional(mem, ROOT | 0x04 | 0, VA, Access.READ), Translation)
    far = VA + (1 << 40)  # region-third index 515: quarter 1
    res = A.translate_functional(mem, ROOT | 0x04 | 0, far, Access.READ)
    assert isinstance(res, Fault) and res.reason == "not-present" and res.level == "pud"


def test_real_space_asce_maps_every_address_to_itself():
    tr = A.translate_functional(bytearray(16), ROOT | S.ASCE_REAL_SPACE, 0x12345678, Access.WRITE)
    assert isinstance(tr, Translation) and tr.pa(0x12345678) == 0x12345678 and tr.perms == 7


def test_common_segment_is_a_specification_exception_only_in_a_private_space():
    mem = mapping(rw_dirty(), ste=A.mk_table_entry("pmd", PT) | S.SEG_COMMON)
    res = A.translate_functional(mem, ASCE, VA, Access.READ)
    assert isinstance(res, Fault) and res.reason == "bad-entry"
    shared = ASCE & ~S.ASCE_PRIVATE
    assert isinstance(A.translate_functional(mem, shared, VA, Access.READ), Translation)


def test_storage_size_makes_a_frame_beyond_storage_an_addressing_exception():
    small = get_arch("s390", storage_size=1 << 20)
    mem = mapping(rw_dirty(pa=1 << 21))
    res = small.translate_functional(mem, ASCE, VA, Access.READ)
    assert isinstance(res, Fault) and res.reason == "outside-ram"
    tr = A.translate_functional(mem, ASCE, VA, Access.READ)  # unchecked by default
    assert isinstance(tr, Translation) and tr.pa(VA) == 1 << 21


def test_pte_bit_55_is_iep_with_the_facility_and_must_be_zero_without():
    pte = rw_dirty() | S.PAGE_NOEXEC
    res = A.translate_functional(mapping(pte), ASCE, VA, Access.FETCH)
    assert isinstance(res, Fault) and res.reason == "protection"
    no_iep = get_arch("s390", iep=False)
    res = no_iep.translate_functional(mapping(pte), ASCE, VA, Access.READ)
    assert isinstance(res, Fault) and res.reason == "bad-entry"


def test_the_vcpu_holds_linux_asce():
    assert A.hw_root(ROOT) == ASCE and ASCE & S.ASCE_TYPE_MASK == S.ASCE_TYPE_R3


def test_each_vcpu_holds_the_asce_and_walks_through_it():
    m = touch_machine("halves")
    cpu = m.cpus[0]
    assert cpu.mmu_root == cpu.hw_root == A.asce(m.root)
    m.populate(m.mm.find_vma(0x10000000), 1)
    tr = m.run_walk_now(cpu, 0x10000000, Access.READ)
    assert isinstance(tr, Translation) and tr.tables[0] == m.root


def test_pte_bits_are_linuxs():
    """Golden values from pgtable.h (pgtable_facts.md section 3), so a wrong
    bit constant cannot hide behind tests that use the same constant."""
    clean = A.mk_pte(PAGE, Prot())  # s390's mk_pte() makes the pte young
    # PROTECT 0x200 (clean), NOEXEC 0x100, WRITE 0x20, READ 0x10, YOUNG 4, PRESENT 1
    assert clean == PAGE | 0x200 | 0x100 | 0x20 | 0x10 | 0x4 | 0x1
    # DIRTY 8 and SOFT_DIRTY 2 set, PROTECT dropped: the hardware may write
    assert A.pte_mkdirty(clean) == PAGE | 0x100 | 0x3f
    # an old pte is INVALID 0x400 for the hardware, and the empty pte is just that bit
    assert A.empty_entry("pte") == 0x400 and A.pte_none(0x400)
    assert A.pte_mkyoung((clean & ~0x4) | 0x400) == clean
    # each bit alone, on a value that has no other software bit
    assert A.pte_mkyoung(PAGE) == PAGE | 0x4 and A.pte_mkdirty(PAGE) == PAGE | 0x8 | 0x2
