"""The architecture protocol: what the rest of ptemu may ask of an arch.

Owns the vocabulary shared by every arch module (access kinds, the walker's
step messages, translations and faults, level geometry) and the abstract
`Arch` class. Nothing outside `arch/` knows a bit layout: the kernel model
asks an `Arch` to build, test and decode entries, and the machine asks it to
walk, to set up a vCPU and to decode a hypercall.

A hardware walk is a generator (gem5's `stepWalk` idea): it yields
`PteRead` / `PteSetBits` / `PteWrite` messages, each of which is one scheduling point,
and returns a `Translation` or a `Fault`. The machine runs it straight
through (`Machine.run_walk_now`, inside Unicorn's TLB-fill hook) or one
message per scheduler step (`VCpu._walk_step`). `translate_functional` runs the same generator over
a plain memory image without side effects, for tools and oracles.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from unicorn import Uc


class Access(enum.IntEnum):
    """Kind of guest access; values match Unicorn's TLB-fill `access` - 16."""

    READ = 0
    WRITE = 1
    FETCH = 2


# Permission bits of a translation; the same values as UC_PROT_*.
PERM_R = 1
PERM_W = 2
PERM_X = 4


def perm_allows(perms: int, access: Access) -> bool:
    return bool(perms & (PERM_R, PERM_W, PERM_X)[access])


@dataclass(frozen=True)
class Level:
    """One level of a radix page table, named as Linux names it."""

    name: str  # "pgd", "pud", "pmd", "pte" (Linux names)
    shift: int  # log2 of the span of one entry
    entries: int  # entries per table at this level
    entry_size: int  # bytes per entry

    @property
    def table_bytes(self) -> int:
        return self.entries * self.entry_size

    def index(self, va: int) -> int:
        return (va >> self.shift) & (self.entries - 1)


@dataclass(frozen=True)
class PteRead:
    """The walker reads one entry (atomically for `size` bytes)."""

    pa: int
    size: int
    level: str


@dataclass(frozen=True)
class PteSetBits:
    """The walker atomically ORs `bits` into an entry (hardware A/D update).

    The update is a compare-and-OR against `expect`, the value the walk read:
    hardware never sets accessed/dirty in an entry that changed under the walk
    (Linux relies on it: a pte cleared by ptep_get_and_clear() stays clear;
    only a Knights Landing erratum, X86_BUG_PTE_LEAK, breaks that), and the
    hash MMU's refill sets them with a pte_xchg() loop that re-checks the pte.
    The walk gets back the value now in memory: `expect | bits` if it took,
    else the entry's new value, and must not translate through a changed one.
    """

    pa: int
    size: int
    bits: int
    level: str
    expect: int

    def took(self, value: int) -> bool:
        """Did the update land (`value` is what the walker got back)?"""
        return value == self.expect | self.bits


@dataclass(frozen=True)
class PteWrite:
    """The walker stores `value` (a software refill filling its cache, sparc64's TSB)."""

    pa: int
    size: int
    value: int
    level: str


WalkStep = PteRead | PteSetBits | PteWrite


@dataclass(frozen=True)
class Translation:
    """A successful walk: one mapping of `size` bytes."""

    va_base: int
    pa_base: int
    size: int
    perms: int
    # Physical addresses of the table frames the walk went through (root
    # first) and of the leaf entry: what a TLB entry depends on.
    tables: tuple[int, ...] = ()
    leaf_pa: int = 0

    def pa(self, va: int) -> int:
        return self.pa_base + (va - self.va_base)


@dataclass(frozen=True)
class Fault:
    """A walk that found no usable mapping."""

    va: int
    access: Access
    level: str
    reason: str  # "not-present", "protection", "bad-entry", "outside-ram", "changed"


WalkResult = Translation | Fault
Walk = Generator[WalkStep, int, WalkResult]


