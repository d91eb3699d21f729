"""Guest physical memory and the frame allocator.

Owns the one host buffer that every vCPU's Unicorn instance maps (so a store
by one CPU is seen by all), and the per-frame metadata that checkers treat
as the truth: what a frame is (free, data, page table of some level,
fragments of a shared table page, RCU-pending), who allocated and freed it,
at which step.

RAM is a bank at physical address 0 and, optionally, banks of high memory
further up (x86-PAE's RAM above 4 GiB). The buffer is indexed by physical
address: with high banks it is a sparse reservation as large as the highest
bank's end, of which only the banks are RAM (and only pages touched cost
host memory). A frame's pfn is its physical address over the frame size;
its place in the allocator's table (`slot`) is not its pfn once there are
holes.

Freed frames go to a quarantine (like KASAN's) before they can be handed out
again, so a use-after-free still sees the frame as freed, with its history,
for as long as a checker could care.
"""

from __future__ import annotations

import bisect
import ctypes
import enum
import hashlib
import mmap
import operator
from collections import deque
from dataclasses import dataclass, field

from arch.base import MemoryImage


class RamImage(MemoryImage):
    """A read-only view of a `PhysMem` for functional walks, bank by bank."""

    def __init__(self, mem: PhysMem) -> None:
        super().__init__(mem.buf)
        self.mem = mem

    def read(self, pa: int, size: int) -> bytes:
        if not self.mem.contains(pa, size):
            raise IndexError(pa)
        return self.mem.buf[pa:pa + size]


class FrameState(enum.Enum):
    FREE = "free"
    RESERVED = "reserved"  # never handed out (the zero frame, firmware)
    DATA = "data"  # anon/file page, guest code
    PGTABLE = "pgtable"  # holds page tables (whole page or fragments)
    RCU_PENDING = "rcu-pending"  # pte_free_defer queued, grace period not over


@dataclass
class FrameEvent:
    """One change in a frame's life, for reports."""

    step: int
    cpu: int | None
    what: str


@dataclass
class FrameInfo:
    """Metadata of one frame (one Linux page of the arch)."""

    pfn: int
    state: FrameState = FrameState.FREE
    purpose: str = ""
    level: str | None = None  # page-table level name when PGTABLE
    generation: int = 0  # bumped at each allocation: tells reuse apart
    alloc_step: int | None = None
    alloc_cpu: int | None = None
    free_step: int | None = None
    free_cpu: int | None = None
    history: list[FrameEvent] = field(default_factory=list)
    # Where tables share a frame (powerpc fragments, s390 halves, arm's
    # Linux+hardware pairs): byte offset of each sub-table -> its state.
    subtables: dict[int, str] = field(default_factory=dict)


class PhysMemError(Exception):
    """A physical access outside guest RAM or an allocator misuse."""


BANK_ALIGN = 0x10000  # banks start and end on 64 KiB (Unicorn maps whole pages of every arch)
_MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000)  # Linux's value where Python lacks it


