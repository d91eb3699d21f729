"""x86-PAE format and walker: golden cases, A/D updates (the Unicorn oracle: tests/test_oracle.py)."""

from __future__ import annotations

import pytest

from arch import get_arch
from arch import x86_pae as x
from arch.base import Access, Fault, Prot, PteSetBits, Translation

A = get_arch("x86-pae")


def image_with(entries: dict[int, int], size: int = 1 << 22) -> bytearray:
    mem = bytearray(size)
    for pa, val in entries.items():
        mem[pa:pa + 8] = val.to_bytes(8, "little")
    return mem


ROOT, PMD, PT, PAGE = 0x1000, 0x2000, 0x3000, 0x5000
VA = (1 << 30) | (3 << 21) | (7 << 12)


def small_mapping(pte_flags: int, pde_flags: int = x.PAGE_TABLE) -> bytearray:
    return image_with({ROOT + 8: PMD | x.P, PMD + 3 * 8: PT | pde_flags,
                       PT + 7 * 8: PAGE | pte_flags})


def test_4k_translation_and_offsets():
    mem = small_mapping(x.P | x.RW | x.US | x.A | x.D)
    tr = A.translate_functional(mem, ROOT, VA + 0x123, Access.WRITE)
    assert isinstance(tr, Translation)
    assert tr.pa(VA + 0x123) == PAGE + 0x123 and tr.size == 4096
    assert tr.tables == (ROOT, PMD, PT) and tr.leaf_pa == PT + 7 * 8


@pytest.mark.parametrize("flags,access,reason", [
    (x.P | x.US, Access.WRITE, "protection"),                # read-only
    (x.P | x.RW, Access.READ, "protection"),                 # supervisor page, user access
    (x.P | x.RW | x.US | x.NX, Access.FETCH, "protection"),  # no-exec
    (x.RW | x.US, Access.READ, "not-present"),
])
def test_permission_faults(flags, access, reason):
    res = A.translate_functional(small_mapping(flags), ROOT, VA, access)
    assert isinstance(res, Fault) and res.reason == reason and res.level == "pte"


def test_rights_are_anded_across_levels():
    mem = small_mapping(x.P | x.RW | x.US, pde_flags=x.P | x.US | x.A | x.D)
    assert isinstance(A.translate_functional(mem, ROOT, VA, Access.WRITE), Fault)
    assert isinstance(A.translate_functional(mem, ROOT, VA, Access.READ), Translation)


def test_2m_huge_pmd():
    mem = image_with({ROOT + 8: PMD | x.P,
                      PMD + 3 * 8: 0x200000 | x.P | x.RW | x.US | x.PSE | x.A | x.D})
    tr = A.translate_functional(mem, ROOT, VA, Access.READ)
    assert tr.size == 2 << 20 and tr.pa(VA) == 0x200000 + (7 << 12)


def test_hardware_sets_accessed_then_dirty_and_grants_write_only_when_dirty():
    mem = small_mapping(x.P | x.RW | x.US)
    walk = A.walk(ROOT, VA, Access.READ)
    msgs, value = [], None
    try:
        msg = next(walk)
        while True:
            msgs.append(msg)
            cur = int.from_bytes(mem[msg.pa:msg.pa + 8], "little")
            if isinstance(msg, PteSetBits):
                cur |= msg.bits
                mem[msg.pa:msg.pa + 8] = cur.to_bytes(8, "little")
            msg = walk.send(cur)
    except StopIteration as stop:
        value = stop.value
    sets = [m for m in msgs if isinstance(m, PteSetBits)]
    assert [(m.level, m.bits) for m in sets] == [("pte", x.A)]
    assert not value.perms & 2, "a clean page must not be writable in the TLB"
    res = A.translate_functional(mem, ROOT, VA, Access.WRITE)
    assert res.perms & 2


def test_kernel_writes_pte_high_then_low_and_clears_low_first():
    ops = A.set_entry_ops("pte", 0x100, 0x8000_0001_0000_0067)
    assert [(o.pa, o.value) for o in ops] == [(0x104, 0x8000_0001), (0x100, 0x67)]
    ops = A.clear_entry_ops("pmd", 0x100)
    assert [o.pa for o in ops] == [0x100, 0x104]
    assert [o.size for o in A.set_entry_ops("pmd", 0x100, 1)] == [8]


def test_pmd_bad_and_trans_huge():
    assert not A.entry_bad("pmd", A.mk_table_entry("pmd", 0x3000))
    assert A.entry_bad("pmd", 0x3000 | x.P)
    huge = A.mk_pmd_huge(0x400000, Prot())
    assert A.pmd_trans_huge(huge) and not A.entry_bad("pmd", huge)


def test_functional_translate_never_raises_on_wild_pointers():
    mem = image_with({ROOT: 0xFFFF_F000 | x.P}, size=1 << 16)
    res = A.translate_functional(mem, ROOT, 0x1000, Access.READ)
    assert isinstance(res, Fault) and res.reason == "outside-ram"


# ---- reserved bits, MAXPHYADDR, NXE (SDM 4.4.2) ------------------------------------------


def _reserved_fault(mem: bytearray, arch=A, va: int = VA) -> None:
    res = arch.translate_functional(mem, ROOT, va, Access.READ)
    assert isinstance(res, Fault) and res.reason == "bad-entry", res


