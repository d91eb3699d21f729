"""powerpc book3s64 (64K pages): radix and hash formats, walkers, and the fragment allocator.

Unicorn has no usable ppc64 MMU to compare against, so the walkers are held
to golden cases derived from the Power ISA v3.0B radix-tree rules and
Linux's book3s64 headers (one per bit and per level), plus property tests:
entry encode/decode round trips and the fragment allocator's invariants
under random alloc/free/free_defer/mmu_gather sequences.
"""

from __future__ import annotations

import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arch import UnknownArch, get_arch
from arch import powerpc as p
from arch.base import PERM_R, PERM_W, PERM_X, Access, Fault, Prot, PteRead, PteSetBits, Translation
from emu import scenario
from emu.kernel.audit import audit
from emu.kernel.core import BadPageState, KernelBug
from emu.kernel.pgalloc_frag import FragmentPolicy, destroy_pagetable_cache, pte_frag_destroy
from emu.machine import Machine
from emu.physmem import FrameState, PhysMemError
from emu.sched import RandomStrategy, RoundRobin
from emu.testing import Interleaving

RADIX = get_arch("powerpc")
HASH = get_arch("powerpc", mmu="hash")

# ---- memory images ----------------------------------------------------------------

ROOT, PUD, PMD, PT, PAGE = 0x10000, 0x20000, 0x30000, 0x40300, 0x50000
# one index per level, all different so a wrong shift reads a wrong entry
I_PGD, I_PUD, I_PMD, I_PTE = 0x1234, 0x155, 0xAA, 0x13
VA = (I_PGD << 39) | (I_PUD << 30) | (I_PMD << 21) | (I_PTE << 16)
USER_RW = p.V | p.LEAF | p.R | p.C | p.READ | p.WRITE


def image_with(entries: dict[int, int], size: int = 1 << 20) -> bytearray:
    mem = bytearray(size)
    for pa, val in entries.items():
        mem[pa:pa + 8] = val.to_bytes(8, "big")
    return mem


def radix_mapping(pte: int, pmd_entry: int | None = None) -> bytearray:
    return image_with({
        ROOT + I_PGD * 8: p.V | PUD | 9,
        PUD + I_PUD * 8: p.V | PMD | 9,
        PMD + I_PMD * 8: p.V | PT | 5 if pmd_entry is None else pmd_entry,
        PT + I_PTE * 8: pte,
    })


def run_walk(arch, mem: bytearray, va: int, access: Access, user: bool = True):
    """Run a walk over `mem` applying its R/C updates; returns (messages, result)."""
    gen = arch.walk(ROOT, va, access, user)
    msgs = []
    try:
        msg = next(gen)
        while True:
            msgs.append(msg)
            cur = int.from_bytes(mem[msg.pa:msg.pa + 8], "big")
            if isinstance(msg, PteSetBits):
                cur |= msg.bits
                mem[msg.pa:msg.pa + 8] = cur.to_bytes(8, "big")
            msg = gen.send(cur)
    except StopIteration as stop:
        return msgs, stop.value


# ---- radix: levels and NLS -----------------------------------------------------------


def test_radix_geometry_is_13_9_9_5_with_256_byte_pte_tables():
    assert [(lv.name, lv.shift, lv.entries) for lv in RADIX.levels] == \
        [("pgd", 39, 8192), ("pud", 30, 512), ("pmd", 21, 512), ("pte", 16, 32)]
    assert RADIX.level("pte").table_bytes == 256 and RADIX.pmd_size == 2 << 20
    assert [RADIX.table_alloc_bytes(n) for n in ("pgd", "pud", "pmd", "pte")] == [65536, 4096, 4096, 256]


def test_radix_walk_reads_each_levels_index_and_maps_a_64k_page():
    msgs, tr = run_walk(RADIX, radix_mapping(PAGE | USER_RW), VA + 0x1234, Access.READ)
    reads = [(m.level, m.pa) for m in msgs if isinstance(m, PteRead)]
    assert reads == [("pgd", ROOT + I_PGD * 8), ("pud", PUD + I_PUD * 8),
                     ("pmd", PMD + I_PMD * 8), ("pte", PT + I_PTE * 8)]
    assert isinstance(tr, Translation) and tr.size == 1 << 16
    assert tr.pa(VA + 0x1234) == PAGE + 0x1234 and tr.va_base == VA
    assert tr.tables == (ROOT, PUD, PMD, PT) and tr.leaf_pa == PT + I_PTE * 8


@pytest.mark.parametrize("level,bit", [("pgd", 39), ("pud", 30), ("pmd", 21), ("pte", 16)])
def test_radix_each_level_indexes_its_own_bits(level, bit):
    """Flipping the lowest index bit of one level moves only that level's read by 8 bytes."""
    mem = radix_mapping(PAGE | USER_RW)
    base = [m.pa for m in run_walk(RADIX, mem, VA, Access.READ)[0] if isinstance(m, PteRead)]
    msgs, res = run_walk(RADIX, mem, VA ^ (1 << bit), Access.READ)
    moved = [m.pa for m in msgs if isinstance(m, PteRead)]
    i = ["pgd", "pud", "pmd", "pte"].index(level)
    assert moved[:i] == base[:i] and moved[i] == base[i] + (8 if not (VA >> bit) & 1 else -8)
    assert isinstance(res, Fault) and res.level == level and res.reason == "not-present"


