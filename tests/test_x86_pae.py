"""x86-PAE format and walker: golden cases, A/D updates, and the Unicorn oracle."""

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


def test_unicorn_oracle_agrees_on_random_tables():
    import oracle
    agree, bad = oracle.compare("x86-pae", 2000, seed=5)
    assert not bad, bad[:5]
    assert agree == 2000


def test_unicorn_oracle_catches_a_wrong_walker(monkeypatch):
    """The oracle is not vacuous: a walker that ignores a PTE's R/W bit disagrees."""
    import oracle
    original = x.X86Pae._leaf

    def ignores_rw(self, va, access, user, leaf, *rest):
        return original(self, va, access, user, leaf | x.RW, *rest)

    monkeypatch.setattr(x.X86Pae, "_leaf", ignores_rw)
    _, bad = oracle.compare("x86-pae", 2000, seed=5)
    assert bad