class MemoryImage:
    """Read-only view of physical memory for functional translation."""

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self.data = data

    def read(self, pa: int, size: int) -> bytes:
        if pa < 0 or pa + size > len(self.data):
            raise IndexError(pa)
        return bytes(self.data[pa : pa + size])


@dataclass(frozen=True)
class Prot:
    """Linux-level protection of a new mapping (vm_page_prot, simplified)."""

    write: bool = True
    exec: bool = False
    user: bool = True


@dataclass(frozen=True)
class MemOp:
    """One store the kernel makes when it writes an entry.

    Arches write entries in their own order (PAE: high word, then low; arm:
    Linux copy, then hardware copy); each store is its own step.
    """

    pa: int
    size: int
    value: int
    # "store"; "xchg" (an atomic exchange: the old bytes are its result); or
    # "load" (a read of part of the entry, as old get-and-clears make)
    kind: str = "store"


# Linux's entry-writing primitives, by name, and the level each writes.
PRIMITIVES: dict[str, str] = {
    "set_pte": "pte", "pte_clear": "pte", "ptep_get_and_clear": "pte",
    "set_pmd": "pmd", "pmd_clear": "pmd", "pmdp_get_and_clear": "pmd",
    # pmdp_invalidate()'s pmdp_establish(): the old huge pmd out, its invalid
    # twin in, atomically, so a hardware A/D update is never lost
    "pmdp_invalidate": "pmd",
}


@dataclass
class CallConv:
    """How a guest invokes a hypercall on this arch."""

    trap: str  # the instruction, for documentation and the assembler
    intno: int  # what Unicorn's interrupt hook reports for it
    nr_reg: str
    arg_regs: tuple[str, ...]
    ret_reg: str