def test_radix_pgd_index_takes_13_bits():
    va = (0x1FFF << 39) | (I_PUD << 30)
    msgs, _ = run_walk(RADIX, image_with({}), va, Access.READ)
    assert msgs[0].pa == ROOT + 0x1FFF * 8


def test_radix_nls_sizes_the_next_table():
    """A pmd entry with NLS 9 points to a 512-entry table of 4K pages: index = bits 12..20."""
    va = (VA & ~(0x1FF << 12)) | (0x1AB << 12)
    mem = radix_mapping(0, pmd_entry=p.V | PT | 9)
    pte_pa = PT + 0x1AB * 8
    mem[pte_pa:pte_pa + 8] = (PAGE | USER_RW).to_bytes(8, "big")
    msgs, tr = run_walk(RADIX, mem, va + 0x10, Access.READ)
    assert msgs[-1].pa == pte_pa
    assert tr.size == 1 << 12 and tr.pa(va + 0x10) == PAGE + 0x10


@pytest.mark.parametrize("nls", [0, 4, 6])
def test_radix_bad_nls_faults(nls):
    """NLS below 5 is invalid; NLS 6 at the pmd level would leave 15-bit pages (no such size)."""
    res = RADIX.translate_functional(radix_mapping(PAGE | USER_RW, pmd_entry=p.V | PT | nls),
                                     ROOT, VA, Access.READ)
    if nls < 5:
        assert isinstance(res, Fault) and res.reason == "bad-entry" and res.level == "pmd"
    else:
        assert isinstance(res, Fault) and res.reason in ("bad-entry", "not-present")


@pytest.mark.parametrize("level", ["pgd", "pud", "pmd", "pte"])
def test_radix_valid_bit_at_each_level(level):
    mem = radix_mapping(PAGE | USER_RW)
    where = {"pgd": ROOT + I_PGD * 8, "pud": PUD + I_PUD * 8, "pmd": PMD + I_PMD * 8,
             "pte": PT + I_PTE * 8}[level]
    mem[where] &= 0x7F  # clear V (big-endian: bit 63 is in the first byte)
    res = RADIX.translate_functional(mem, ROOT, VA, Access.READ)
    assert isinstance(res, Fault) and res.level == level and res.reason == "not-present"


@pytest.mark.parametrize("level,shift,size", [("pmd", 21, 2 << 20), ("pud", 30, 1 << 30)])
def test_radix_leaf_bit_ends_the_walk_with_a_huge_page(level, shift, size):
    big = 0x4000_0000 if level == "pud" else 0x20_0000
    entries = {ROOT + I_PGD * 8: p.V | PUD | 9}
    if level == "pud":
        entries[PUD + I_PUD * 8] = big | USER_RW
    else:
        entries[PUD + I_PUD * 8] = p.V | PMD | 9
        entries[PMD + I_PMD * 8] = big | USER_RW
    tr = RADIX.translate_functional(image_with(entries), ROOT, VA + 0x5678, Access.READ)
    assert isinstance(tr, Translation) and tr.size == size
    assert tr.pa(VA + 0x5678) == big + ((VA + 0x5678) & (size - 1))


def test_radix_walker_sets_r_on_a_load_then_c_on_a_store():
    mem = radix_mapping(PAGE | p.V | p.LEAF | p.READ | p.WRITE)
    msgs, tr = run_walk(RADIX, mem, VA, Access.READ)
    assert [(m.level, m.bits) for m in msgs if isinstance(m, PteSetBits)] == [("pte", p.R)]
    assert tr.perms == PERM_R, "a clean page must not be writable in the TLB"
    msgs, tr = run_walk(RADIX, mem, VA, Access.WRITE)
    assert [(m.level, m.bits) for m in msgs if isinstance(m, PteSetBits)] == [("pte", p.R | p.C)]
    assert tr.perms & PERM_W
    pte = int.from_bytes(mem[PT + I_PTE * 8:PT + I_PTE * 8 + 8], "big")
    assert pte & (p.R | p.C) == p.R | p.C
    msgs, _ = run_walk(RADIX, mem, VA, Access.WRITE)
    assert not any(isinstance(m, PteSetBits) for m in msgs)


@pytest.mark.parametrize("eaa,access,ok", [
    (p.READ, Access.READ, True),
    (p.READ, Access.WRITE, False),
    (p.READ, Access.FETCH, False),
    (p.WRITE, Access.READ, True),  # read/write implies read
    (p.WRITE, Access.WRITE, True),
    (p.EXEC, Access.FETCH, True),
    (p.EXEC, Access.READ, False),
    (0, Access.READ, False),  # PROT_NONE-like: present, no rights
])
def test_radix_eaa_permission_bits(eaa, access, ok):
    res = RADIX.translate_functional(radix_mapping(PAGE | p.V | p.LEAF | p.R | p.C | eaa),
                                     ROOT, VA, access)
    assert isinstance(res, Translation) is ok
    if not ok:
        assert res.reason == "protection" and res.level == "pte"


