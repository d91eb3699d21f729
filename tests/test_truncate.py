"""truncate() run alone: the pages past the new end leave the page cache and
every mapping (books exact after), the ones before stay, and growing or
keeping the size only records it."""

from __future__ import annotations

import textwrap

import pytest

from emu import scenario
from emu.kernel.audit import audit
from emu.kernel.core import KernelBug
from emu.kernel.folio import Folio
from emu.machine import Machine

BASE = 0x1000_0000
PAGE = 4096


def machine(kind="file", thp=False) -> Machine:
    text = f"""
    [machine]
    arch = "x86-pae"
    cpus = 1
    memory_mib = 32

    [[vma]]
    start = {BASE}
    size = "pmd_size"
    kind = "{kind}"
    populate = {"true" if thp else 6}
    thp = {"true" if thp else "false"}

    [[cpu]]
    program = "touch"
    args = [{BASE}, 1, 4096]
    """
    return Machine(scenario.parse(textwrap.dedent(text), "<t>"))


def truncate(m: Machine, pages: int) -> int:
    cache = m.mm.find_vma(BASE).file
    return m.run_kernel_now(m.kernel.truncate(cache, pages), "truncate")


@pytest.mark.parametrize("kind", ["file", "shmem"])
def test_truncate_drops_the_pages_past_the_new_end_and_keeps_the_rest(kind):
    m = machine(kind)
    cache = m.mm.find_vma(BASE).file
    size = cache.size_pages
    kept = [cache.lookup(i) for i in range(4)]
    gone = [cache.lookup(i) for i in (4, 5)]
    assert all(kept) and all(gone)
    assert truncate(m, 4) == 0
    assert cache.size_pages == 4 < size
    assert [cache.lookup(i) for i in range(4)] == kept and cache.lookup(4) is None
    assert all(not f.in_cache and f.mapcount == 0 for f in gone)
    assert all(f.in_cache and f.mapcount == 1 for f in kept)
    assert m.mm.rss[kind] == 4 and audit(m.kernel) == []


def test_truncate_to_the_size_or_beyond_only_records_the_size():
    m = machine()
    cache = m.mm.find_vma(BASE).file
    size = cache.size_pages
    truncate(m, size)
    assert cache.size_pages == size and all(cache.lookup(i) for i in range(6))
    truncate(m, size + 3)
    assert cache.size_pages == size + 3 and m.mm.rss["file"] == 6


def test_truncate_drops_a_huge_folio_that_straddles_the_new_end_whole():
    m = machine("shmem", thp=True)
    cache = m.mm.find_vma(BASE).file
    big = cache.lookup(0)
    assert big.nr_pages > 1
    truncate(m, 3)
    assert not big.in_cache and all(cache.lookup(i) is None for i in range(big.nr_pages))
    assert audit(m.kernel) == []


def test_a_folio_count_below_zero_is_a_kernel_bug():
    f = Folio(0x1000, 1, "anon")
    f.get(2)
    assert f.put() is False and f.put() is True and f.refcount == 0
    with pytest.raises(KernelBug, match="refcount underflow"):
        f.put()
    f.map()
    f.unmap()
    assert f.mapcount == 0
    with pytest.raises(KernelBug, match="mapcount underflow"):
        f.unmap()
    assert not f.large and Folio(0x2000, 512, "shmem").large
