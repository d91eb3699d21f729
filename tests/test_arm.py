"""arm (ARMv7 2-level short descriptors): formats, Linux's hardware copies, the
walker, young/dirty emulation end to end, and the Unicorn oracle."""

from __future__ import annotations

import ctypes

import pytest
import unicorn
from hypothesis import given, settings
from hypothesis import strategies as st
from unicorn import arm_const as ua

from arch import arm as A
from arch import get_arch
from arch.base import PERM_R, PERM_W, PERM_X, Access, Fault, Prot, PteRead, Translation
from emu import scenario
from emu.kernel.audit import audit, reachable_tables
from emu.machine import Machine
from emu.pgdump import dump_rows
from emu.physmem import FrameState
from emu.sched import RandomStrategy

ARM = get_arch("arm")
ROOT, PAGE, TARGET = 0x4000, 0x9000, 0x20000
VA = 0x1030_3000  # pmd pair 0x81, its second MiB (L1 0x103): Linux pte 259, hardware pt1 entry 3


def put(mem: bytearray, pa: int, val: int) -> None:
    mem[pa:pa + 4] = val.to_bytes(4, "little")


def get(mem: bytes | bytearray, pa: int) -> int:
    return int.from_bytes(mem[pa:pa + 4], "little")


def linux_mapping(pte: int, va: int = VA, size: int = 1 << 20) -> bytearray:
    """An image with a Linux pte table for `va`, both copies written as Linux does."""
    mem = bytearray(size)
    pmd_pa = ARM.entry_pa(ROOT, ARM.level("pmd"), va)
    for op in ARM.set_entry_ops("pmd", pmd_pa, ARM.mk_table_entry("pmd", PAGE)):
        put(mem, op.pa, op.value)
    for op in ARM.set_entry_ops("pte", ARM.entry_pa(PAGE, ARM.level("pte"), va), pte):
        put(mem, op.pa, op.value)
    return mem


def run_walk(mem: bytes | bytearray, va: int, access: Access, user: bool = True,
             arch: A.Arm = ARM) -> tuple[list[PteRead], Translation | Fault]:
    gen = arch.walk(ROOT, va, access, user)
    reads = []
    try:
        msg = next(gen)
        while True:
            reads.append(msg)
            msg = gen.send(get(mem, msg.pa))
    except StopIteration as stop:
        return reads, stop.value


YOUNG_RW = ARM.mk_pte(TARGET, Prot()) | A.L_PTE_DIRTY

# ---- entry formats -----------------------------------------------------------------


def test_pmd_pair_points_at_both_hardware_tables_and_back_to_the_page():
    val = ARM.mk_table_entry("pmd", PAGE)
    lo, hi = val & A.WORD, val >> 32
    assert lo & A.TABLE_BASE == PAGE + 2048 and hi & A.TABLE_BASE == PAGE + 3072
    assert lo & ~A.TABLE_BASE == hi & ~A.TABLE_BASE == A.PAGE_USER_TABLE
    assert lo & A.PMD_TYPE_MASK == A.PMD_TYPE_TABLE and (lo & A.PMD_DOMAIN_MASK) >> 5 == 1
    assert ARM.table_pa("pmd", val) == PAGE
    ops = ARM.set_entry_ops("pmd", 0x4408, val)
    assert [(o.pa, o.size, o.value) for o in ops] == [(0x4408, 4, lo), (0x440C, 4, hi)]
    assert [(o.pa, o.size, o.value) for o in ARM.clear_entry_ops("pmd", 0x4408)] == \
        [(0x4408, 4, 0), (0x440C, 4, 0)]


def test_pmd_predicates_read_the_first_word_like_pmd_val():
    assert ARM.entry_none("pmd", 0) and ARM.entry_none("pmd", 0x1234_5678 << 32)
    assert ARM.entry_present("pmd", ARM.mk_table_entry("pmd", PAGE))
    assert not ARM.entry_bad("pmd", ARM.mk_table_entry("pmd", PAGE))
    assert ARM.entry_bad("pmd", 0x0010_0000 | A.PMD_TYPE_SECT)  # pmd_bad: a section
    assert not ARM.pmd_trans_huge(ARM.mk_table_entry("pmd", PAGE))
    assert not ARM.supports_huge_pmd()