def test_radix_translation_perms_follow_eaa():
    tr = RADIX.translate_functional(radix_mapping(PAGE | USER_RW | p.EXEC), ROOT, VA, Access.READ)
    assert tr.perms == PERM_R | PERM_W | PERM_X
    tr = RADIX.translate_functional(radix_mapping(PAGE | p.V | p.LEAF | p.R | p.EXEC), ROOT, VA,
                                    Access.FETCH)
    assert tr.perms == PERM_X


def test_radix_privileged_pages_refuse_problem_state_only():
    mem = radix_mapping(PAGE | USER_RW | p.PRIV)
    res = RADIX.translate_functional(mem, ROOT, VA, Access.READ, user=True)
    assert isinstance(res, Fault) and res.reason == "protection"
    assert isinstance(RADIX.translate_functional(mem, ROOT, VA, Access.READ, user=False), Translation)


def test_radix_ea_outside_the_52_bit_tree_faults():
    res = RADIX.translate_functional(radix_mapping(PAGE | USER_RW), ROOT, VA | (1 << 60), Access.READ)
    assert isinstance(res, Fault)


def test_functional_translate_never_raises_on_wild_pointers():
    mem = image_with({ROOT + I_PGD * 8: p.V | 0x0FFF_FFFF_FFFF_0000 | 9}, size=1 << 17)
    for arch in (RADIX, HASH):
        res = arch.translate_functional(mem, ROOT, VA, Access.READ)
        assert isinstance(res, Fault)
    res = RADIX.translate_functional(mem, ROOT, VA, Access.READ)
    assert res.reason == "outside-ram"


# ---- Linux's view of entries -----------------------------------------------------------


def test_table_entries_carry_nls_in_radix_and_only_v_in_hash():
    assert RADIX.mk_table_entry("pgd", 0x20000) == p.V | 0x20000 | 9
    assert RADIX.mk_table_entry("pud", 0x31000) == p.V | 0x31000 | 9
    assert RADIX.mk_table_entry("pmd", 0x40300) == p.V | 0x40300 | 5
    assert HASH.mk_table_entry("pmd", 0x42000) == p.V | 0x42000
    for arch in (RADIX, HASH):
        for level in ("pgd", "pud", "pmd"):
            val = arch.mk_table_entry(level, 0x40300 if arch is RADIX else 0x44000)
            assert arch.table_pa(level, val) == (0x40300 if arch is RADIX else 0x44000)
            assert arch.entry_present(level, val) and not arch.entry_bad(level, val)


def test_pte_none_ignores_hardware_and_hash_bookkeeping_bits():
    assert RADIX.pte_none(p.R | p.C) and not RADIX.pte_none(p.R | p.READ)
    assert HASH.pte_none(p.H_PAGE_HASHPTE | p.H_PAGE_BUSY) and not HASH.pte_none(p.R)


def test_pmd_bad_bits():
    assert RADIX.entry_bad("pmd", RADIX.mk_table_entry("pmd", 0x40300) | p.INVALID)
    assert RADIX.entry_bad("pud", RADIX.mk_table_entry("pud", 0x40000) | 0x20)
    assert HASH.entry_bad("pmd", p.V | 0x40100)  # not 4 KiB aligned: not a hash PTE fragment
    huge = RADIX.mk_pmd_huge(0x20_0000, Prot())
    assert RADIX.pmd_trans_huge(huge) and not RADIX.entry_bad("pmd", huge)
    hhuge = HASH.mk_pmd_huge(0x100_0000, Prot())
    assert HASH.pmd_trans_huge(hhuge) and HASH.pmd_huge_pa(hhuge) == 0x100_0000
    assert not HASH.pmd_trans_huge(p.V | p.LEAF | 0x100_0000)  # hugetlb, not THP


def test_pte_present_includes_the_invalid_marker():
    pte = RADIX.mk_pte(0x50000, Prot())
    assert RADIX.pte_present(pte)
    assert RADIX.pte_present((pte & ~p.V) | p.INVALID)  # ptep_set_access_flags window
    assert not RADIX.pte_present(pte & ~p.V)


@settings(derandomize=True, database=None, max_examples=300)
@given(pfn=st.integers(0, (1 << (p.PA_MAX - 16)) - 1), write=st.booleans(), exec_=st.booleans(),
       user=st.booleans(), hash_=st.booleans())
def test_mk_pte_round_trips(pfn, write, exec_, user, hash_):
    arch = HASH if hash_ else RADIX
    pte = arch.mk_pte(pfn << 16, Prot(write=write, exec=exec_, user=user))
    assert arch.pte_pa(pte) == pfn << 16
    assert arch.pte_present(pte) and not arch.pte_none(pte)
    assert arch.pte_write(pte) == write and bool(pte & p.EXEC) == exec_
    assert bool(pte & p.PRIV) != user
    assert arch.pte_mkdirty(arch.pte_mkyoung(pte)) & (p.R | p.C) == p.R | p.C


@settings(derandomize=True, database=None, max_examples=300)
@given(slot=st.integers(0, (1 << 44) - 1), level=st.sampled_from(["pgd", "pud", "pmd"]),
       hash_=st.booleans())
