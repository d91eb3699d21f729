"""Swap entries and the modelled swap device: slots, swap counts, the swap cache.

Owns Linux's arch-independent swp_entry_t vocabulary (include/linux/swap.h,
swapops.h, v6.12: the swap types above MAX_SWAPFILES that mark migration
entries, swp_entry / swp_type / swp_offset, make_*_migration_entry) on top
of each arch's own pte format (`Arch.mk_swap_pte` / `swap_pte_entry`), and
`SwapDevice`: one swap area (type 0) as mm/swapfile.c keeps it: a
`swap_map` count per slot with SWAP_HAS_CACHE, slot 0 the never-allocated
header, and the swap cache (mm/swap_state.c) holding a folio per slot. The
device is synchronous (zram-like, SWP_SYNCHRONOUS_IO): a write-out or
read-in is one step, and an exclusive swap-in skips the swap cache.

Configuration followed: CONFIG_MIGRATION and CONFIG_MEMORY_FAILURE on,
CONFIG_DEVICE_PRIVATE off, so MAX_SWAPFILES is 27 and the special types
are HWPOISON 27, MIGRATION_READ 28, _READ_EXCLUSIVE 29, _WRITE 30,
PTE_MARKER 31 (v6.6-v6.14 order).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from emu.kernel import steps as s
from emu.kernel.core import KernelBug

if TYPE_CHECKING:
    from emu.kernel import Kernel
    from emu.kernel.folio import Folio
    from emu.kernel.mm import MM

MAX_SWAPFILES_SHIFT = 5
SWP_DEVICE_NUM = 0
SWP_MIGRATION_NUM = 3
SWP_HWPOISON_NUM = 1
SWP_PTE_MARKER_NUM = 1
MAX_SWAPFILES = ((1 << MAX_SWAPFILES_SHIFT) - SWP_DEVICE_NUM - SWP_MIGRATION_NUM
                 - SWP_HWPOISON_NUM - SWP_PTE_MARKER_NUM)
SWP_HWPOISON = MAX_SWAPFILES
SWP_MIGRATION_READ = MAX_SWAPFILES + SWP_HWPOISON_NUM
SWP_MIGRATION_READ_EXCLUSIVE = SWP_MIGRATION_READ + 1
SWP_MIGRATION_WRITE = SWP_MIGRATION_READ + 2
SWP_PTE_MARKER = SWP_MIGRATION_READ + SWP_MIGRATION_NUM + SWP_DEVICE_NUM
MIGRATION_TYPES = (SWP_MIGRATION_READ, SWP_MIGRATION_READ_EXCLUSIVE, SWP_MIGRATION_WRITE)

SWAP_HAS_CACHE = 0x40  # swap_map flag: the slot has a folio in the swap cache
SWAP_SLOTS = 256  # the modelled device's size in pages (slot 0 is the header)


def is_migration_type(swp_type: int) -> bool:
    """is_migration_entry() on the entry's type (v6.12 swapops.h)."""
    return swp_type in MIGRATION_TYPES


def non_swap_type(swp_type: int) -> bool:
    """non_swap_entry() (v6.12): a type at or above MAX_SWAPFILES is no swap device's."""
    return swp_type >= MAX_SWAPFILES