def test_set_pte_writes_linux_copy_then_hardware_copy_2048_on():
    ops = ARM.set_entry_ops("pte", PAGE + 0x40C, YOUNG_RW)
    assert [(o.pa, o.size) for o in ops] == [(PAGE + 0x40C, 4), (PAGE + 0x40C + 2048, 4)]
    assert ops[0].value == YOUNG_RW and ops[1].value == ARM.hw_pte(YOUNG_RW)
    assert [o.value for o in ARM.clear_entry_ops("pte", PAGE)] == [0, 0]


def test_linux_pte_layout_matches_the_hardware_tables():
    """Linux pte i of the page and hardware entry i live 2048 bytes apart for all 512."""
    lv = ARM.level("pte")
    for pti in (0, 255, 256, 511):
        va = (0x81 << 21) | (pti << 12)
        linux = ARM.entry_pa(PAGE, lv, va)
        hw_table = PAGE + 2048 + (1024 if pti >= 256 else 0)
        assert linux + 2048 == hw_table + (pti & 0xFF) * 4


# cpu_v7_set_pte_ext, bit by bit: (Linux pte, hardware entry wanted)
BASE = TARGET | A.L_PTE_PRESENT | A.L_PTE_YOUNG | A.L_PTE_DIRTY
HW = TARGET | A.PTE_TYPE_SMALL | A.PTE_EXT_AP0


@pytest.mark.parametrize("linux,hw", [
    (BASE, HW),                                                        # kernel-only, RW
    (BASE | A.L_PTE_USER, HW | A.PTE_EXT_AP1 | A.PTE_EXT_NG),          # user: AP1, nG
    (BASE | A.L_PTE_RDONLY, HW | A.PTE_EXT_APX),                       # read-only
    (BASE & ~A.L_PTE_DIRTY, HW | A.PTE_EXT_APX),                       # clean: write faults
    (BASE | A.L_PTE_XN, HW | A.PTE_EXT_XN),
    (BASE | A.L_PTE_SHARED, HW | A.PTE_EXT_SHARED),
    (BASE | A.L_PTE_MT_BUFFERABLE, HW | A.PTE_BUFFERABLE),
    (BASE | A.L_PTE_MT_WRITEALLOC,                                     # B, C, TEX[0]
     HW | A.PTE_BUFFERABLE | A.PTE_CACHEABLE | (1 << A.PTE_EXT_TEX_SHIFT)),
    (BASE | (0x8 << 2), HW),                                           # MT bit 3 has no h/w bit
    (BASE & ~A.L_PTE_YOUNG, 0),                                        # old: access faults
    (BASE & ~A.L_PTE_PRESENT, 0),
    (BASE | A.L_PTE_NONE, 0),                                          # PROT_NONE
    (0, 0),
])
def test_hardware_entry_per_linux_bit(linux, hw):
    assert ARM.hw_pte(linux) == hw


def test_mk_pte_and_accessors():
    pte = ARM.mk_pte(0x1234_5000, Prot(write=False, exec=True))
    assert ARM.pte_pa(pte) == 0x1234_5000 and ARM.pte_present(pte) and not ARM.pte_none(pte)
    assert not ARM.pte_write(pte) and not pte & A.L_PTE_XN and pte & A.L_PTE_USER
    assert ARM.pte_write(ARM.mk_pte(0, Prot())) and ARM.mk_pte(0, Prot()) & A.L_PTE_XN
    assert ARM.pte_mkdirty(pte) & A.L_PTE_DIRTY and ARM.pte_mkyoung(pte & ~A.L_PTE_YOUNG) == pte
    unc = ARM.pte_mkuncached(pte)
    assert unc & A.L_PTE_MT_MASK == A.L_PTE_MT_BUFFERABLE and unc & ~A.L_PTE_MT_MASK == \
        pte & ~A.L_PTE_MT_MASK