def test_table_entries_round_trip(slot, level, hash_):
    arch = HASH if hash_ else RADIX
    table = slot << 8 if arch is RADIX else (slot << 12) & ((1 << 56) - 1)
    val = arch.mk_table_entry(level, table)
    assert arch.table_pa(level, val) == table
    assert not arch.entry_none(level, val) and arch.entry_present(level, val)


@settings(derandomize=True, database=None, max_examples=200)
@given(pfn=st.integers(1, (1 << 20) - 1), pte_index=st.integers(0, 31), off=st.integers(0, 0xFFFF))
def test_radix_walk_agrees_with_linux_view(pfn, pte_index, off):
    """What mk_pte() encodes is what the hardware walker translates to."""
    pte = RADIX.mk_pte(pfn << 16, Prot())
    mem = image_with({ROOT + I_PGD * 8: RADIX.mk_table_entry("pgd", PUD),
                      PUD + I_PUD * 8: RADIX.mk_table_entry("pud", PMD),
                      PMD + I_PMD * 8: RADIX.mk_table_entry("pmd", PT),
                      PT + pte_index * 8: pte})
    va = (VA & ~(0x1F << 16)) | (pte_index << 16) | off
    tr = RADIX.translate_functional(mem, ROOT, va, Access.WRITE)
    assert isinstance(tr, Translation) and tr.pa(va) == (pfn << 16) + off


# ---- hash --------------------------------------------------------------------------------

H_PGD, H_PUD, H_PMD, H_PTE = 0x12, 0x2AB, 0x155, 0xC3
H_VA = (H_PGD << 44) | (H_PUD << 34) | (H_PMD << 24) | (H_PTE << 16)


def hash_mapping(pte: int, pmd_entry: int | None = None) -> bytearray:
    return image_with({
        ROOT + H_PGD * 8: p.V | PUD,
        PUD + H_PUD * 8: p.V | PMD,
        PMD + H_PMD * 8: p.V | 0x41000 if pmd_entry is None else pmd_entry,
        0x41000 + H_PTE * 8: pte,
    })


def test_hash_geometry_and_fragment_sizes():
    assert [(lv.name, lv.shift, lv.entries) for lv in HASH.levels] == \
        [("pgd", 44, 256), ("pud", 34, 1024), ("pmd", 24, 1024), ("pte", 16, 256)]
    assert HASH.table_alloc_bytes("pte") == 4096 and HASH.level("pte").table_bytes == 2048
    assert HASH.pmd_size == 16 << 20 and HASH.software_walker and not RADIX.software_walker


def test_hash_page_walks_linux_tables_and_sets_r_and_hashpte():
    mem = hash_mapping(HASH.mk_pte(PAGE, Prot()) & ~p.R)
    msgs, tr = run_walk(HASH, mem, H_VA + 0x40, Access.READ)
    assert [(m.level, m.pa) for m in msgs if isinstance(m, PteRead)] == [
        ("pgd", ROOT + H_PGD * 8), ("pud", PUD + H_PUD * 8), ("pmd", PMD + H_PMD * 8),
        ("pte", 0x41000 + H_PTE * 8)]
    assert [m.bits for m in msgs if isinstance(m, PteSetBits)] == [p.R | p.H_PAGE_HASHPTE]
    assert tr.pa(H_VA + 0x40) == PAGE + 0x40 and tr.perms == PERM_R
    _, tr = run_walk(HASH, mem, H_VA, Access.WRITE)
    assert tr.perms & PERM_W
    assert HASH.pte_pa(int.from_bytes(mem[0x41000 + H_PTE * 8:0x41000 + H_PTE * 8 + 8], "big")) == PAGE


@pytest.mark.parametrize("bits,access,reason", [
    (p.V | p.LEAF | p.WRITE, Access.WRITE, "protection"),   # check_pte_access wants READ too
    (p.V | p.LEAF | p.READ, Access.FETCH, "protection"),
    (p.V | p.LEAF | p.READ | p.PRIV, Access.READ, "protection"),
    (p.LEAF | p.READ, Access.READ, "not-present"),
])
def test_hash_check_pte_access(bits, access, reason):
    res = HASH.translate_functional(hash_mapping(PAGE | bits), ROOT, H_VA, access)
    assert isinstance(res, Fault) and res.reason == reason


def test_hash_serializing_pmd_and_thp():
    res = HASH.translate_functional(hash_mapping(0, pmd_entry=p.INVALID | 0x41000), ROOT, H_VA,
                                    Access.READ)
    assert isinstance(res, Fault) and res.level == "pmd"
    huge = HASH.mk_pmd_huge(0x100_0000, Prot())
    tr = HASH.translate_functional(hash_mapping(0, pmd_entry=huge), ROOT, H_VA + 0x123, Access.READ)
    assert tr.size == 16 << 20 and tr.pa(H_VA + 0x123) == 0x100_0000 + ((H_VA + 0x123) & 0xFF_FFFF)


def test_bad_mmu_option_is_a_clean_error():
    with pytest.raises(UnknownArch):
        get_arch("powerpc", mmu="book3e")
    with pytest.raises(UnknownArch, match="no arch option"):
        get_arch("powerpc", mmu="radix", pagesize=4096)