class PhysMem:
    """The shared guest-physical RAM buffer.

    Byte order is the caller's business (each arch reads its entries in its
    own endianness); this class only moves bytes and integers. `size` is
    the bank at 0; `banks` lists every bank as (base, size), that one first.
    """

    def __init__(self, size: int, high: tuple[tuple[int, int], ...] = ()) -> None:
        if size <= 0 or size % BANK_ALIGN:
            raise PhysMemError(f"memory size {size:#x} must be a positive multiple of 64 KiB")
        banks = [(0, size)]
        for base, bsize in sorted(high):
            if base % BANK_ALIGN or bsize <= 0 or bsize % BANK_ALIGN:
                raise PhysMemError(f"memory bank at {base:#x} of {bsize:#x} bytes: base and "
                                   "size must be multiples of 64 KiB, size positive")
            if base < banks[-1][0] + banks[-1][1]:
                raise PhysMemError(f"memory bank at {base:#x} overlaps the bank at "
                                   f"{banks[-1][0]:#x} (which ends at "
                                   f"{banks[-1][0] + banks[-1][1]:#x})")
            banks.append((base, bsize))
        self.size = size
        self.banks = tuple(banks)
        self.top = banks[-1][0] + banks[-1][1]
        if len(banks) == 1:
            self.buf = mmap.mmap(-1, size)
        else:
            # holes are never touched, so they cost address space only
            self.buf = mmap.mmap(-1, self.top, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
                                 | _MAP_NORESERVE)
        self._cbuf = (ctypes.c_char * self.top).from_buffer(self.buf)
        self.address = ctypes.addressof(self._cbuf)

    def bank_of(self, pa: int) -> tuple[int, int] | None:
        """The (base, size) of the bank holding `pa`, or None in a hole or above RAM."""
        for base, size in self.banks:
            if base <= pa < base + size:
                return base, size
        return None

    def contains(self, pa: int, size: int) -> bool:
        """Whether [pa, pa+size) is RAM, inside one bank."""
        if 0 <= pa and pa + size <= self.size:
            return size >= 0
        bank = self.bank_of(pa)
        return bank is not None and size >= 0 and pa + size <= bank[0] + bank[1]

    def check(self, pa: int, size: int) -> None:
        if not self.contains(pa, size):
            where = f"RAM of {self.size:#x}" if len(self.banks) == 1 else "RAM (" + ", ".join(
                f"{b:#x}-{b + n:#x}" for b, n in self.banks) + ")"
            raise PhysMemError(f"physical access {pa:#x}+{size} outside {where}")

    def read(self, pa: int, size: int) -> bytes:
        self.check(pa, size)
        return self.buf[pa : pa + size]

    def write(self, pa: int, data: bytes) -> None:
        self.check(pa, len(data))
        self.buf[pa : pa + len(data)] = data

    def read_int(self, pa: int, size: int, byteorder: str) -> int:
        return int.from_bytes(self.read(pa, size), byteorder)

    def write_int(self, pa: int, size: int, value: int, byteorder: str) -> None:
        self.write(pa, (value & ((1 << (8 * size)) - 1)).to_bytes(size, byteorder))

    def zero(self, pa: int, size: int) -> None:
        self.write(pa, bytes(size))

    def snapshot(self) -> bytes:
        """The contents of RAM: the banks' bytes one after the other."""
        if len(self.banks) == 1:
            return bytes(self.buf)
        return b"".join(self.buf[b:b + n] for b, n in self.banks)

    def restore(self, image: bytes) -> None:
        if len(self.banks) == 1:
            self.buf[:] = image
            return
        off = 0
        for b, n in self.banks:
            self.buf[b:b + n] = image[off:off + n]
            off += n

    def image_offset(self, pa: int) -> int:
        """Where the byte at RAM address `pa` sits in a `snapshot()` image."""
        if pa < self.size:
            return pa
        off = 0
        for b, n in self.banks:
            if b <= pa < b + n:
                return off + pa - b
            off += n
        raise PhysMemError(f"physical address {pa:#x} outside RAM")

    def image(self) -> RamImage:
        """RAM as `Arch.translate_functional` reads it: a hole or beyond is outside RAM."""
        return RamImage(self)

    def digest(self) -> str:
        """A short hash of RAM's contents (the banks, in order)."""
        h = hashlib.sha256()
        for b, n in self.banks:
            h.update(memoryview(self.buf)[b:b + n])
        return h.hexdigest()[:16]


PTE_PLACEMENTS = ("low", "highmem", "interleave")