@pytest.mark.parametrize("bit", [1, 2, 5, 6, 7, 8, 36, 51, 52, 62, 63])
def test_pdpte_reserved_bits_fault(bit):
    """PDPTE bits 2:1, 8:5 and 63:MAXPHYADDR (XD included) are reserved."""
    mem = small_mapping(x.P | x.RW | x.US | x.A | x.D)
    mem[ROOT + 8:ROOT + 16] = (PMD | x.P | (1 << bit)).to_bytes(8, "little")
    _reserved_fault(mem)


@pytest.mark.parametrize("bit", [36, 40, 51, 52, 62])
def test_pde_and_pte_bits_from_maxphyaddr_to_62_are_reserved_not_address(bit):
    flags = x.P | x.RW | x.US | x.A | x.D
    _reserved_fault(small_mapping(flags, x.PAGE_TABLE | (1 << bit)))
    _reserved_fault(small_mapping(flags | (1 << bit)))


def test_maxphyaddr_option_widens_the_address():
    wide = get_arch("x86-pae", maxphyaddr=40)
    mem = small_mapping(x.P | x.RW | x.US | x.A | x.D | (1 << 38))
    tr = wide.translate_functional(mem, ROOT, VA, Access.READ)
    assert isinstance(tr, Translation) and tr.pa(VA) == PAGE | (1 << 38)
    _reserved_fault(mem)  # the default, 36, reserves bit 38


@pytest.mark.parametrize("bit", range(13, 21))
def test_2m_pde_bits_20_13_are_reserved_but_pat_is_not(bit):
    huge = 0x40_0000 | x.P | x.RW | x.US | x.A | x.D | x.PSE
    mem = image_with({ROOT + 8: PMD | x.P, PMD + 3 * 8: huge | (1 << bit)})
    _reserved_fault(mem)
    mem = image_with({ROOT + 8: PMD | x.P, PMD + 3 * 8: huge | (1 << 12)})
    tr = A.translate_functional(mem, ROOT, VA, Access.READ)
    assert isinstance(tr, Translation) and tr.pa(VA) == 0x40_0000 + (VA & 0x1F_FFFF)


def test_nxe_off_makes_xd_reserved_and_nothing_no_execute():
    no_nxe = get_arch("x86-pae", nxe=False)
    plain = x.P | x.RW | x.US | x.A | x.D
    tr = no_nxe.translate_functional(small_mapping(plain), ROOT, VA, Access.FETCH)
    assert isinstance(tr, Translation)
    _reserved_fault(small_mapping(plain | x.NX), no_nxe)
    _reserved_fault(small_mapping(plain, x.PAGE_TABLE | x.NX), no_nxe)
    res = A.translate_functional(small_mapping(plain | x.NX), ROOT, VA, Access.FETCH)
    assert isinstance(res, Fault) and res.reason == "protection"


@pytest.mark.parametrize("opts", [{"maxphyaddr": 31}, {"maxphyaddr": 53}, {"nxd": True}])
def test_bad_arch_options_are_clear_errors(opts):
    from arch import UnknownArch
    with pytest.raises(UnknownArch):
        get_arch("x86-pae", **opts)


# ---- PDPTE latching (SDM 4.4.1) --------------------------------------------------------------


def test_latched_pdptes_are_used_instead_of_memory():
    mem = small_mapping(x.P | x.RW | x.US | x.A | x.D)
    read = lambda pa, size: int.from_bytes(mem[pa:pa + size], "little")  # noqa: E731
    latched = A.load_root(ROOT, read)
    mem[ROOT + 8:ROOT + 16] = bytes(8)  # the PDPTE cleared in memory, no MOV CR3
    assert isinstance(A.translate_functional(mem, latched, VA, Access.READ), Translation)
    assert isinstance(A.translate_functional(mem, ROOT, VA, Access.READ), Fault)
    reads = [m.level for m in _reads(A.walk(latched, VA, Access.READ), mem)]
    assert reads == ["pmd", "pte"]  # the PDPTE is a register, not a memory read
    reloaded = A.load_root(ROOT, read)
    assert isinstance(A.translate_functional(mem, reloaded, VA, Access.READ), Fault)


def test_mov_cr3_with_a_reserved_pdpte_bit_is_refused():
    mem = small_mapping(x.P)
    mem[ROOT + 8:ROOT + 16] = (PMD | x.P | x.RW).to_bytes(8, "little")
    with pytest.raises(ValueError, match="PDPTE1"):
        A.load_root(ROOT, lambda pa, size: int.from_bytes(mem[pa:pa + size], "little"))


def _reads(walk, mem):
    out = []
    try:
        msg = next(walk)
        while True:
            out.append(msg)
            msg = walk.send(int.from_bytes(mem[msg.pa:msg.pa + msg.size], "little"))
    except StopIteration:
        return out


def test_vcpu_walks_use_the_pdptes_it_latched_until_a_reload():
    """Clearing a PDPTE in memory without reloading CR3 changes no translation;
    a flush_tlb_mm (a CR3 reload on x86) picks the change up."""
    from emu import scenario
    from emu.machine import Machine
    m = Machine(scenario.load("touch"), trace=False)
    cpu = m.cpus[0]
    va = 0x10000000
    m.populate(m.mm.find_vma(va), 1)
    assert isinstance(m.run_walk_now(cpu, va, Access.READ), Translation)
    m.mem.write_int(m.root + 8 * (va >> 30), 8, 0, "little")
    assert isinstance(m.run_walk_now(cpu, va, Access.READ), Translation)
    assert isinstance(A.translate_functional(m.mem.buf, m.root, va, Access.READ), Fault)
    cpu.flush_range(0, 1 << 32)  # flush_tlb_mm()
    res = m.run_walk_now(cpu, va, Access.READ)
    assert isinstance(res, Fault) and res.level == "pgd"