def test_bare_register_names_are_refused_with_a_hint():
    with pytest.raises(ValueError, match="%r3"):
        RADIX.check_guest_asm("    std r3, 0(%r4)\n", "t.S")
    RADIX.check_guest_asm("    std %r3, 0(%r4)   # r3 in a comment is fine\n", "t.S")


# ---- end to end --------------------------------------------------------------------------


@pytest.mark.parametrize("sc_name,arch,nr_ptes", [("touch", "powerpc", 33), ("touch_ppc_hash", None, 5)])
def test_touch_runs_on_both_mmus_with_fragmented_tables(sc_name, arch, nr_ptes):
    m = Machine(scenario.load(sc_name), arch=arch)
    r = m.run(RandomStrategy(3))
    assert r.ok and r.exit_codes == {0: 0, 1: 0}
    assert m.mm.rss["anon"] == 1024 and m.mm.nr_ptes == nr_ptes
    assert audit(m.kernel) == []
    # PTE tables are fragments: several in one frame, at fragment-size offsets
    k = m.kernel
    heap = m.mm.find_vma(0x10000000)
    tables = set()
    for va in range(heap.start, heap.end, m.arch.pmd_size):
        pmd_pa = m.run_kernel_now(k.pmd_offset_alloc(m.mm, va, alloc=False), "t")
        tables.add(m.arch.table_pa("pmd", k.read_entry_now(pmd_pa, 8)))
    size = m.arch.table_alloc_bytes("pte")
    frames = {m.frames.frame_base(t) for t in tables}
    assert len(frames) < len(tables)
    for t in tables:
        fi = m.frames.info(t)
        assert t % size == 0 and fi.state is FrameState.PGTABLE and fi.level == "pte"
        assert fi.subtables[t - m.frames.frame_base(t)] == "live"


def test_guest_faults_through_the_walker_set_rc_bits():
    m = Machine(scenario.load("touch"), arch="powerpc")
    assert m.run(RoundRobin()).ok
    tr = m.arch.translate_functional(m.mem.buf, m.root, 0x10000000, Access.READ)
    pte = m.kernel.read_entry_now(tr.leaf_pa, 8)
    assert pte & (p.R | p.C) == p.R | p.C and m.kernel.read_entry_now(tr.pa(0x10000000), 8) == 0x10000000
    # each 64K translation serves Unicorn's 4K TLB pages: one entry per Linux page
    sizes = {e.tr.size for c in m.cpus for e in c.tlb.values()}
    assert sizes == {1 << 16}
    heap = [va for c in m.cpus for va in c.tlb if 0x10000000 <= va < 0x14000000]
    assert heap and all(va % (1 << 16) == 0 for va in heap)


# ---- the fragment allocator -------------------------------------------------------------

SMALL = """
[machine]
arch = "powerpc"
cpus = 2
memory_mib = 64

[arch_options]
mmu = "{mmu}"

[[vma]]
start = 0x10000000
size = "pmd_size"
kind = "anon"

[[cpu]]
program = "touch"
args = [0x10000000, 1, 0]

[[cpu]]
program = "touch"
args = [0x10000000, 1, 0]
"""


def small_machine(mmu: str = "radix") -> Machine:
    return Machine(scenario.parse(textwrap.dedent(SMALL.format(mmu=mmu)), "<test>"))


class FragModel:
    """Drives the policy through the kernel and checks its invariants after every step."""

    def __init__(self, mmu: str) -> None:
        self.m = small_machine(mmu)
        self.k = self.m.kernel
        self.pol: FragmentPolicy = self.k.policy
        self.live: list[tuple[int, str]] = []  # (table, level) handed out, not yet freed
        self.issued: dict[tuple[int, int], set[int]] = {}  # (pfn, generation) -> addresses
        self.waiting: set[int] = set()  # frames whose last free was deferred

    def run(self, gen, name: str):
        return self.m.run_kernel_now(gen, name)

    def alloc(self, level: str) -> None:
        pa = self.run(self.k.alloc_table(self.m.mm, level), "alloc")
        fi = self.m.frames.info(pa)
        seen = self.issued.setdefault((fi.pfn, fi.generation), set())
        assert pa not in seen, f"fragment {pa:#x} handed out twice"
        seen.add(pa)
        self.live.append((pa, level))

    def free(self, i: int, how: str) -> None:
        pa, level = self.live.pop(i % len(self.live))
        frame = self.m.frames.frame_base(pa)
        page = self.pol.pages[frame]
        before = page.refcount
        if how == "free":
            self.run(self.pol.free(self.k, self.m.mm, pa, level), "free")
        elif how == "defer":
            self.run(self.pol.free_defer(self.k, self.m.mm, pa, level), "defer")
        else:
            self.run(self.pol.tlb_remove_table(self.k, self.m.mm, pa, level), "gather")
        if how == "gather":
            assert page.refcount == before, "mmu_gather drops the reference after the grace period"
        elif before == 1:
            fi = self.m.frames.info(frame)
            if fi.state is FrameState.RCU_PENDING:  # PG_active was set: one call_rcu
                assert page.refcount == 0 and not page.active
                self.waiting.add(frame)
            else:
                assert fi.state is FrameState.FREE and frame not in self.pol.pages
        else:
            assert page.refcount == before - 1

    def grace_period(self) -> None:
        Interleaving(self.m).pass_grace_period()
        for frame in sorted(self.waiting):
            assert self.m.frames.info(frame).state is FrameState.FREE
        # a gathered table's callback may drop a deferred page's last reference:
        # that page waits for one more grace period
        self.waiting = {f for f, page in self.pol.pages.items() if page.refcount == 0}

    def check(self) -> None:
        k, frames = self.k, self.m.frames
        for frame, page in sorted(self.pol.pages.items()):
            fi = frames.info(frame)
            states = list(fi.subtables.values())
            unissued = self.pol.unissued(k, self.m.mm, frame)
            assert page.refcount == states.count("live") + len(page.gather) + unissued, \
                f"page {frame:#x}: refcount {page.refcount}, subtables {fi.subtables}"
            if page.refcount == 0:
                assert fi.state is FrameState.RCU_PENDING and frame in self.waiting
            else:
                assert fi.state is FrameState.PGTABLE
        for pa, level in self.live:
            fi = frames.info(pa)
            assert fi.state is FrameState.PGTABLE and fi.level == level
            assert fi.subtables[pa - frames.frame_base(pa)] == "live"
        spans = sorted((pa, pa + self.pol.frag_size(k, lv)) for pa, lv in self.live)
        for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
            assert end <= start, "two live tables overlap"


