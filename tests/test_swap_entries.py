"""Swap ptes in each arch's own format: round trips, golden layouts, and that no
swap pte looks none or present to Linux or valid to the hardware walker."""

from __future__ import annotations

import pytest

from arch import get_arch
from arch.base import Access, Fault

ARCHES = ["x86-pae", "arm", "powerpc", "s390", "sparc64"]


@pytest.mark.parametrize("name", ARCHES)
@pytest.mark.parametrize("swp_type", [0, 1, 27, 29, 31])
@pytest.mark.parametrize("offset", [1, 2, 0x1234, (1 << 20) - 1])
def test_round_trip_and_not_none_not_present(name, swp_type, offset):
    a = get_arch(name)
    val = a.mk_swap_pte(swp_type, offset)
    assert a.swap_pte_entry(val) == (swp_type, offset)
    assert not a.pte_none(val) and not a.pte_present(val) and a.is_swap_pte(val)


@pytest.mark.parametrize("name", ARCHES)
def test_largest_offset_survives(name):
    a = get_arch(name)
    top = (1 << a.swap_offset_bits) - 1
    assert a.swap_pte_entry(a.mk_swap_pte(3, top)) == (3, top)


def test_x86_pae_layout_is_l1tf_inverted_with_type_in_the_high_word():
    a = get_arch("x86-pae")
    val = a.mk_swap_pte(2, 5)
    assert val >> 59 == 2  # type in bits 59-63
    assert (val >> 9) & ((1 << 50) - 1) == ~5 & ((1 << 50) - 1)  # offset inverted from bit 9
    assert val & 0x1FF == 0  # P, PROTNONE and the flag bits clear
    # the two halves of two swap ptes are each other's strangers: a torn read decodes
    # to neither (the reason do_swap_page has pte_unmap_same)
    other = a.mk_swap_pte(0, 6)
    torn = (other & 0xFFFF_FFFF_0000_0000) | (val & 0xFFFF_FFFF)
    assert a.swap_pte_entry(torn) not in ((2, 5), (0, 6))


def test_golden_values():
    assert get_arch("s390").mk_swap_pte(1, 3) == 0x600 | (3 << 12) | (1 << 2)
    assert get_arch("sparc64").mk_swap_pte(1, 3) == (1 << 13) | (3 << 21)
    assert get_arch("arm").mk_swap_pte(1, 3) == (1 << 3) | (3 << 8)
    assert get_arch("powerpc").mk_swap_pte(1, 3) == (1 << 62) | (3 << 16) | 1


@pytest.mark.parametrize("name", ARCHES)
def test_pmd_migration_entries_only_where_linux_has_thp_migration(name):
    a = get_arch(name)
    assert a.thp_migration() == (name == "powerpc")
    if a.thp_migration():
        val = a.mk_swap_pmd(29, 7)
        assert a.swap_pmd_entry(val) == (29, 7) and a.is_swap_pmd(val)
        assert not a.pmd_trans_huge(val) and not a.entry_none("pmd", val)
    else:
        assert not a.is_swap_pmd(0x600)


def test_hardware_faults_on_a_swap_pte_x86():
    a = get_arch("x86-pae")
    mem = bytearray(1 << 22)
    root, pmd, pt = 0x1000, 0x2000, 0x3000
    mem[root: root + 8] = (pmd | 1).to_bytes(8, "little")
    mem[pmd: pmd + 8] = (pt | 0x67).to_bytes(8, "little")
    mem[pt: pt + 8] = a.mk_swap_pte(0, 1).to_bytes(8, "little")
    r = a.translate_functional(mem, root, 0, Access.READ)
    assert isinstance(r, Fault) and r.reason == "not-present"
