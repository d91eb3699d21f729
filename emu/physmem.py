"""Guest physical memory and the frame allocator.

Owns the one host buffer that every vCPU's Unicorn instance maps at guest
physical address 0 (so a store by one CPU is seen by all), and the per-frame
metadata that checkers treat as the truth: what a frame is (free, data, page
table of some level, fragments of a shared table page, RCU-pending), who
allocated and freed it, at which step.

Freed frames go to a quarantine (like KASAN's) before they can be handed out
again, so a use-after-free still sees the frame as freed, with its history,
for as long as a checker could care.
"""

from __future__ import annotations

import bisect
import ctypes
import enum
import mmap
import operator
from collections import deque
from dataclasses import dataclass, field


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


class PhysMem:
    """The shared guest-physical RAM buffer.

    Byte order is the caller's business (each arch reads its entries in its
    own endianness); this class only moves bytes and integers.
    """

    def __init__(self, size: int) -> None:
        if size <= 0 or size % 0x10000:
            raise PhysMemError(f"memory size {size:#x} must be a positive multiple of 64 KiB")
        self.size = size
        self.buf = mmap.mmap(-1, size)
        self._cbuf = (ctypes.c_char * size).from_buffer(self.buf)
        self.address = ctypes.addressof(self._cbuf)

    def check(self, pa: int, size: int) -> None:
        if pa < 0 or size < 0 or pa + size > self.size:
            raise PhysMemError(f"physical access {pa:#x}+{size} outside RAM of {self.size:#x}")

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
        return bytes(self.buf)

    def restore(self, image: bytes) -> None:
        self.buf[:] = image


class FrameAllocator:
    """Hands out frames of `frame_size` bytes from guest RAM.

    Allocation is deterministic (lowest free pfn first, after the
    quarantine); `alignment` lets an arch demand larger alignment (sparc64
    needs 8 KiB frames, an x86 PAE PDPT is 32-byte aligned inside a frame).
    """

    def __init__(self, mem: PhysMem, frame_size: int, reserved_frames: int = 1,
                 quarantine: int = 64) -> None:
        if frame_size & (frame_size - 1):
            raise PhysMemError(f"frame size {frame_size:#x} is not a power of two")
        self.mem = mem
        self.frame_size = frame_size
        self.nframes = mem.size // frame_size
        self.frames = [FrameInfo(pfn) for pfn in range(self.nframes)]
        self.quarantine_len = quarantine
        self._free: list[int] = []  # kept sorted descending, pop() gives lowest
        self._quarantine: deque[int] = deque()
        for pfn in range(min(reserved_frames, self.nframes)):
            self.frames[pfn].state = FrameState.RESERVED
        self._free = list(range(self.nframes - 1, reserved_frames - 1, -1))
        self.step = 0  # the machine updates this so events carry step numbers

    # -- queries -----------------------------------------------------------
    def pa(self, pfn: int) -> int:
        return pfn * self.frame_size

    def pfn_of(self, pa: int) -> int:
        return pa // self.frame_size

    def info(self, pa: int) -> FrameInfo:
        pfn = pa // self.frame_size
        if not 0 <= pfn < self.nframes:
            raise PhysMemError(f"physical address {pa:#x} outside RAM")
        return self.frames[pfn]

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
        pfns = self._take(nframes)
        for pfn in pfns:
            fi = self.frames[pfn]
            fi.state = state
            fi.purpose = purpose
            fi.level = level
            fi.generation += 1
            fi.alloc_step, fi.alloc_cpu = self.step, cpu
            fi.free_step = fi.free_cpu = None
            fi.subtables = {}
            fi.history.append(FrameEvent(self.step, cpu, f"allocated as {purpose}"))
        pa = pfns[0] * self.frame_size
        if zero:
            self.mem.zero(pa, self.frame_size * nframes)
        return pa

    def _take(self, nframes: int) -> list[int]:
        if nframes == 1:
            if not self._free:
                self._drain_quarantine(all_of_it=True)
            if not self._free:
                raise PhysMemError("out of guest physical memory")
            return [self._free.pop()]
        for attempt in range(2):
            free = set(self._free)
            for pfn in reversed(self._free):  # ascending: the list is kept descending
                if pfn % nframes == 0 and all(pfn + i in free for i in range(nframes)):
                    block = list(range(pfn, pfn + nframes))
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
        self._quarantine.append(fi.pfn)
        self._drain_quarantine()

    def _drain_quarantine(self, all_of_it: bool = False) -> None:
        keep = 0 if all_of_it else self.quarantine_len
        free = self._free
        while len(self._quarantine) > keep:
            # kept descending (the lowest frame is popped first) by insertion,
            # not by sorting the whole list at every free
            bisect.insort(free, self._quarantine.popleft(), key=operator.neg)