@settings(max_examples=300, deadline=None)
@given(pfn=st.integers(0, (1 << 20) - 1), write=st.booleans(), exec_=st.booleans(),
       user=st.booleans(), dirty=st.booleans(), young=st.booleans())
def test_property_pte_round_trips_and_hardware_rights(pfn, write, exec_, user, dirty, young):
    pa = pfn << 12
    pte = ARM.mk_pte(pa, Prot(write=write, exec=exec_, user=user))
    pte = ARM.pte_mkdirty(pte) if dirty else pte
    pte = pte if young else pte & ~A.L_PTE_YOUNG
    assert ARM.pte_pa(pte) == pa and ARM.pte_write(pte) == write
    hw = ARM.hw_pte(pte)
    if not young:
        assert hw == 0
        return
    assert hw & A.SMALL_BASE == pa and hw & A.PTE_TYPE_MASK in (2, 3)
    # what the MMU then grants a user access equals Linux's intent, with
    # write held back until the pte is dirty
    ap = ((hw >> 4) & 3) | ((hw >> 7) & 4)
    rights = A.ap_perms(ap, user=True)
    assert bool(rights & PERM_R) == user
    assert bool(rights & PERM_W) == (user and write and dirty)
    assert bool(hw & A.PTE_EXT_XN) == (not exec_)


@settings(max_examples=200, deadline=None)
@given(pfn=st.integers(0, (1 << 20) - 1))
def test_property_pmd_round_trip(pfn):
    val = ARM.mk_table_entry("pmd", pfn << 12)
    assert ARM.table_pa("pmd", val) == pfn << 12
    assert not ARM.entry_bad("pmd", val) and ARM.entry_present("pmd", val)
    lo, hi = ARM.set_entry_ops("pmd", 0, val)
    assert (hi.value << 32) | lo.value == val


# ---- the hardware walker --------------------------------------------------------------


def test_walk_reads_the_hardware_l1_word_and_hardware_l2_entry():
    mem = linux_mapping(YOUNG_RW)
    reads, tr = run_walk(mem, VA + 0x123, Access.WRITE)
    assert isinstance(tr, Translation) and tr.pa(VA + 0x123) == TARGET + 0x123
    assert tr.size == 4096 and tr.perms == PERM_R | PERM_W
    # L1 index 0x103 is the second word of pair 0x81; the L2 entry is in hardware pt1
    assert [(r.pa, r.size) for r in reads] == [(ROOT + 0x103 * 4, 4), (PAGE + 3072 + 3 * 4, 4)]
    assert tr.tables == (ROOT, PAGE + 3072) and tr.leaf_pa == PAGE + 3072 + 12


def test_a_present_linux_pte_with_a_zero_hardware_entry_faults():
    """Young emulation: the walker never looks at the Linux copy."""
    mem = linux_mapping(YOUNG_RW & ~A.L_PTE_YOUNG)
    assert get(mem, PAGE + 0x40C) == YOUNG_RW & ~A.L_PTE_YOUNG
    _, res = run_walk(mem, VA, Access.READ)
    assert isinstance(res, Fault) and (res.level, res.reason) == ("pte", "not-present")


def test_clean_page_is_read_only_to_the_mmu():
    mem = linux_mapping(ARM.mk_pte(TARGET, Prot()))
    _, tr = run_walk(mem, VA, Access.READ)
    assert isinstance(tr, Translation) and tr.perms == PERM_R
    _, res = run_walk(mem, VA, Access.WRITE)
    assert isinstance(res, Fault) and res.reason == "protection"