class Arch(ABC):
    """One architecture: format, walker, policy, and Unicorn glue."""

    name: ClassVar[str]
    page_size: ClassVar[int]  # Linux base page size
    uc_page_size: ClassVar[int]  # Unicorn's TLB granule
    byteorder: ClassVar[str]
    va_bits: ClassVar[int]
    levels: ClassVar[tuple[Level, ...]]  # Linux's view, root first
    callconv: ClassVar[CallConv]
    # Unicorn / Keystone / Capstone modes
    uc_arch: ClassVar[int]
    uc_mode: ClassVar[int]
    ks_arch: ClassVar[int]
    ks_mode: ClassVar[int]
    cs_arch: ClassVar[int]
    cs_mode: ClassVar[int]
    # Where guest programs are linked, and a user stack for each vCPU.
    code_base: ClassVar[int]
    stack_top: ClassVar[int]

    # ---- geometry -------------------------------------------------------
    def level(self, name: str) -> Level:
        for lv in self.levels:
            if lv.name == name:
                return lv
        raise KeyError(name)

    @property
    def pmd_size(self) -> int:
        return 1 << self.level("pmd").shift

    @property
    def ptrs_per_pte(self) -> int:
        return self.level("pte").entries

    def entry_pa(self, table_pa: int, level: Level, va: int) -> int:
        """Where the entry for `va` lives in a table of `level`."""
        return table_pa + level.index(va) * level.entry_size

    # ---- the mm root ----------------------------------------------------
    @abstractmethod
    def alloc_root(self, alloc_table: Callable[[str, int], int],
                   store: Callable[[int, int, int], None]) -> int:
        """Build an empty top-level table; returns the root (what CR3 &c hold).

        `alloc_table(level_name, nbytes)` returns the physical address of a
        zeroed table owned by the kernel model's allocator; `store(pa, size,
        value)` writes an entry (the mm is not yet visible to anyone).
        """

    # ---- Linux's view of entries (used by emu/kernel) ----------------------
    @abstractmethod
    def entry_none(self, level: str, val: int) -> bool: ...

    @abstractmethod
    def entry_present(self, level: str, val: int) -> bool: ...

    @abstractmethod
    def mk_table_entry(self, level: str, table_pa: int) -> int:
        """An entry of `level` pointing to the next-level table at `table_pa`."""

    @abstractmethod
    def table_pa(self, level: str, val: int) -> int:
        """The next-level table an entry of `level` points to (Linux's view)."""

    @abstractmethod
    def entry_bad(self, level: str, val: int) -> bool: ...

    @abstractmethod
    def mk_pte(self, pa: int, prot: Prot) -> int: ...

    @abstractmethod
    def pte_pa(self, val: int) -> int: ...

    def pte_none(self, val: int) -> bool:
        return self.entry_none("pte", val)

    def pte_present(self, val: int) -> bool:
        return self.entry_present("pte", val)

    @abstractmethod
    def pte_write(self, val: int) -> bool: ...

    def pte_mkyoung(self, val: int) -> int:
        return val

    def pte_mkuncached(self, val: int) -> int:
        """The same mapping with caching off (only aliasing-cache arches care)."""
        return val

    def pte_mkdirty(self, val: int) -> int:
        return val

    def pte_wrprotect(self, val: int) -> int:
        """pte_wrprotect(): the same mapping, read-only (fork's COW, v6.12)."""
        raise NotImplementedError(f"{self.name}: pte_wrprotect")

    def pte_mkwrite(self, val: int) -> int:
        """pte_mkwrite_novma(): the same mapping, writable (a COW write fault, v6.12)."""
        raise NotImplementedError(f"{self.name}: pte_mkwrite")
    def pte_modify(self, val: int, prot: Prot) -> int:
        """pte_modify(): the same page under `prot`, keeping its young and dirty state
        (_PAGE_CHG_MASK). Built from the arch's own mk_pte/mkyoung/mkdirty, so it needs
        no bit layout of its own."""
        new = self.mk_pte(self.pte_pa(val), prot)
        if self.pte_mkyoung(val) == val:
            new = self.pte_mkyoung(new)
        if self.pte_mkdirty(val) == val:
            new = self.pte_mkdirty(new)
        return new

    def pmd_trans_huge(self, val: int) -> bool:
        """A PMD mapping a huge page; arches without THP keep the default."""
        return False

    def supports_huge_pmd(self) -> bool:
        """Can a PMD map a PMD-sized page directly (THP)?"""
        return type(self).mk_pmd_huge is not Arch.mk_pmd_huge

    def mk_pmd_huge(self, pa: int, prot: Prot) -> int:
        raise NotImplementedError(f"{self.name} has no PMD-sized pages")

    def pmd_huge_pa(self, val: int) -> int:
        raise NotImplementedError(f"{self.name} has no PMD-sized pages")

    # ---- swap entries: the non-present pte (and pmd) formats ------------------
    # Linux's arch-independent swp_entry_t is (type, offset); each arch's
    # __swp_entry()/__swp_entry_to_pte() and __pte_to_swp_entry() place it in
    # a pte that is neither none nor present. Migration entries are swap
    # entries of the types above MAX_SWAPFILES (emu/kernel/swap.py).
    def mk_swap_pte(self, swp_type: int, offset: int) -> int:
        """__swp_entry_to_pte(__swp_entry(type, offset))."""
        raise NotImplementedError(f"{self.name} has no swap pte format")

    def swap_pte_entry(self, val: int) -> tuple[int, int]:
        """(swp_type, swp_offset) of __pte_to_swp_entry(pte)."""
        raise NotImplementedError(f"{self.name} has no swap pte format")

    # The largest swap offset the arch's swap pte can hold (bits above it are lost).
    swap_offset_bits: ClassVar[int] = 24

    def is_swap_pte(self, val: int) -> bool:
        """is_swap_pte(): !pte_none && !pte_present."""
        return not self.pte_none(val) and not self.pte_present(val)

    def thp_migration(self) -> bool:
        """CONFIG_ARCH_ENABLE_THP_MIGRATION: can a PMD hold a migration entry?"""
        return type(self).mk_swap_pmd is not Arch.mk_swap_pmd and self.supports_huge_pmd()

    def mk_swap_pmd(self, swp_type: int, offset: int) -> int:
        """__swp_entry_to_pmd(__swp_entry(type, offset)), where THP migration exists."""
        raise NotImplementedError(f"{self.name} has no PMD migration entries")

    def swap_pmd_entry(self, val: int) -> tuple[int, int]:
        """(swp_type, swp_offset) of __pmd_to_swp_entry(pmd)."""
        raise NotImplementedError(f"{self.name} has no PMD migration entries")

    def is_swap_pmd(self, val: int) -> bool:
        """is_swap_pmd(): !pmd_none && !pmd_present, where THP migration exists
        (elsewhere Linux defines it as false)."""
        return (self.thp_migration() and not self.entry_none("pmd", val)
                and not self.entry_present("pmd", val))

    def pmd_mkinvalid(self, val: int) -> int:
        """pmdp_invalidate()'s new value: a huge pmd the hardware no longer uses but
        that Linux still sees as present and trans-huge (pmd_present/pmd_trans_huge)."""
        raise NotImplementedError(f"{self.name} has no PMD-sized pages")

    def pmd_huge_valid(self, val: int) -> bool:
        """Would the hardware (or pmd_access_permitted()) use this huge pmd? False for
        pmd_mkinvalid()'s value."""
        return self.pmd_trans_huge(val)

    def pmd_mkdirty(self, val: int) -> int:
        """pmd_mkdirty() of a huge pmd (the pte bits wherever a huge pmd is pte-like)."""
        return self.pte_mkdirty(val)

    def pmd_dirty(self, val: int) -> bool:
        """pmd_dirty() of a huge pmd."""
        return self.pmd_mkdirty(val) == val

    def pmd_huge_write(self, val: int) -> bool:
        """pmd_write() of a huge pmd."""
        return self.pte_write(val)

    # pgtable_trans_huge_deposit()'s home for the PTE table kept with a huge pmd:
    #   "generic"  the pmd_huge_pte list in the pmd table's struct page (no store
    #              into the table; x86, arm64)
    #   "list"     a list_head in the deposited table's first two entries,
    #              cleared again by the withdraw (s390, sparc64, powerpc radix)
    #   "slot"     a pointer in the pmd table's second half, at pmdp +
    #              PTRS_PER_PMD; the withdraw zeroes the fragment (powerpc hash)
    thp_deposit: ClassVar[str] = "generic"

    def thp_deposit_slot(self, pmd_pa: int) -> int:
        """"slot" deposits: where the pointer for the pmd at pmd_pa lives."""
        lv = self.level("pmd")
        return pmd_pa + lv.entries * lv.entry_size

    def empty_entry(self, level: str) -> int:
        """The value of an empty entry (0 almost everywhere; s390 differs)."""
        return 0

    def set_entry_ops(self, level: str, entry_pa: int, val: int) -> Sequence[MemOp]:
        """The stores that write `val` to an entry, in the order Linux makes them."""
        lv = self.level(level)
        return (MemOp(entry_pa, lv.entry_size, val),)

    def clear_entry_ops(self, level: str, entry_pa: int) -> Sequence[MemOp]:
        return self.set_entry_ops(level, entry_pa, self.empty_entry(level))

    def entry_ops(self, primitive: str, entry_pa: int, val: int = 0) -> Sequence[MemOp]:
        """The memory operations of one Linux primitive (a `PRIMITIVES` name), in order.

        By default `set_*` is `set_entry_ops` and the clears and get-and-clears
        are `clear_entry_ops`: the generic ptep_get_and_clear() is a read and
        a pte_clear(), and callers hold the ptl and have just read the entry,
        so that read is its load. An arch whose get-and-clear is atomic (or
        whose primitives changed between Linux versions) says so here.
        """
        level = PRIMITIVES[primitive]
        if primitive == "pmdp_invalidate":
            return (MemOp(entry_pa, self.level(level).entry_size, val, "xchg"),)
        if primitive.startswith("set_"):
            return self.set_entry_ops(level, entry_pa, val)
        return self.clear_entry_ops(level, entry_pa)

    def describe_entry(self, level: str, val: int) -> str:
        """Human-readable decoding of an entry, for `ptemu pgtable dump`."""
        return f"{val:#x}"

    def describe_hardware(self, level: str, entry_pa: int, read: Callable[[int, int], int]) -> str:
        """What the MMU reads for the Linux entry at `entry_pa`, where that is a
        separate word (arm's hardware pte 2048 bytes on), for `ptemu pgtable
        dump`; "" where the MMU reads the Linux entry itself. `read(pa, size)`
        reads physical memory and may raise for an address outside RAM."""
        return ""

    # ---- page-table allocation policy ------------------------------------
    # Name of the kernel's table allocator for this arch (emu/kernel/pgalloc.py
    # POLICIES): "page" is one table per page.
    pgtable_policy: ClassVar[str] = "page"
    split_pte_ptlocks: ClassVar[bool] = True
    split_pmd_ptlocks: ClassVar[bool] = False
    # CONFIG_HAVE_MOVE_PMD && arch_supports_page_table_move(): may mremap move a
    # whole PTE table by its pmd (move_normal_pmd)? x86 and powerpc radix only.
    have_move_pmd: bool = False

    def table_init(self, level: str) -> bytes | None:
        """Initial contents of a new table of `level` (None: all zero bytes).

        s390 needs this: its empty entries are not zero (PTE 0x400, segment 0x20).
        """
        return None

    def table_alloc_bytes(self, level: str) -> int:
        """Bytes a new table of `level` takes (may be less than a frame)."""
        return self.level(level).table_bytes

    # ---- the hardware (or software-refill) walker --------------------------
    def hw_root(self, root: int) -> int:
        """What a vCPU's root register holds for the mm whose top table is `root`.

        CR3 on x86-PAE (the PDPT), the ASCE Linux builds on s390 (origin,
        designation type, table length, private space), TTBR0 on arm, the
        PGD on powerpc and sparc64. Default: the table itself.
        """
        return root

    def load_root(self, hw_root: int, read: Callable[[int, int], int]) -> Any:
        """The MMU state a vCPU holds once `hw_root` is loaded into its root register.

        Where the CPU latches table entries at that moment (x86-PAE's four
        PDPTE registers) they are read here with `read(pa, size)`; later
        walks use the latched copies. Default: just the register value.
        `walk` accepts both this and the bare register value.
        """
        return hw_root

    @abstractmethod
    def walk(self, root: Any, va: int, access: Access, user: bool = True) -> Walk:
        """Translate `va` as the MMU does: yields entry reads, returns the result.

        `root` as for `translate_functional`, or what `load_root` returned.
        """

    def translate_functional(self, mem: bytes | bytearray | memoryview | MemoryImage,
                             root: int, va: int, access: Access,
                             user: bool = True) -> WalkResult:
        """Side-effect-free translation of `va` over a memory image.

        Runs the same walk the MMU runs, reading entries from `mem` and
        discarding A/D updates. Never raises for a bad table pointer: an
        entry pointing outside `mem` is a `Fault` with reason "outside-ram".

        `root` is the root register as the hardware holds it (`hw_root`):

        - x86-pae: CR3. The four PDPTEs are read from `mem` as a MOV CR3
          would latch them. Options: `maxphyaddr` (default 36: entry bits
          from it up to 62 are reserved and fault "bad-entry"), `nxe`
          (default on; off: XD is a reserved bit and no page is no-execute).
        - s390: an ASCE: designation type (region-first, -second, -third,
          segment), table length, real-space and private-space bits.
          Options: `edat` (1 MiB / 2 GiB frames, region protection),
          `iep` (instruction-execution protection), `storage_size` (bytes
          of storage: a frame beyond it is an addressing exception,
          "outside-ram"; default None: no frame check. A table beyond
          `mem` is "outside-ram" either way).
        - arm: TTBR0 (TTBCR.N = 0). Option `dacr`: the Domain Access
          Control Register the walk checks domains against.
        - powerpc: the PGD (radix: the process-table entry's RPDB; hash:
          Linux's table that hash_page walks). sparc64: the PGD.

        `user` is the privilege of the access: user (CPL3, USR, problem
        state) or supervisor.
        """
        image = mem if isinstance(mem, MemoryImage) else MemoryImage(mem)
        gen = self.walk(root, va, access, user)
        try:
            msg = next(gen)
            while True:
                if isinstance(msg, PteRead):
                    try:
                        raw = image.read(msg.pa, msg.size)
                    except IndexError:
                        gen.close()
                        return Fault(va, access, msg.level, "outside-ram")
                    msg = gen.send(int.from_bytes(raw, self.byteorder))
                elif isinstance(msg, PteWrite):
                    # A functional translation never writes: the store is dropped.
                    msg = gen.send(msg.value)
                else:
                    # A/D updates are not made; tell the walker the value it
                    # would have produced so it can finish.
                    raw = image.read(msg.pa, msg.size)
                    msg = gen.send(int.from_bytes(raw, self.byteorder) | msg.bits)
        except StopIteration as stop:
            return stop.value

    # ---- TLB invalidation model ----------------------------------------------
    # How flush_tlb_range() reaches other CPUs:
    #   "ipi"       an interrupt to each CPU: waits while a CPU has IRQs off or
    #               is mid-walk (interrupts are taken at instruction boundaries)
    #   "broadcast" a hardware broadcast (s390 IPTE/IDTE, powerpc tlbie): no wait
    #   "paravirt"  the hypervisor flushes remote TLBs itself (x86 with
    #               PARAVIRT, the configuration that needs RCU table freeing)
    tlb_flush_kind: ClassVar[str] = "ipi"
    # True where TLB misses are refilled by a software handler running with
    # IRQs off (sparc64 TSB miss, powerpc hash_page), not by a hardware walker.
    software_walker: ClassVar[bool] = False
    # Does pmdp_collapse_flush() wait out such software walkers itself?
    # (book3s64 hash: serialize_against_pte_lookup() sends an IPI to all CPUs)
    collapse_flush_serializes: ClassVar[bool] = False
    # MMU_GATHER_RCU_TABLE_FREE: detached tables are freed after an RCU grace
    # period (ppc, s390, sparc64 SMP, x86 PARAVIRT), not right after the flush.
    rcu_table_free: ClassVar[bool] = True
    # VIVT/aliasing caches (arm pre-v7): a shared page's other user mappings
    # are made uncached when it is mapped again (fault-armv.c make_coherent).
    vivt_cache_aliasing: ClassVar[bool] = False
    # Sizes a Translation may have besides uc_page_size, page_size and the
    # pmd size (sparc64 fabricates 8 MiB THPs from two 4 MiB TTEs).
    extra_tlb_sizes: ClassVar[tuple[int, ...]] = ()

    def flush_tsb(self, root: int, start: int, end: int, read: Callable[[int, int], int],
                  write: Callable[[int, int, int], None]) -> None:
        """Invalidate the walker's in-memory translation cache for [start, end).

        Called with every TLB flush (sparc64's TSB, flush_tsb_user in
        arch/sparc/mm/tsb.c); `read(pa, size)` / `write(pa, size, value)`
        access physical memory. Default: there is no such cache.
        """

    def root_block_bytes(self) -> int:
        """Bytes from the root that alloc_root allocated as one block and that
        live as long as the mm (sparc64 keeps its TSBs after the pgd)."""
        return self.levels[0].table_bytes

    def ram_limit(self) -> int:
        """The end of the physical address space RAM banks above the first may use.

        Raises ValueError saying why when the arch models no memory beyond
        its first bank (the scenario's `[machine] highmem`).
        """
        raise ValueError(f"{self.name}: RAM above the bank at 0 is modelled on x86-pae only "
                         "(whose entries reach MAXPHYADDR bits)")

    # Does a lockless read of a pmd need two loads (x86-PAE's 64-bit entries
    # on a 32-bit CPU)? None: decide from entry and word size.
    pmd_read_tears: ClassVar[bool | None] = None
    # The Linux release whose primitives and policies to follow, as (6, n)
    # (emu/kernel/version.py lists them); None: the newest ptemu models.
    # get_arch() sets it through use_kernel_version().
    kernel_version: tuple[int, int] | None = None

    def since(self, version: tuple[int, int]) -> bool:
        """Does the Linux being followed include the change made in `version`?"""
        return self.kernel_version is None or self.kernel_version >= version

    def use_kernel_version(self, version: tuple[int, int] | None, given: bool) -> None:
        """Follow `version` (`given`: the user named it, so an option may conflict).

        Arches whose defaults depend on the version resolve them here; an
        explicit arch option that contradicts an explicit version is an error.
        """
        self.kernel_version = version

    # ---- Unicorn glue -------------------------------------------------------
    @abstractmethod
    def setup_cpu(self, uc: Uc, cpu_index: int, root: int) -> None:
        """Put a fresh Unicorn instance into the state a user program expects."""

    @abstractmethod
    def get_pc(self, uc: Uc) -> int: ...

    @abstractmethod
    def set_pc(self, uc: Uc, pc: int) -> None: ...

    @abstractmethod
    def set_sp(self, uc: Uc, sp: int) -> None: ...

    def reg(self, name: str) -> int:
        """Unicorn register id of a register named in `callconv`."""
        raise NotImplementedError

    def read_reg(self, uc: Uc, name: str) -> int:
        return uc.reg_read(self.reg(name))

    def write_reg(self, uc: Uc, name: str, value: int) -> None:
        uc.reg_write(self.reg(name), value)

    def hypercall_args(self, uc: Uc) -> tuple[int, tuple[int, ...]]:
        cc = self.callconv
        return (self.read_reg(uc, cc.nr_reg), tuple(self.read_reg(uc, r) for r in cc.arg_regs))

    def set_return(self, uc: Uc, value: int) -> None:
        mask = (1 << (8 * self.word_size)) - 1
        self.write_reg(uc, self.callconv.ret_reg, value & mask)

    def after_trap(self, uc: Uc) -> None:
        """Adjust state after the trap hook (s390 must step over the svc)."""

    def set_args(self, uc: Uc, args: Sequence[int]) -> None:
        """Place a program's start arguments in the argument registers."""
        regs = self.callconv.arg_regs
        if len(args) > len(regs):
            raise ValueError(f"{self.name} takes at most {len(regs)} program arguments")
        for r, v in zip(regs, args, strict=False):
            self.write_reg(uc, r, v)

    word_size: ClassVar[int] = 4

    def step_count(self, uc: Uc, pc: int) -> int:
        """Instructions to run as one indivisible guest step at `pc` (sparc64 delay slots)."""
        return 1

    def slice_count(self, uc: Uc, pc: int, quantum: int) -> int:
        """Instructions to run for a slice of up to `quantum` (must not end in a delay slot)."""
        return quantum

    def save_regs(self, uc: Uc) -> Any:
        """The vCPU's register state, for Machine.snapshot()."""
        return uc.context_save()

    def restore_regs(self, uc: Uc, saved: Any) -> None:
        uc.context_restore(saved)

    def check_guest_asm(self, text: str, name: str) -> None:
        """Refuse guest assembly this arch cannot run restartably (sparc64 delay slots)."""

    def guest_asm_prelude(self) -> str:
        """Assembly text prepended to every guest program (macros, equates)."""
        return ""

    def prepare_guest_asm(self, text: str, base: int) -> str:
        """The program text as Keystone gets it, linked at `base` (s390 works
        around Keystone's label-branch encoding here). Default: unchanged."""
        return text

    def mmap_hint(self) -> dict[str, Any]:
        return {}
