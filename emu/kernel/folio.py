"""Folios and the page cache: who references a data page, and how often.

Owns `Folio` (a page, or a PMD-sized block of them, with its refcount,
mapcount and folio lock) and `PageCache` (a file's pages by index, able to
hold one PMD-sized folio). Counting follows Linux's rules, simplified
where stated: the page cache holds one reference per folio, every PTE or
PMD mapping one reference and one mapcount, every GUP pin one reference.
A count going below zero is a `KernelBug` (the symptom of a double unmap).

Versions: the folio API of v6.12 (folio_get/folio_put, folio_add/remove_rmap),
whose counting rules ptemu uses at every modelled version.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from emu.kernel.core import KernelBug
from emu.kernel.sync import RwSem


@dataclass(eq=False)
class Folio:
    pa: int  # physical address of the head page
    nr_pages: int
    kind: str  # "anon", "shmem", "file", "text"
    refcount: int = 0
    mapcount: int = 0  # PTE mappings + PMD mappings
    lock: RwSem = field(default_factory=lambda: RwSem("folio_lock"))
    index: int = 0  # page-cache index of the head (file folios)
    in_cache: bool = False
    # the swap slot of an anon folio in the swap cache (folio->swap), or None
    swap: int | None = None
    isolated: bool = False  # off the LRU: taken by reclaim or migration
    # FOLL_PIN pins (GUP_PIN_COUNTING_BIAS kept apart from the references,
    # each pin also counting one reference): folio_maybe_dma_pinned()
    pincount: int = 0
    # PageAnonExclusive: this anon page is mapped by one process only and may
    # be written without a copy (fork clears it on the pages it shares)
    anon_exclusive: bool = False

    @property
    def large(self) -> bool:
        return self.nr_pages > 1

    def get(self, n: int = 1) -> None:
        self.refcount += n

    def put(self, n: int = 1) -> bool:
        """Drop references; True when the last one went."""
        self.refcount -= n
        if self.refcount < 0:
            raise KernelBug(f"folio {self.pa:#x} refcount underflow ({self.refcount}): "
                            "a page was unmapped or released twice")
        return self.refcount == 0

    def map(self) -> None:
        self.mapcount += 1
        self.refcount += 1

    def unmap(self) -> None:
        self.mapcount -= 1
        if self.mapcount < 0:
            raise KernelBug(f"folio {self.pa:#x} mapcount underflow: "
                            "an entry was removed from the rmap twice")

    @property
    def maybe_dma_pinned(self) -> bool:
        """folio_maybe_dma_pinned() (v6.12)."""
        return self.pincount > 0

    def __repr__(self) -> str:
        return (f"<folio {self.pa:#x} x{self.nr_pages} {self.kind} ref={self.refcount} "
                f"map={self.mapcount}>")


@dataclass(eq=False)
class PageCache:
    """The pages of one shmem or file object, by page index."""

    name: str
    kind: str  # "shmem" or "file"
    size_pages: int
    slots: dict[int, Folio] = field(default_factory=dict)
    i_mmap_rwsem: RwSem = field(default_factory=lambda: RwSem("i_mmap_rwsem"))
    vmas: list = field(default_factory=list)  # the VMAs mapping it (i_mmap)

    def lookup(self, index: int) -> Folio | None:
        return self.slots.get(index)

    def folios(self) -> list[Folio]:
        """Distinct folios in index order."""
        out: list[Folio] = []
        for idx in sorted(self.slots):
            f = self.slots[idx]
            if not out or out[-1] is not f:
                out.append(f)
        return out