@pytest.mark.parametrize("hw_flags,user,access,ok", [
    (A.PTE_EXT_AP0 | A.PTE_EXT_AP1, True, Access.WRITE, True),                   # AP=3
    (A.PTE_EXT_AP0, True, Access.READ, False),                                   # AP=1 user
    (A.PTE_EXT_AP0, False, Access.WRITE, True),                                  # AP=1 priv
    (A.PTE_EXT_AP1, True, Access.READ, True),                                    # AP=2 user R
    (A.PTE_EXT_AP1, True, Access.WRITE, False),
    (A.PTE_EXT_AP1, False, Access.WRITE, True),
    (A.PTE_EXT_APX | A.PTE_EXT_AP0, False, Access.READ, True),                   # AP=5 priv RO
    (A.PTE_EXT_APX | A.PTE_EXT_AP0, False, Access.WRITE, False),
    (A.PTE_EXT_APX | A.PTE_EXT_AP0, True, Access.READ, False),
    (A.PTE_EXT_APX, True, Access.READ, False),                                   # AP=4 reserved
    (A.PTE_EXT_APX | A.PTE_EXT_AP0 | A.PTE_EXT_AP1, True, Access.WRITE, False),  # AP=7
    (A.PTE_EXT_APX | A.PTE_EXT_AP0 | A.PTE_EXT_AP1, True, Access.FETCH, True),
    (0, False, Access.READ, False),                                              # AP=0
    (A.PTE_EXT_AP0 | A.PTE_EXT_AP1 | A.PTE_EXT_XN, True, Access.FETCH, False),   # XN
    (A.PTE_EXT_AP0 | A.PTE_EXT_AP1 | A.PTE_EXT_XN, True, Access.READ, True),
])
def test_small_page_access_permissions(hw_flags, user, access, ok):
    mem = linux_mapping(0)
    put(mem, PAGE + 3072 + 12, TARGET | A.PTE_TYPE_SMALL | hw_flags)
    _, res = run_walk(mem, VA, access, user)
    assert isinstance(res, Translation) == ok


def test_pxn_table_stops_privileged_fetch_only():
    mem = linux_mapping(YOUNG_RW & ~A.L_PTE_XN)
    assert get(mem, ROOT + 0x103 * 4) & A.PMD_PXNTABLE
    assert isinstance(run_walk(mem, VA, Access.FETCH, user=True)[1], Translation)
    res = run_walk(mem, VA, Access.FETCH, user=False)[1]
    assert isinstance(res, Fault) and res.reason == "protection"
    assert isinstance(run_walk(mem, VA, Access.READ, user=False)[1], Translation)


def test_domain_fault_comes_before_the_l2_read():
    mem = linux_mapping(YOUNG_RW)
    l1 = get(mem, ROOT + 0x103 * 4)
    put(mem, ROOT + 0x103 * 4, (l1 & ~A.PMD_DOMAIN_MASK) | (7 << A.PMD_DOMAIN_SHIFT))
    reads, res = run_walk(mem, VA, Access.READ)
    assert isinstance(res, Fault) and (res.level, res.reason) == ("pmd", "protection")
    assert len(reads) == 1
    # a manager domain skips the permission checks altogether
    manager = A.Arm(dacr=A.DACR_USER | A.domain_val(7, A.DOMAIN_MANAGER))
    put(mem, PAGE + 3072 + 12, TARGET | A.PTE_TYPE_SMALL | A.PTE_EXT_XN)  # AP=0, XN
    tr = run_walk(mem, VA, Access.FETCH, arch=manager)[1]
    assert isinstance(tr, Translation) and tr.perms == PERM_R | PERM_W | PERM_X


