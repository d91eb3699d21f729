"""The Unicorn oracle (tools/oracle.py): agreement on hostile tables, that it
catches a walker with one wrong mask, and each documented Unicorn deviation."""

from __future__ import annotations

import oracle
import pytest
import unicorn

from arch import arm as A
from arch import get_arch
from arch import s390 as S
from arch import x86_pae as X
from arch.base import Access, Fault, Translation

oracle.load_plugins()
ARCHES = ("x86-pae", "s390", "arm")


@pytest.mark.parametrize("arch", ARCHES)
def test_agrees_on_hostile_tables_user_and_supervisor(arch):
    res = oracle.compare(arch, 3000, seed=7)
    assert res.mismatches == [], res.mismatches[:5]
    assert res.agree + sum(res.deviations.values()) == 3000
    assert res.mapped > 150  # not only faults: real translations are compared


def test_every_s390_asce_type_and_both_privileges_are_probed():
    case = oracle.PLUGINS["s390"].build(__import__("random").Random("s390/1"))
    types = {ctx.root & S.ASCE_TYPE_MASK for ctx in case.contexts}
    assert types == {0x0C, 0x08, 0x04, 0x00}
    assert {ctx.root & S.ASCE_PRIVATE for ctx in case.contexts} == {0, S.ASCE_PRIVATE}
    assert {ctx.root & S.ASCE_TABLE_LENGTH for ctx in case.contexts} >= {0, 3}


@pytest.mark.parametrize("arch", ARCHES)
def test_same_seed_same_image_and_figures(arch):
    a, b = oracle.compare(arch, 500, seed=3), oracle.compare(arch, 500, seed=3)
    assert (a.agree, a.mapped, a.deviations) == (b.agree, b.mapped, b.deviations)


# ---- a walker with one wrong mask disagrees ---------------------------------------------


def test_catches_x86_walker_ignoring_the_2m_reserved_bits(monkeypatch):
    monkeypatch.setattr(X, "HUGE_RSVD", 0)
    assert oracle.compare("x86-pae", 5000, seed=1).mismatches


def test_catches_x86_walker_taking_bits_above_maxphyaddr_as_address(monkeypatch):
    init = X.X86Pae.__init__

    def wide(self, *args, **kw):
        init(self, *args, **kw)
        self._rsvd &= ~(((1 << 52) - 1) & ~((1 << self.maxphyaddr) - 1))  # today's bug
        self._pa_mask = X.PFN_MASK
    monkeypatch.setattr(X.X86Pae, "__init__", wide)
    assert oracle.compare("x86-pae", 5000, seed=1).mismatches


def test_catches_s390_walker_ignoring_the_common_segment_bit(monkeypatch):
    monkeypatch.setattr(S, "SEG_COMMON", 0)
    assert oracle.compare("s390", 5000, seed=1).mismatches


def test_catches_s390_walker_with_a_wrong_region_length_mask(monkeypatch):
    monkeypatch.setattr(S, "REG_LENGTH", 0x1)
    assert oracle.compare("s390", 5000, seed=1).mismatches


def test_catches_arm_walker_with_a_wrong_domain_mask(monkeypatch):
    monkeypatch.setattr(A, "PMD_DOMAIN_MASK", 0x7 << A.PMD_DOMAIN_SHIFT)
    assert oracle.compare("arm", 5000, seed=1).mismatches


def test_catches_arm_walker_ignoring_apx(monkeypatch):
    original = A.ap_perms
    monkeypatch.setattr(A, "ap_perms", lambda ap, user: original(ap & 3, user))
    assert oracle.compare("arm", 3000, seed=1).mismatches


# ---- documented Unicorn deviations, one test each ------------------------------------------


def _cpu(arch_name: str, mem: oracle.PhysImage, user: bool) -> tuple[unicorn.Uc, oracle.PhysImage]:
    """A Unicorn CPU over a live copy of `mem`, and that copy."""
    plugin = oracle.PLUGINS[arch_name]
    live, bufs = oracle.live_image(plugin, mem)
    uc = oracle._new_cpu(plugin, get_arch(arch_name), bufs, user)
    uc._oracle_bufs = bufs  # keep the host memory alive with the CPU
    return uc, live


def _put(mem: oracle.PhysImage, pa: int, val: int, size: int, order: str) -> None:
    mem[pa:pa + size] = val.to_bytes(size, order)