OPS = st.lists(st.tuples(st.sampled_from(["alloc_pte", "alloc_pmd", "free", "defer", "gather", "gp"]),
                         st.integers(0, 1 << 16)), max_size=120)


@settings(derandomize=True, database=None, max_examples=60, deadline=None)
@given(ops=OPS, mmu=st.sampled_from(["radix", "hash"]))
def test_fragment_allocator_invariants(ops, mmu):
    fm = FragModel(mmu)
    for op, arg in ops:
        if op.startswith("alloc"):
            fm.alloc(op[6:])
        elif op == "gp":
            fm.grace_period()
        elif fm.live:
            fm.free(arg, op)
        fm.check()
    # tear down: free everything, let grace periods pass, drop the caches
    while fm.live:
        fm.free(0, "free")
    fm.grace_period()
    fm.grace_period()
    try:
        destroy_pagetable_cache(fm.k, fm.m.mm)
    except BadPageState as exc:
        # Linux's own pte_frag_destroy(): a cache page one of whose fragments
        # went by pte_free_defer() is freed with PG_active still set (see
        # test_pte_frag_destroy_frees_a_pg_active_page_with_bad_page_state)
        assert "PG_active set" in str(exc) and "pt_frag_refcount" not in str(exc)
        return
    assert fm.pol.pages == {}
    assert not any(fi.state is FrameState.RCU_PENDING for fi in fm.m.frames.frames)
    assert not any(fi.subtables and fi.state is FrameState.PGTABLE and fi.level in ("pte", "pmd")
                   and fi.pfn * fm.m.frames.frame_size != fm.m.root for fi in fm.m.frames.frames)


def test_a_page_holds_nr_fragments_then_a_new_page_starts():
    fm = FragModel("radix")
    for _ in range(256 + 1):
        fm.alloc("pte")
    pas = [pa for pa, _ in fm.live]
    first = fm.m.frames.frame_base(pas[0])
    assert [pa - first for pa in pas[:256]] == [i * 256 for i in range(256)]
    assert fm.m.frames.frame_base(pas[256]) != first
    assert fm.pol.pages[first].refcount == 256
    fm.check()


def test_freed_fragments_are_not_reused_and_the_page_goes_at_zero():
    fm = FragModel("hash")  # 16 fragments per page
    for _ in range(16):
        fm.alloc("pte")
    frame = fm.m.frames.frame_base(fm.live[0][0])
    for _ in range(15):
        fm.free(0, "free")
        fm.check()
    fm.alloc("pte")
    assert fm.m.frames.frame_base(fm.live[-1][0]) != frame, "a freed fragment was handed out again"
    assert fm.pol.pages[frame].refcount == 1
    fm.free(0, "free")
    assert frame not in fm.pol.pages and fm.m.frames.info(frame).state is FrameState.FREE


def test_pte_free_defer_defers_only_the_last_free_of_the_page():
    fm = FragModel("hash")
    for _ in range(16):
        fm.alloc("pte")
    frame = fm.m.frames.frame_base(fm.live[0][0])
    deferred = fm.live[0][0]
    fm.free(0, "defer")  # PG_active set, count 16 -> 15, nothing queued
    assert fm.pol.pages[frame].active and not fm.k.rcu.callbacks
    assert fm.m.frames.info(frame).subtables[deferred - frame] == "pending"
    for _ in range(14):
        fm.free(0, "free")
    assert not fm.k.rcu.callbacks
    fm.free(0, "free")  # the last one: test-and-clear PG_active -> call_rcu
    assert fm.m.frames.info(frame).state is FrameState.RCU_PENDING and len(fm.k.rcu.callbacks) == 1
    assert fm.k.rcu.callbacks[0].head == frame, "the page's one rcu_head"
    fm.grace_period()
    assert fm.m.frames.info(frame).state is FrameState.FREE