def test_large_page_section_and_supersection():
    mem = linux_mapping(0)
    put(mem, PAGE + 3072 + 12, 0x0005_0000 | A.PTE_TYPE_LARGE | A.PTE_EXT_AP0 | A.PTE_EXT_AP1)
    tr = run_walk(mem, VA + 0x10, Access.READ)[1]
    assert tr.pa(VA + 0x10) == 0x0005_0000 + (VA & 0xFFFF) + 0x10  # 64 KiB page
    sect = 0x0030_0000 | A.PMD_TYPE_SECT | A.PMD_SECT_AP0 | A.PMD_SECT_AP1 | (1 << 5)
    put(mem, ROOT + 0x300 * 4, sect)
    tr = run_walk(mem, 0x3008_8004, Access.WRITE)[1]
    assert tr.pa(0x3008_8004) == 0x0038_8004 and tr.size == 4096  # cached 4 KiB at a time
    put(mem, ROOT + 0x300 * 4, sect | A.PMD_SECT_APX)
    assert isinstance(run_walk(mem, 0x3008_8004, Access.WRITE)[1], Fault)
    put(mem, ROOT + 0x300 * 4, (sect | A.PMD_SECT_XN) & ~A.PMD_TYPE_MASK | 3)  # PXN section
    assert isinstance(run_walk(mem, 0x3008_8004, Access.READ)[1], Translation)
    assert isinstance(run_walk(mem, 0x3008_8004, Access.FETCH)[1], Fault)  # XN
    no_pxn = A.Arm()
    no_pxn.has_pxn = False  # type 0b11 is then a reserved encoding: a fault
    assert isinstance(run_walk(mem, 0x3008_8004, Access.READ, arch=no_pxn)[1], Fault)
    # supersection: 16 MiB, domain 0, PA[35:32] from bits 23:20
    sup = 0x0100_0000 | A.PMD_TYPE_SECT | A.PMD_SECT_SUPER | A.PMD_SECT_AP0 | A.PMD_SECT_AP1
    put(mem, ROOT + 0x5A3 * 4, sup | (0x2 << 20))
    tr = run_walk(mem, 0x5A3F_0008, Access.READ)[1]
    assert tr.pa(0x5A3F_0008) == (2 << 32) | 0x013F_0008


def test_functional_translate_never_raises_on_wild_pointers():
    mem = bytearray(1 << 16)
    put(mem, ROOT + (VA >> 20) * 4, 0xFFFF_FC00 | A.PMD_TYPE_TABLE | (1 << 5))
    res = ARM.translate_functional(mem, ROOT, VA, Access.READ)
    assert isinstance(res, Fault) and res.reason == "outside-ram"
    res = ARM.translate_functional(mem, 0xFFFF_0000, VA, Access.READ)
    assert isinstance(res, Fault) and res.reason == "outside-ram"


# ---- end to end ----------------------------------------------------------------------


def heap_tables(m: Machine) -> list[int]:
    heap = m.mm.find_vma(0x10000000)
    out = []
    for va in range(heap.start, heap.end, m.arch.pmd_size):
        pmd_pa = m.arch.entry_pa(m.root, m.arch.level("pmd"), va)
        val = m.kernel.read_entry_now(pmd_pa, 8)
        if not m.arch.entry_none("pmd", val):
            out.append(m.arch.table_pa("pmd", val))
    return out


@pytest.fixture(scope="module")
def touched() -> tuple[Machine, object]:
    m = Machine(scenario.load("touch"), arch="arm")
    return m, m.run(RandomStrategy(3))


def test_touch_runs_on_both_cpus(touched):
    m, r = touched
    assert r.ok and r.exit_codes == {0: 0, 1: 0}
    assert m.mm.rss["anon"] == 1024 and not audit(m.kernel)
    tables = heap_tables(m)
    assert len(tables) >= 3
    for t in tables:
        fi = m.frames.info(t)
        assert fi.state is FrameState.PGTABLE and fi.level == "pte"


def test_touched_tables_hold_consistent_linux_and_hardware_copies(touched):
    m, _ = touched
    mem = bytes(m.mem.buf)
    n = 0
    for t in heap_tables(m):
        for i in range(512):
            linux = get(mem, t + 4 * i)
            assert get(mem, t + 2048 + 4 * i) == ARM.hw_pte(linux)
            if linux:
                n += 1
                # written, so dirty: the hardware grants the write
                assert linux & A.L_PTE_DIRTY and not ARM.hw_pte(linux) & A.PTE_EXT_APX
    assert n == 1024