def test_deviation_x86_pdpte_bits_2_1_and_8_5_unchecked_by_unicorn():
    """SDM 4.4.1: a PDPTE's bits 2:1 and 8:5 are reserved; Unicorn checks
    only 63:MAXPHYADDR. ptemu faults, Unicorn translates; the oracle files it
    under the deviation and nowhere else."""
    plugin = oracle.PLUGINS["x86-pae"]
    mem = plugin.new_image()
    root, pd, pt, page = 0x100000, 0x101000, 0x102000, 0x200000
    _put(mem, root, pd | X.P | X.RW, 8, "little")  # RW: reserved in a PDPTE
    _put(mem, pd, pt | X.PAGE_TABLE, 8, "little")
    _put(mem, pt, page | X.P | X.RW | X.US | X.A | X.D, 8, "little")
    uc, live = _cpu("x86-pae", mem, user=False)
    walker = get_arch("x86-pae", maxphyaddr=40)
    ctx = oracle.Context(walker, root, root, (), {"nxe": True})
    plugin.enter(uc, ctx)
    ours = walker.translate_functional(mem, root, 0x123, Access.READ, user=False)
    assert isinstance(ours, Fault) and ours.level == "pgd" and ours.reason == "bad-entry"
    theirs = oracle.uc_translate(uc, 0x123, Access.READ)
    assert theirs == page + 0x123
    case = oracle.Case(live, [ctx], {})
    assert plugin.deviation(case, ctx, 0x123, Access.READ, False, ours, theirs) == "pdpte-rsvd-2:1/8:5"
    # a different answer is not excused by the same bits
    assert plugin.deviation(case, ctx, 0x123, Access.READ, False, ours, theirs + 4096) is None


def test_deviation_s390_pte_bit_55_without_iep_ignored_by_unicorn():
    """Without the IEP facility Linux clears _PAGE_NOEXEC (bit 55) in every
    pte it makes; ptemu's walker rejects one as a specification exception,
    Unicorn ignores the bit."""
    plugin = oracle.PLUGINS["s390"]
    mem = plugin.new_image()
    seg, pt, page = 0x100000, 0x110000, 0x200000
    for i in range(2048):
        _put(mem, seg + 8 * i, S.SEG_INVALID, 8, "big")
    _put(mem, seg, pt, 8, "big")
    _put(mem, pt, page | S.PAGE_NOEXEC, 8, "big")
    asce = seg | 3  # segment-table designation, TL 3
    uc, live = _cpu("s390", mem, user=False)
    walker = get_arch("s390", edat=False, iep=False, storage_size=plugin.mem_size)
    ctx = oracle.Context(walker, asce, seg, (), {"iep": False})
    plugin.enter(uc, ctx)
    ours = walker.translate_functional(mem, asce, 0x40, Access.READ)
    assert isinstance(ours, Fault) and ours.level == "pte" and ours.reason == "bad-entry"
    theirs = oracle.uc_translate(uc, 0x40, Access.READ)
    assert theirs == page + 0x40
    case = oracle.Case(live, [ctx], {})
    assert plugin.deviation(case, ctx, 0x40, Access.READ, False, ours, theirs) == "pte-bit55-without-iep"
    # with the facility the bit is IEP, and both sides agree
    with_iep = get_arch("s390", edat=False, iep=True)
    assert isinstance(with_iep.translate_functional(mem, asce, 0x40, Access.READ), Translation)


def test_deviation_arm_pa_above_4g_truncated_by_uc_vmem_translate():
    """A supersection's PA[39:32]: Unicorn's CPU uses them (test_arm.py runs a
    fetch through one), but uc_vmem_translate returns the low 32 bits."""
    plugin = oracle.PLUGINS["arm"]
    mem = plugin.new_image()
    root = 0x10000
    sup = A.PMD_TYPE_SECT | A.PMD_SECT_SUPER | A.PMD_SECT_AP0 | A.PMD_SECT_AP1 | (0x3 << 20)
    for i in range(16):
        _put(mem, root + (0x400 + i) * 4, sup, 4, "little")
    uc, live = _cpu("arm", mem, user=False)
    ctx = oracle.Context(A.Arm(), root, root, (), {"dacr": A.DACR_USER})
    plugin.enter(uc, ctx)
    va = 0x4000_0200
    ours = ctx.arch.translate_functional(mem, root, va, Access.READ, user=False)
    assert isinstance(ours, Translation) and ours.pa(va) == (3 << 32) | 0x200
    theirs = oracle.uc_translate(uc, va, Access.READ)
    assert theirs == 0x200
    case = oracle.Case(live, [ctx], {})
    assert plugin.deviation(case, ctx, va, Access.READ, False, ours, theirs) == "pa>=4GiB-truncated"
    assert plugin.deviation(case, ctx, va, Access.READ, False, ours, 0x1200) is None