class FrameAllocator:
    """Hands out frames of `frame_size` bytes from guest RAM.

    Allocation is deterministic (lowest free address first, after the
    quarantine); `alignment` lets an arch demand larger alignment (sparc64
    needs 8 KiB frames, an x86 PAE PDPT is 32-byte aligned inside a frame).

    `pte_placement` says where PTE tables come from when there is high
    memory: "low" (lowest free frame, like every other frame), "highmem"
    (the high banks first, as CONFIG_HIGHPTE's __GFP_HIGHMEM allocation of
    x86-32 PTE pages does; lowmem when they are full), or "interleave" (the
    high banks in turn, at the same offset in each, as an MPOL_INTERLEAVE
    across equal nodes hands out their lowest free pages).
    """

    def __init__(self, mem: PhysMem, frame_size: int, reserved_frames: int = 1,
                 quarantine: int = 64, pte_placement: str = "low") -> None:
        if frame_size & (frame_size - 1):
            raise PhysMemError(f"frame size {frame_size:#x} is not a power of two")
        if pte_placement not in PTE_PLACEMENTS:
            raise PhysMemError(f"pte placement {pte_placement!r}: must be one of "
                               + ", ".join(PTE_PLACEMENTS))
        self.mem = mem
        self.frame_size = frame_size
        # (first slot, first pfn, frames) per bank: slots number the frames of
        # every bank in address order, so a pfn is a slot only in the bank at 0
        self._banks: list[tuple[int, int, int]] = []
        slot = 0
        for base, size in mem.banks:
            self._banks.append((slot, base // frame_size, size // frame_size))
            slot += size // frame_size
        self.nframes = slot
        self.frames = [FrameInfo(pfn) for _s, first, n in self._banks
                       for pfn in range(first, first + n)]
        self.low_frames = self._banks[0][2]
        self.quarantine_len = quarantine
        self.pte_placement = pte_placement if len(self._banks) > 1 else "low"
        self._free: list[int] = []  # slots, kept sorted descending, pop() gives lowest
        self._quarantine: deque[int] = deque()
        for s in range(min(reserved_frames, self.nframes)):
            self.frames[s].state = FrameState.RESERVED
        self._free = list(range(self.nframes - 1, reserved_frames - 1, -1))
        self.step = 0  # the machine updates this so events carry step numbers

    # -- queries -----------------------------------------------------------
    def pa(self, pfn: int) -> int:
        return pfn * self.frame_size

    def pfn_of(self, pa: int) -> int:
        return pa // self.frame_size

    def slot_of(self, pa: int) -> int:
        """The index in `frames` of the frame holding `pa` (PhysMemError if it is not RAM)."""
        pfn = pa // self.frame_size
        if 0 <= pfn < self.low_frames:
            return pfn
        for slot, first, n in self._banks:
            if first <= pfn < first + n:
                return slot + pfn - first
        raise PhysMemError(f"physical address {pa:#x} outside RAM")

    def info(self, pa: int) -> FrameInfo:
        pfn = pa // self.frame_size
        if 0 <= pfn < self.low_frames:
            return self.frames[pfn]
        return self.frames[self.slot_of(pa)]

    def by_pfn(self, pfn: int) -> FrameInfo:
        return self.frames[self.slot_of(pfn * self.frame_size)]

    def frame_base(self, pa: int) -> int:
        return pa - pa % self.frame_size

    def free_count(self) -> int:
        return len(self._free) + len(self._quarantine)

    # -- allocation --------------------------------------------------------
    def alloc(self, purpose: str, cpu: int | None, state: FrameState = FrameState.DATA,
              level: str | None = None, zero: bool = True, nframes: int = 1) -> int:
        """Allocate `nframes` contiguous frames, naturally aligned; returns the first's address.

        Each frame of a multi-frame block gets its own metadata (s390's
        16 KiB region/segment tables are four 4 KiB frames).
        """
        slot = None
        if nframes == 1 and level == "pte" and self.pte_placement != "low":
            slot = self._take_high()
        slots = [slot] if slot is not None else self._take(nframes)
        for sl in slots:
            fi = self.frames[sl]
            fi.state = state
            fi.purpose = purpose
            fi.level = level
            fi.generation += 1
            fi.alloc_step, fi.alloc_cpu = self.step, cpu
            fi.free_step = fi.free_cpu = None
            fi.subtables = {}
            fi.history.append(FrameEvent(self.step, cpu, f"allocated as {purpose}"))
        pa = self.frames[slots[0]].pfn * self.frame_size
        if zero:
            self.mem.zero(pa, self.frame_size * nframes)
        return pa

    def _take_high(self) -> int | None:
        """A free slot in the high banks by the placement's order, or None if they are full."""
        high = [s for s in self._free if s >= self.low_frames]
        if not high:
            return None
        if self.pte_placement == "interleave":
            def key(s: int) -> tuple[int, int]:
                for i, (first, _pfn, n) in enumerate(self._banks):
                    if first <= s < first + n:
                        return s - first, i
                raise AssertionError(s)
            best = min(high, key=key)
        else:
            best = min(high)
        self._free.remove(best)
        return best

    def _take(self, nframes: int) -> list[int]:
        if nframes == 1:
            if not self._free:
                self._drain_quarantine(all_of_it=True)
            if not self._free:
                raise PhysMemError("out of guest physical memory")
            return [self._free.pop()]
        for attempt in range(2):
            free = set(self._free)
            for s in reversed(self._free):  # ascending: the list is kept descending
                pfn = self.frames[s].pfn
                # contiguous slots are contiguous pfns only inside one bank
                if pfn % nframes == 0 and all(s + i in free and self.frames[s + i].pfn == pfn + i
                                              for i in range(nframes)):
                    block = list(range(s, s + nframes))
                    taken = set(block)
                    self._free = [p for p in self._free if p not in taken]
                    return block
            if attempt == 0:
                self._drain_quarantine(all_of_it=True)
        raise PhysMemError(f"no {nframes} contiguous free frames")

    def set_state(self, pa: int, state: FrameState, cpu: int | None, what: str) -> None:
        fi = self.info(pa)
        fi.state = state
        fi.history.append(FrameEvent(self.step, cpu, what))

    def free(self, pa: int, cpu: int | None, why: str = "freed") -> None:
        fi = self.info(pa)
        if fi.state in (FrameState.FREE, FrameState.RESERVED):
            raise PhysMemError(
                f"double free of frame {pa:#x} ({why}); it was {fi.state.value}"
                + (f", freed at step {fi.free_step} by cpu{fi.free_cpu}" if fi.free_step is not None else ""))
        fi.state = FrameState.FREE
        fi.level = None
        fi.free_step, fi.free_cpu = self.step, cpu
        fi.history.append(FrameEvent(self.step, cpu, why))
        self._quarantine.append(self.slot_of(fi.pfn * self.frame_size))
        self._drain_quarantine()

    def _drain_quarantine(self, all_of_it: bool = False) -> None:
        keep = 0 if all_of_it else self.quarantine_len
        free = self._free
        while len(self._quarantine) > keep:
            # kept descending (the lowest frame is popped first) by insertion,
            # not by sorting the whole list at every free
            bisect.insort(free, self._quarantine.popleft(), key=operator.neg)