def test_no_two_live_tables_overlap(touched):
    """The root, each Linux pte table and each hardware table the L1 points at are disjoint."""
    m, _ = touched
    spans = [(m.root, m.root + 16384, "root")]
    tables = reachable_tables(m.kernel)
    for t in tables["pte"]:
        spans.append((t, t + 2048, f"linux {t:#x}"))
    mem = bytes(m.mem.buf)
    hw = set()
    for i in range(4096):
        l1 = get(mem, m.root + 4 * i)
        if l1 & A.PMD_TYPE_MASK == A.PMD_TYPE_TABLE:
            base = l1 & A.TABLE_BASE
            # hardware pt0/pt1 of a page the kernel knows as a pte table
            assert base & 0xFFF in (2048, 3072) and base & ~0xFFF in tables["pte"]
            hw.add(base)
    spans += [(b, b + 1024, f"hw {b:#x}") for b in sorted(hw)]
    assert len(hw) == 2 * len(tables["pte"])
    spans.sort()
    for (_s0, e0, n0), (s1, _e1, n1) in zip(spans, spans[1:], strict=False):
        assert e0 <= s1, f"{n0} overlaps {n1}"


def test_pgtable_dump_shows_hardware_copies(touched):
    m, _ = touched
    rows = dump_rows(m.arch, m.mem, m.frames, m.root, 0x10000000, 0x10003000)
    assert [r.level for r in rows] == ["pmd", "pte", "pte"]
    assert "hw table" in rows[0].decoded and "dom1" in rows[0].decoded
    assert all(f"h/w [{r.entry_pa + 2048:#x}]" in r.decoded and "small" in r.decoded
               for r in rows[1:])


READ_THEN_WRITE = """
[machine]
arch = "arm"
cpus = 1
memory_mib = 32

[[vma]]
start = 0x10000000
size = "16 * page_size"
kind = "anon"

[[cpu]]
program = "touch"
args = [0x10000000, 16, "page_size"]
"""


def _faults(m: Machine, what: str) -> int:
    return sum(1 for line in m.trace_lines() if "walk fault" in line and what in line)


def test_dirty_emulation_first_write_to_a_clean_page_faults(machine_from):
    m = machine_from(READ_THEN_WRITE)
    for i in range(16):  # read faults: present, young, clean
        m.run_kernel_now(m.kernel.handle_mm_fault(0x10000000 + i * 4096, Access.READ), "read")
    t = heap_tables(m)[0]
    assert all(get(m.mem.buf, t + 2048 + 4 * i) & A.PTE_EXT_APX for i in range(16))
    r = m.run(RandomStrategy(0))
    assert r.ok and r.exit_codes == {0: 0}
    assert _faults(m, "write 0x100") == 16 and _faults(m, "(protection)") == 16
    for i in range(16):
        linux = get(m.mem.buf, t + 4 * i)
        assert linux & A.L_PTE_DIRTY and get(m.mem.buf, t + 2048 + 4 * i) == ARM.hw_pte(linux)
        assert not ARM.hw_pte(linux) & A.PTE_EXT_APX


def test_young_emulation_old_pte_faults_and_is_made_young(machine_from):
    m = machine_from(READ_THEN_WRITE.replace("kind = \"anon\"", "kind = \"anon\"\npopulate = true")
                     .replace('program = "touch"', 'program = "read_pages"')
                     .replace('"page_size"]', '"page_size", 2]'))
    t = heap_tables(m)[0]
    for i in range(16):  # the kernel ages the ptes (as ptep_test_and_clear_young would)
        old = get(m.mem.buf, t + 4 * i) & ~A.L_PTE_YOUNG
        m.run_kernel_now(m.kernel.set_entry("pte", t + 4 * i, old, "mkold"), "mkold")
        assert get(m.mem.buf, t + 2048 + 4 * i) == 0
    m.flush_uc_tlbs()
    for c in m.cpus:
        c.flush_all()
    r = m.run(RandomStrategy(0))
    assert r.ok and r.exit_codes == {0: 0}
    assert _faults(m, "read 0x100") == 16 and _faults(m, "at pte (not-present)") == 16
    assert all(get(m.mem.buf, t + 4 * i) & A.L_PTE_YOUNG for i in range(16))