def test_cli_bad_arguments_are_one_line_and_exit_2(capsys):
    assert oracle.main(["sparc64"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no oracle for sparc64" in err


def test_x86_tables_above_4g_are_walked_alike():
    """PDPTE -> PD -> PT -> page all above 4 GiB (the CR3 below): Unicorn maps
    the region and its PAE MMU follows the 64-bit pointers; so does ptemu's."""
    plugin = oracle.PLUGINS["x86-pae"]
    high = 1 << 32
    mem = plugin.new_image()
    _put(mem, 0x100000, (high + 0x2000) | X.P, 8, "little")
    _put(mem, high + 0x2000, (high + 0x3000) | X.PAGE_TABLE, 8, "little")
    _put(mem, high + 0x3000, (high + 0x5000) | X.P | X.RW | X.US | X.A | X.D, 8, "little")
    uc, live = _cpu("x86-pae", mem, user=True)
    walker = get_arch("x86-pae", maxphyaddr=40)
    plugin.enter(uc, oracle.Context(walker, 0x100000, 0x100000, (), {"nxe": True}))
    tr = walker.translate_functional(live, 0x100000, 0x44, Access.WRITE, user=True)
    assert isinstance(tr, Translation) and tr.tables == (0x100000, high + 0x2000, high + 0x3000)
    assert oracle.uc_translate(uc, 0x44, Access.WRITE) == tr.pa(0x44) == high + 0x5044
    assert any(base >= high for base, _ in plugin.regions)


def test_a_machine_with_pte_tables_above_4g_walks_as_unicorn_does():
    """A ptemu machine whose PTE tables sit in two banks above 4 GiB
    (`[machine] highmem`, `pte_placement = "interleave"`): QEMU's PAE MMU,
    mapping the same banks of the same buffer, translates every populated and
    unpopulated page of it, every access, as ptemu's walker does."""
    import ctypes

    from emu import scenario
    from emu.machine import Machine

    text = """
    [machine]
    arch = "x86-pae"
    cpus = 1
    memory_mib = 16
    highmem = [{ base = 0x1_0000_0000, mib = 2 }, { base = 0x2_4000_0000, mib = 2 }]
    pte_placement = "interleave"
    """ + "".join(f"""
    [[vma]]
    start = "{8 + 2 * i} * pmd_size"
    size = "pmd_size"
    kind = "anon"
    prot = "{prot}"
    populate = 5
    """ for i, prot in enumerate(("rw", "r", "rwx", "rw"))) + """
    [[cpu]]
    program = "touch"
    args = ["8 * pmd_size", 1, "page_size"]
    """
    m = Machine(scenario.parse(text.replace("\n    ", "\n"), "<t>"))
    plugin = oracle.PLUGINS["x86-pae"]
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_32)
    for base, size in m.mem.banks:
        uc.mem_map_ptr(base, size, unicorn.UC_PROT_ALL, ctypes.addressof(m.mem._cbuf) + base)
    plugin.cpu(uc, False)  # supervisor probes: the user-mode stub would write low memory
    plugin.enter(uc, oracle.Context(m.arch, m.arch.hw_root(m.root), 0, (), {"nxe": True}))
    image = m.mem.image()
    banks_used, mapped = set(), 0
    for vma in range(4):
        for page in range(8):
            va = (8 + 2 * vma) * m.arch.pmd_size + page * m.arch.page_size + 0x18
            for acc in Access:
                ours = m.arch.translate_functional(image, m.arch.hw_root(m.root), va, acc,
                                                   user=False)
                mine = ours.pa(va) if isinstance(ours, Translation) else None
                assert oracle.uc_translate(uc, va, acc) == mine, (hex(va), acc, ours)
                if isinstance(ours, Translation):
                    mapped += 1
                    banks_used.add(ours.tables[-1] >> 32)
    assert banks_used == {1, 2} and mapped >= 4 * 5 * 2