@dataclass(eq=False)
class SwapDevice:
    """swap_info_struct of swap type 0 with its slice of the swap cache (v6.12)."""

    nslots: int = SWAP_SLOTS
    swap_map: dict[int, int] = field(default_factory=dict)  # offset -> count | SWAP_HAS_CACHE
    cache: dict[int, Folio] = field(default_factory=dict)  # offset -> folio (swap_address_space)
    data: dict[int, bytes] = field(default_factory=dict)  # offset -> what swap_writepage wrote

    def count(self, offset: int) -> int:
        """__swap_count() (v6.12): the references from ptes (and fork's duplicates)."""
        return self.swap_map.get(offset, 0) & ~SWAP_HAS_CACHE

    def valid(self, offset: int) -> bool:
        """get_swap_device()'s check (v6.12): the offset is inside the device. A slot freed
        since the pte was read is no error: the swap-in finds nothing and retries."""
        return 0 < offset < self.nslots

    def alloc_slot(self) -> int | None:
        """get_swap_pages() (v6.12) for one page: the lowest free slot above the header, marked
        SWAP_HAS_CACHE (the caller adds the folio to the swap cache), or None if full."""
        for off in range(1, self.nslots):
            if off not in self.swap_map:
                self.swap_map[off] = SWAP_HAS_CACHE
                return off
        return None

    def put(self, offset: int, what: str, cache: bool = False) -> None:
        """swap_entry_put()/put_swap_folio() (v6.12): drop one pte reference or the cache flag;
        a slot with neither left is free again."""
        have = self.swap_map.get(offset)
        if have is None or (cache and not have & SWAP_HAS_CACHE) or \
                (not cache and not have & ~SWAP_HAS_CACHE):
            raise KernelBug(f"{what}: swap_free of slot {offset}, which holds no such "
                            f"reference (swap_map {have}): a swap entry freed twice")
        have -= SWAP_HAS_CACHE if cache else 1
        if have:
            self.swap_map[offset] = have
        else:
            del self.swap_map[offset]
            self.data.pop(offset, None)