DONTNEED = """
[machine]
arch = "arm"
cpus = 2
memory_mib = 32

[[vma]]
start = 0x10000000
size = "2 * pmd_size"
kind = "anon"
populate = true

[[cpu]]
program = "madvise_dontneed"
args = [0x10000000, "2 * pmd_size"]

[[cpu]]
program = "read_pages"
args = [0x10000000, 64, "pmd_size // 32", 3]
"""


@pytest.mark.parametrize("seed", [1, 2])
def test_madv_dontneed_against_a_reader_clears_both_copies(machine_from, seed):
    m = machine_from(DONTNEED)
    r = m.run(RandomStrategy(seed))
    assert r.ok and r.exit_codes == {0: 0, 1: 0}, (r.violation, r.crashes)
    assert not audit(m.kernel)
    mem = bytes(m.mem.buf)
    for t in reachable_tables(m.kernel)["pte"]:
        for i in range(512):
            assert get(mem, t + 2048 + 4 * i) == ARM.hw_pte(get(mem, t + 4 * i))


def test_user_mode_and_hypercall_registers(machine_from):
    m = machine_from(READ_THEN_WRITE)
    uc = m.cpus[0].uc
    assert uc.reg_read(ua.UC_ARM_REG_CPSR) & A.CPSR_MODE_MASK == A.CPSR_MODE_USR
    assert [uc.reg_read(ARM.reg(r)) for r in ("r0", "r1", "r2")] == [0x10000000, 16, 4096]
    assert m.run(RandomStrategy(0)).exit_codes == {0: 0}
    assert uc.reg_read(ua.UC_ARM_REG_CPSR) & A.CPSR_MODE_MASK == A.CPSR_MODE_USR


# ---- the Unicorn oracle ------------------------------------------------------------------


def test_supersection_extended_base_matches_unicorn_execution():
    """The oracle leaves PA[39:32] out (uc_vmem_translate truncates it); the CPU
    itself honours it: a fetch through such a supersection misses RAM, as ptemu says."""
    import oracle
    import oracle_arm
    size = 1 << 22
    mem = bytearray(size)
    root = 0x10000
    sup = A.PMD_TYPE_SECT | A.PMD_SECT_SUPER | A.PMD_SECT_AP0 | A.PMD_SECT_AP1
    for i in range(16):
        put(mem, root + (0x400 + i) * 4, sup | (1 << 20))
    tr = ARM.translate_functional(mem, root, 0x4000_0200, Access.FETCH, user=False)
    assert isinstance(tr, Translation) and tr.pa(0x4000_0200) == (1 << 32) | 0x200
    mem[0x200:0x204] = bytes.fromhex("000091e5")  # ldr r0, [r1]
    buf = ctypes.create_string_buffer(bytes(mem), size)
    uc = unicorn.Uc(unicorn.UC_ARCH_ARM, unicorn.UC_MODE_ARM)
    uc.ctl_set_tcg_buffer_size(8 << 20)
    uc.mem_map_ptr(0, size, unicorn.UC_PROT_ALL, ctypes.addressof(buf))
    plugin = oracle_arm.ArmOracle()
    plugin.cpu(uc, user=False)
    plugin.enter(uc, oracle.Context(ARM, root, root, oracle_arm.LEVELS, {"dacr": A.DACR_USER}))
    with pytest.raises(unicorn.UcError) as err:
        uc.emu_start(0x4000_0200, 0, 0, 1)
    assert err.value.errno == unicorn.UC_ERR_FETCH_UNMAPPED
    view = memoryview(buf).cast("B")
    for i in range(16):  # without the extended bits the same code runs from PA 0x200
        view[root + (0x400 + i) * 4: root + (0x400 + i) * 4 + 4] = sup.to_bytes(4, "little")
    uc.ctl(unicorn.UC_CTL_TLB_FLUSH, unicorn.UC_CTL_IO_WRITE)
    uc.reg_write(ua.UC_ARM_REG_R1, 0x4000_0000 + root + 0x400 * 4)  # loads that very L1 entry
    uc.emu_start(0x4000_0200, 0, 0, 1)
    assert uc.reg_read(ua.UC_ARM_REG_R0) == sup