def test_mmu_gather_frees_the_reference_after_the_grace_period():
    fm = FragModel("hash")
    fm.alloc("pte")
    pa = fm.live[0][0]
    frame = fm.m.frames.frame_base(pa)
    fm.free(0, "gather")
    assert fm.m.frames.info(frame).subtables[pa - frame] == "pending"
    fm.check()
    fm.grace_period()
    assert fm.m.frames.info(frame).subtables[pa - frame] == "freed"
    assert fm.pol.pages[frame].refcount == 15  # the cache's unissued references remain
    pte_frag_destroy(fm.k, fm.m.mm)
    assert fm.m.frames.info(frame).state is FrameState.FREE


def test_gathered_last_free_of_an_active_page_waits_one_more_grace_period():
    fm = FragModel("hash")
    for _ in range(16):
        fm.alloc("pte")
    frame = fm.m.frames.frame_base(fm.live[0][0])
    fm.free(0, "defer")
    for _ in range(14):
        fm.free(0, "free")
    fm.free(0, "gather")
    fm.check()
    fm.grace_period()  # __tlb_remove_table drops the last reference; PG_active -> call_rcu
    assert fm.m.frames.info(frame).state is FrameState.RCU_PENDING and frame in fm.waiting
    fm.check()
    fm.grace_period()
    assert fm.m.frames.info(frame).state is FrameState.FREE and fm.pol.pages == {}


def test_pte_frag_destroy_keeps_pages_with_live_fragments():
    fm = FragModel("radix")
    for _ in range(3):
        fm.alloc("pte")
    frame = fm.m.frames.frame_base(fm.live[0][0])
    pte_frag_destroy(fm.k, fm.m.mm)
    assert fm.pol.pages[frame].refcount == 3 and fm.m.mm.context["pte_frag"] is None
    fm.check()
    fm.free(0, "free")
    fm.free(0, "free")
    fm.free(0, "free")
    assert fm.m.frames.info(frame).state is FrameState.FREE


def test_pte_fragment_free_bugs_on_a_count_at_or_below_zero():
    fm = FragModel("radix")
    fm.alloc("pte")
    pa = fm.live[0][0]
    fm.pol.pages[fm.m.frames.frame_base(pa)].refcount = 0  # a corrupted count
    with pytest.raises(KernelBug, match="BUG_ON"):
        fm.run(fm.pol.free(fm.k, fm.m.mm, pa, "pte"), "free")


def test_double_free_of_a_fragment_is_reported():
    fm = FragModel("radix")
    fm.alloc("pte")
    fm.alloc("pte")
    pa = fm.live[0][0]
    fm.free(0, "free")
    with pytest.raises(PhysMemError, match="double free"):
        fm.run(fm.pol.free(fm.k, fm.m.mm, pa, "pte"), "again")


def test_racing_allocators_leave_a_single_table_page():
    """__alloc_for_ptecache(): the CPU that finds the cache refilled keeps its page for one table."""
    m = small_machine("hash")
    k = m.kernel
    il = Interleaving(m)
    il.start(0, k.alloc_table(m.mm, "pte"))
    il.start(1, k.alloc_table(m.mm, "pte"))
    # cpu0 finds the cache empty; cpu1 finds it empty too, allocates and
    # installs its page; then cpu0 takes the lock for its own page
    res = il.run("pt1:a2b4")
    a, b = res[0], res[1]
    fa, fb = m.frames.frame_base(a), m.frames.frame_base(b)
    assert fa != fb and m.frames.frame_base(m.mm.context["pte_frag"]) == fb
    assert k.policy.pages[fa].refcount == 1 and k.policy.pages[fb].refcount == 16
    m.run_kernel_now(k.policy.free(k, m.mm, a, "pte"), "free")
    assert m.frames.info(fa).state is FrameState.FREE


def test_fragments_of_one_page_share_the_split_ptlock():
    """pte_lockptr() is the page's ptdesc lock: two tables in one page, one lock."""
    fm = FragModel("radix")
    fm.alloc("pte")
    fm.alloc("pte")
    (a, _), (b, _) = fm.live
    k = fm.k
    la = k.pte_lockptr(fm.m.mm, RADIX.mk_table_entry("pmd", a))
    lb = k.pte_lockptr(fm.m.mm, RADIX.mk_table_entry("pmd", b))
    assert la is lb


@pytest.mark.parametrize("mmu", ["radix", "hash"])
@pytest.mark.parametrize("sc_name", ["collapse_shmem", "retract_x86", "collapse_gup"])
def test_collapse_scenarios_retract_fragments_cleanly(sc_name, mmu):
    """retract_page_tables() + pte_free_defer() on fragments, under the scheduler."""
    from emu.check import default_checkers
    sc = scenario.load(sc_name)
    sc.options = {"mmu": mmu}
    sc.memory_mib = max(sc.memory_mib, 256 if mmu == "hash" else 64)  # 16 MiB THPs
    for seed in range(3):
        m = Machine(sc, arch="powerpc", checkers=default_checkers())
        r = m.run(RandomStrategy(seed))
        assert r.ok and set(r.exit_codes.values()) == {0}, (seed, r.violation, r.crashes)
        assert audit(m.kernel) == []


