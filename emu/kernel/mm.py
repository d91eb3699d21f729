"""The address space: `MM` (mm_struct) and `VMA` (vm_area_struct).

Owns the VMA list, the mm's locks (mmap_lock, page_table_lock) and its
counters (nr_ptes, rss by kind). Page-table contents live in guest
physical memory, never here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from arch.base import Access, Prot
from emu.kernel.sync import RwSem, Spinlock

VMA_KINDS = ("anon", "shmem", "file", "text")


@dataclass(eq=False)
class VMA:
    """vm_area_struct. Compared by identity: two processes may map the same
    range of the same file, and they are still two VMAs (i_mmap holds both)."""

    start: int
    end: int
    kind: str
    prot: Prot
    name: str = ""
    # text VMAs: the program image the pages are filled from
    image: bytes = b""
    # shmem/file VMAs: the backing page cache and the page offset of start
    file: object | None = None
    pgoff: int = 0
    anon_vma: bool = False  # set once an anon page is mapped (khugepaged skips those)
    # anon_vma->root->rwsem: rmap walkers read it, collapse_huge_page writes it
    anon_vma_lock: RwSem = field(default_factory=lambda: RwSem("anon_vma"), repr=False)
    pmd_mapping: bool = True  # may faults map a PMD-sized folio with one PMD?
    hugepage: bool = False  # VM_HUGEPAGE (anon: THP faults and khugepaged; MADV_HUGEPAGE)
    uffd_wp: bool = False  # VM_UFFD_WP (UFFDIO_REGISTER_MODE_WP)
    uffd_missing: bool = False  # VM_UFFD_MISSING (UFFDIO_REGISTER_MODE_MISSING)
    # MAP_PRIVATE of a shmem/file object: reads map the page cache's page
    # read-only, writes copy it into an anon page (do_cow_fault, wp_page_copy)
    private: bool = False
    # vm_mm: the address space this VMA belongs to (set by MM.insert_vma)
    mm: MM | None = field(default=None, repr=False)

    def contains(self, addr: int) -> bool:
        return self.start <= addr < self.end

    def allows(self, access: Access) -> bool:
        if access == Access.WRITE:
            return self.prot.write
        if access == Access.FETCH:
            return self.prot.exec
        return True

    @property
    def page_prot(self) -> Prot:
        """vm_page_prot: a private file mapping's pages are mapped read-only until a write
        copies them (vm_get_page_prot of a !VM_SHARED writable VMA)."""
        if self.private and self.prot.write:
            return Prot(write=False, exec=self.prot.exec, user=self.prot.user)
        return self.prot

    @property
    def is_cow_mapping(self) -> bool:
        """is_cow_mapping(): private and may be written (anon, text, MAP_PRIVATE files)."""
        return self.kind in ("anon", "text") or self.private

    def __str__(self) -> str:
        return f"{'private ' if self.private else ''}{self.kind} vma [{self.start:#x}, {self.end:#x}){' ' + self.name if self.name else ''}"


@dataclass(eq=False)
class MM:
    """mm_struct: one process's address space."""

    root: int
    # the process's name in the scenario (`[[process]]`); "main" when it declares none
    name: str = "main"
    # a suffix for the names of this mm's locks in traces: "" keeps a
    # single-process trace as it always was; several processes name theirs
    lock_tag: str = ""
    vmas: list[VMA] = field(default_factory=list)
    mmap_lock: RwSem = field(init=False)
    page_table_lock: Spinlock = field(init=False)
    nr_ptes: int = 0
    swapents: int = 0  # MM_SWAPENTS: swap ptes in this mm's tables
    rss: dict[str, int] = field(default_factory=lambda: {"anon": 0, "file": 0, "shmem": 0})
    # arch allocation state (powerpc pte_frag cache, s390 pgtable_list)
    context: dict[str, object] = field(default_factory=dict)
    # mm->notifier_subscriptions: the secondary MMUs told of changes (emu.kernel.mmu_notifier)
    mmu_notifiers: list = field(default_factory=list)
    # (frame, level) of every frame pgd_alloc() allocated with the top table:
    # pgd_free() gives them back at __mmdrop()
    pgd_tables: list[tuple[int, str]] = field(default_factory=list)
    # set by exit_group(): the exit status every thread of the process takes
    exit_code: int | None = None
    dead: bool = False  # __mmdrop() done: the tables are gone
    # mm->write_protect_seq: odd while fork's copy_page_range() write-protects
    # anon ptes (GUP-fast FOLL_PIN backs off then, and retries if it moved)
    write_protect_seq: int = 0
    has_pinned: bool = False  # MMF_HAS_PINNED: a FOLL_PIN was ever taken on this mm
    forked: bool = False  # made by fork(): torn down when its last vCPU exits

    def __post_init__(self) -> None:
        tag = f"[{self.lock_tag}]" if self.lock_tag else ""
        self.mmap_lock = RwSem(f"mmap_lock{tag}")
        self.page_table_lock = Spinlock(f"page_table_lock{tag}")

    def find_vma(self, addr: int) -> VMA | None:
        for vma in self.vmas:
            if vma.contains(addr):
                return vma
        return None

    def overlaps(self, start: int, end: int) -> VMA | None:
        for vma in self.vmas:
            if vma.start < end and start < vma.end:
                return vma
        return None

    def insert_vma(self, vma: VMA) -> None:
        vma.mm = self
        self.vmas.append(vma)
        self.vmas.sort(key=lambda v: v.start)