class SwapMixin:
    # ---- the device -------------------------------------------------------------------
    @property
    def swap(self: Kernel) -> SwapDevice:
        """The one swap area, swap_info[0] (v6.12; swapon'd at boot with the modelled size; Kernel.__init__)."""
        return self.swap_device

    # ---- entries ------------------------------------------------------------------
    def swp_entry_to_pte(self: Kernel, swp_type: int, offset: int) -> int:
        """swp_entry_to_pte(swp_entry(type, offset)) (v6.12): the arch's format."""
        return self.arch.mk_swap_pte(swp_type, offset)

    def pte_to_swp_entry(self: Kernel, pte: int) -> tuple[int, int]:
        """pte_to_swp_entry() (v6.12): (type, offset) of a swap pte."""
        return self.arch.swap_pte_entry(pte)

    def make_migration_pte(self: Kernel, pfn: int, writable: bool) -> int:
        """make_{readable,writable}_migration_entry(pfn) as a pte (v6.12)."""
        return self.arch.mk_swap_pte(SWP_MIGRATION_WRITE if writable else SWP_MIGRATION_READ, pfn)

    def migration_pte_pfn(self: Kernel, pte: int) -> int | None:
        """pfn_swap_entry_to_page() (v6.12) of a migration pte, or None for any other pte."""
        if not self.arch.is_swap_pte(pte):
            return None
        swp_type, offset = self.arch.swap_pte_entry(pte)
        return offset if is_migration_type(swp_type) else None

    def is_pmd_migration_entry(self: Kernel, pmdval: int) -> bool:
        """is_pmd_migration_entry() (v6.12): a swap pmd of a migration type (only where
        the arch has THP migration)."""
        a = self.arch
        return a.is_swap_pmd(pmdval) and is_migration_type(a.swap_pmd_entry(pmdval)[0])

    # ---- swap counts, as atomic steps (si->lock / the cluster lock) ---------------------
    def swap_duplicate(self: Kernel, offset: int) -> s.KernelGen:
        """swap_duplicate() (v6.12): one more pte references the slot; -ENOENT if it is free."""
        def dup() -> int:
            dev = self.swap
            if offset not in dev.swap_map:
                return -2
            dev.swap_map[offset] += 1
            return 0
        return (yield s.KernelAtomic(dup, f"swap_duplicate({offset})"))

    def swap_free(self: Kernel, offset: int, what: str) -> s.KernelGen:
        """swap_free() (v6.12): a pte reference to the slot is gone."""
        yield s.KernelAtomic(lambda: self.swap.put(offset, what), f"swap_free({offset})")

    def mm_swapents(self: Kernel, mm: MM, delta: int) -> None:
        """add_mm_counter(mm, MM_SWAPENTS, delta) (v6.12)."""
        mm.swapents += delta

    def add_to_swap(self: Kernel, folio: Folio) -> s.KernelGen:
        """add_to_swap() (v6.12): give an anon folio a slot and put it in the swap cache
        (one swap-cache reference); False when the device is full."""
        def add() -> bool:
            off = self.swap.alloc_slot()
            if off is None:
                return False
            self.swap.cache[off] = folio
            folio.swap = off
            folio.get()
            return True
        return (yield s.KernelAtomic(add, "add_to_swap"))

    def delete_from_swap_cache(self: Kernel, folio: Folio) -> None:
        """__delete_from_swap_cache() + put_swap_folio() (v6.12), in one step the caller makes:
        the folio leaves the swap cache and the slot loses SWAP_HAS_CACHE."""
        off = folio.swap
        if off is None or self.swap.cache.get(off) is not folio:
            raise KernelBug(f"{folio!r} is not in the swap cache it is deleted from")
        del self.swap.cache[off]
        folio.swap = None
        self.swap.put(off, "delete_from_swap_cache", cache=True)
        self.put_folio(folio)

    def folio_free_swap(self: Kernel, folio: Folio) -> s.KernelGen:
        """folio_free_swap() (v6.12): an unmapped-to-swap folio whose slot no pte uses any
        more leaves the swap cache (called with the folio locked)."""
        def free() -> bool:
            off = folio.swap
            if off is None or self.swap.count(off):
                return False
            self.delete_from_swap_cache(folio)
            return True
        return (yield s.KernelAtomic(free, "folio_free_swap"))

    def free_swap_and_cache(self: Kernel, offset: int, what: str) -> s.KernelGen:
        """free_swap_and_cache_nr() (v6.12): a zapped swap pte drops its reference; a slot
        left held only by an unmapped swap-cache folio gives the folio up
        (__try_to_reclaim_swap, a trylock of the folio)."""
        def free() -> None:
            dev = self.swap
            dev.put(offset, what)
            folio = dev.cache.get(offset)
            if folio is not None and not dev.count(offset) and folio.mapcount == 0 \
                    and folio.lock.writer is None and not folio.lock.readers:
                self.delete_from_swap_cache(folio)
        yield s.KernelAtomic(free, f"free_swap_and_cache({offset})")

    # ---- zap ------------------------------------------------------------------------------
    def zap_nonpresent_pte(self: Kernel, mm: MM, pte: int) -> s.KernelGen:
        """zap_nonpresent_ptes() (v6.12) for one pte already cleared: a swap entry gives its
        slot back (MM_SWAPENTS), a migration entry stops counting in rss."""
        swp_type, offset = self.pte_to_swp_entry(pte)
        if swp_type == 0:
            self.mm_swapents(mm, -1)
            yield from self.free_swap_and_cache(offset, "zap_pte_range")
        elif is_migration_type(swp_type):
            folio = self.folio_of(offset * self.arch.page_size)
            if folio is not None:
                mm.rss[self.mm_counter_kind(folio)] -= 1

    def zap_nonpresent_pmd(self: Kernel, mm: MM, pmdval: int) -> s.KernelGen:
        """zap_huge_pmd() of a PMD migration entry (v6.12): the pages stop counting in rss."""
        folio = self.folio_of(self.arch.swap_pmd_entry(pmdval)[1] * self.arch.page_size)
        if folio is not None:
            mm.rss[self.mm_counter_kind(folio)] -= folio.nr_pages
        return
        yield

    # ---- fork -----------------------------------------------------------------------------
    def copy_nonpresent_pte(self: Kernel, dst_mm: MM, dst_ptep: int, pte: int,
                            rss: dict[str, int]) -> s.KernelGen:
        """copy_nonpresent_pte() (v6.12) under both ptls: the child gets the same swap entry
        (swap_duplicate, its MM_SWAPENTS) or migration entry (its rss counts the page;
        a writable entry would be made readable in both, modelled as read-only
        entries being copied as they are)."""
        swp_type, offset = self.pte_to_swp_entry(pte)
        if swp_type == 0:
            if (yield from self.swap_duplicate(offset)) < 0:
                return
            self.mm_swapents(dst_mm, 1)
        elif is_migration_type(swp_type):
            folio = self.folio_of(offset * self.arch.page_size)
            if folio is None:
                return
            rss[self.mm_counter_kind(folio)] = rss.get(self.mm_counter_kind(folio), 0) + 1
        else:
            return
        yield from self.set_entry("pte", dst_ptep, pte, "copy_nonpresent_pte: set_pte_at (child)")