def test_one_walk_serves_all_sixteen_4k_unicorn_pages_of_a_64k_page():
    """Unicorn's ppc TLB granule is 4 KiB: loads from 16 sub-pages of one 64K page
    refill Unicorn's TLB from ptemu's one 64K entry, without walking again."""
    text = """
    [machine]
    arch = "powerpc"
    cpus = 1
    memory_mib = 32

    [[vma]]
    start = 0x10000000
    size = "page_size"
    kind = "anon"
    populate = true

    [[cpu]]
    program = "read_pages"
    args = [0x10000000, 16, 4096, 2]
    """
    m = Machine(scenario.parse(textwrap.dedent(text), "<test>"))
    r = m.run(RoundRobin())
    assert r.ok and r.exit_codes == {0: 0}
    leaf = m.arch.translate_functional(m.mem.buf, m.root, 0x10000000, Access.READ).leaf_pa
    walks = [t for _, _, kind, t in m.trace.records if kind == "walk" and f"[{leaf:#x}]" in str(t)]
    assert len(walks) == 1, walks


def test_hash_kernel_access_to_a_user_address_with_a_privileged_pte_is_refused():
    """__hash_page() drops _PAGE_PRIVILEGED from `access` for an EA in
    USER_REGION_ID even in kernel mode, and check_pte_access() wants the
    PRIVILEGED bits equal: a kernel access to a user address through a
    PRIVILEGED pte fails like a user one; through a user pte it succeeds."""
    priv = hash_mapping(PAGE | p.V | p.LEAF | p.READ | p.R | p.PRIV)
    for user in (True, False):
        res = HASH.translate_functional(priv, ROOT, H_VA, Access.READ, user=user)
        assert isinstance(res, Fault) and res.reason == "protection"
    plain = hash_mapping(PAGE | p.V | p.LEAF | p.READ | p.R)
    assert isinstance(HASH.translate_functional(plain, ROOT, H_VA, Access.READ, user=False), Translation)


def test_hash_16m_hugetlb_pmd_leaf_is_hashed_like_a_pte():
    """pmd_is_leaf() without H_PAGE_THP_HUGE: a hugetlb page (hpage_shift =
    PMD_SHIFT, __hash_page_huge), checked by check_pte_access()."""
    leaf = 0x200_0000 | p.V | p.LEAF | p.READ | p.WRITE | p.R | p.C
    assert not HASH.pmd_trans_huge(leaf)
    mem = hash_mapping(0, pmd_entry=leaf)
    tr = HASH.translate_functional(mem, ROOT, H_VA + 0x4567, Access.WRITE)
    assert isinstance(tr, Translation) and tr.size == 16 << 20
    assert tr.pa(H_VA + 0x4567) == 0x200_0000 + ((H_VA + 0x4567) & 0xFF_FFFF)
    res = HASH.translate_functional(hash_mapping(0, pmd_entry=leaf & ~p.READ & ~p.WRITE), ROOT,
                                    H_VA, Access.READ)
    assert isinstance(res, Fault) and res.reason == "protection"


def test_pgtable_dump_names_each_kind_of_entry():
    a = get_arch("powerpc")
    assert a.describe_entry("pmd", 0) == "none"
    assert a.describe_entry("pmd", p.V | 0x1000 | 9) == "table 0x1000 NLS=9 V"
    assert a.describe_entry("pmd", p.V | p.LEAF | 0x200000 | 0x10) == "huge page 0x200000 V|L|SAO"
    # a huge page's address is its pmd-size-aligned frame, whatever the low bits say
    assert a.describe_entry("pmd", p.V | p.LEAF | 0x210000) == "huge page 0x200000 V|L"
    assert a.describe_entry("pte", p.V | p.LEAF | 0x10000 | 0x20) == \
        "page 0x10000 V|L|NON_IDEMPOTENT"


def test_pte_frag_destroy_frees_a_pg_active_page_with_bad_page_state():
    """A finding, as Linux v6.6-v6.14 has it: pte_free_defer() sets PG_active on the
    fragment page and drops its reference; if the mm's cache still held the page's
    unissued fragments, the last reference goes in pte_frag_destroy() at exit, which
    frees the page at once without test-and-clearing PG_active (pte_fragment_free()
    would have). PG_active is in PAGE_FLAGS_CHECK_AT_FREE: with DEBUG_VM,
    free_pages_prepare() reports "Bad page state"."""
    fm = FragModel("radix")
    fm.alloc("pte")
    pa, _ = fm.live.pop()
    frame = fm.m.frames.frame_base(pa)
    fm.run(fm.pol.free_defer(fm.k, fm.m.mm, pa, "pte"), "pte_free_defer")
    page = fm.pol.pages[frame]
    assert page.active and page.refcount == page.nr - 1  # the cache holds the rest
    fm.grace_period()  # however long ago the defer was, nothing clears PG_active
    with pytest.raises(BadPageState, match=f"fragment page {frame:#x} freed with PG_active set"):
        destroy_pagetable_cache(fm.k, fm.m.mm)
