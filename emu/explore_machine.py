"""A machine made for running thousands of schedules: cheap reset, footprints.

`ExploreMachine` is a `Machine` whose `reset()` costs what the last run
touched, not what the machine holds: physical memory comes back page by page
(only pages written since the snapshot: by host code through `PhysMem.write`,
or by guest code through a writable translation handed to Unicorn), and
frame metadata frame by frame (only frames the allocator handed out, freed,
relabelled or was asked about). The rest of the kernel model's Python state
is restored as `Machine.reset()` does it.

It can also log every physical access and allocator event of a step (for
the exhaustive strategy's partial-order reduction), and skip the end-of-run
trace and memory hashes that exploration never looks at.
"""

from __future__ import annotations

import copy
import io
import pickle
import types
from typing import Any

from arch.base import PERM_W, Access
from emu.cpu import TlbEntry, VCpu
from emu.machine import Machine
from emu.physmem import FrameAllocator, PhysMem, RamImage

PAGE_SHIFT = 12  # granule of dirty-page tracking (bytes are restored 4 KiB at a time)

# A physical-access log entry: ("r" | "w", pa, size) for memory, or
# ("alloc" | "set", pfn, nframes) for frames allocated or freed / relabelled,
# ("meta", pfn, 1) for frame metadata read.
LogEntry = tuple[str, int, int]


class TrackingPhysMem(PhysMem):
    """PhysMem that remembers which 4 KiB pages host code wrote since the snapshot."""

    def init_tracking(self, frame_shift: int) -> None:
        self.dirty: set[int] = set()
        self.frame_shift = frame_shift
        self.log: list[LogEntry] | None = None
        self.full_restore = False

    def write(self, pa: int, data: bytes) -> None:
        super().write(pa, data)
        n = len(data)
        if n:
            first, last = pa >> PAGE_SHIFT, (pa + n - 1) >> PAGE_SHIFT
            if first == last:
                self.dirty.add(first)
            else:
                self.dirty.update(range(first, last + 1))
            if self.log is not None:
                self.log.append(("w", pa, n))

    def read(self, pa: int, size: int) -> bytes:
        if self.log is not None and size:
            self.log.append(("r", pa, size))
        return super().read(pa, size)

    # read_int/write_int are the hot paths of walker and kernel accesses: the
    # same checks and effects as PhysMem's, with fewer Python calls.
    def read_int(self, pa: int, size: int, byteorder: str) -> int:
        if pa < 0 or size < 0 or pa + size > self.size:
            self.check(pa, size)
        if self.log is not None and size:
            self.log.append(("r", pa, size))
        return int.from_bytes(self.buf[pa:pa + size], byteorder)

    def write_int(self, pa: int, size: int, value: int, byteorder: str) -> None:
        self.write(pa, (value & ((1 << (8 * size)) - 1)).to_bytes(size, byteorder))

    def mark_dirty(self, pa: int, size: int) -> None:
        self.dirty.update(range(pa >> PAGE_SHIFT, ((pa + size - 1) >> PAGE_SHIFT) + 1))

    def restore(self, image: bytes) -> None:
        if self.full_restore:
            super().restore(image)
            self.full_restore = False
        else:
            view = memoryview(image)
            buf = self.buf
            low = self.size
            for page in sorted(self.dirty):
                a = page << PAGE_SHIFT
                if a < low:
                    b = min(a + (1 << PAGE_SHIFT), low)
                    buf[a:b] = view[a:b]
                else:  # a high bank: its bytes sit further down the image
                    base, size = self.bank_of(a)
                    b = min(a + (1 << PAGE_SHIFT), base + size)
                    at = self.image_offset(a)
                    buf[a:b] = view[at:at + b - a]
        self.dirty.clear()


class TrackingFrameAllocator(FrameAllocator):
    """FrameAllocator that remembers which frames' metadata may have changed."""

    def init_tracking(self, mem: TrackingPhysMem) -> None:
        self.touched: set[int] = set()
        self._tmem = mem
        self.after_free: Any = None  # called with the pa of every frame freed

    def _note(self, pa: int, nframes: int = 1, kind: str = "alloc") -> None:
        # touched: slots (indexes into `frames`); the log names frames by pfn
        slot = self.slot_of(pa)
        self.touched.update(range(slot, slot + nframes))
        log = self._tmem.log
        if log is not None:
            log.append((kind, pa // self.frame_size, nframes))

    def alloc(self, purpose: str, cpu: int | None, *args: Any, **kw: Any) -> int:
        pa = super().alloc(purpose, cpu, *args, **kw)
        nframes = kw.get("nframes", args[3] if len(args) > 3 else 1)
        self._note(pa, nframes)
        return pa

    def free(self, pa: int, cpu: int | None, why: str = "freed") -> None:
        if self._tmem.contains(pa, 1):
            self._note(pa, 1)
        super().free(pa, cpu, why)
        if self.after_free is not None:
            self.after_free(pa)

    def set_state(self, pa: int, *args: Any, **kw: Any) -> None:
        self._note(pa, 1, "set")
        super().set_state(pa, *args, **kw)

    def info(self, pa: int) -> Any:
        fi = super().info(pa)
        # callers may change what they get (sub-table states): count it as touched
        pfn = fi.pfn
        self.touched.add(pfn if pfn < self.low_frames else self.slot_of(pa))
        log = self._tmem.log
        if log is not None:
            log.append(("meta", fi.pfn, 1))
        return fi


class _LoggedImage(RamImage):
    """RAM seen through the access log (functional translations)."""

    def read(self, pa: int, size: int) -> bytes:
        if not self.mem.contains(pa, size):
            raise IndexError(pa)  # what translate_functional takes for outside RAM
        return self.mem.read(pa, size)  # TrackingPhysMem.read logs it


def _copy_info(saved: Any) -> Any:
    """A FrameInfo as it was: containers copied one level down (their elements,
    FrameEvents and sub-table states, are never changed in place)."""
    fi = object.__new__(type(saved))
    d = dict(saved.__dict__)
    for name, value in d.items():
        if type(value) in _CONTAINERS:
            d[name] = type(value)(value)
    fi.__dict__.update(d)
    return fi


_CONTAINERS = (list, dict, set)


class _StatePickler(pickle.Pickler):
    """Pickles a kernel-model state, sharing what deepcopy would share.

    The machine's kept objects, and every object deepcopy treats as atomic
    (functions, methods of builtins, classes: the model's variant classes
    are made at run time and have no importable name), are written as
    references into `shared` instead of being serialised.
    """

    ATOMIC = (types.FunctionType, types.BuiltinFunctionType, type, types.ModuleType,
              types.MethodWrapperType, types.WrapperDescriptorType)

    def __init__(self, file: io.BytesIO, kept: tuple[Any, ...]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.shared: list[Any] = list(kept)
        self._ids = {id(x): i for i, x in enumerate(kept)}

    def persistent_id(self, obj: Any) -> int | None:
        i = self._ids.get(id(obj))
        if i is None and isinstance(obj, self.ATOMIC):
            i = self._ids[id(obj)] = len(self.shared)
            self.shared.append(obj)
        return i


class _StateUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, shared: list[Any]) -> None:
        super().__init__(io.BytesIO(data))
        self.shared = shared

    def persistent_load(self, pid: int) -> Any:
        return self.shared[pid]


class ExploreMachine(Machine):
    """A Machine with a cheap reset(), optional access logging and optional digests."""

    # False while the base machine builds (set-up, populate, fast-forward to
    # race_begin): memory is not tracked yet, the snapshot is taken after it
    _tracking = False

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        # The buffer stays where every Unicorn instance mapped it; only the
        # Python class of the objects wrapping it changes.
        self.mem.__class__ = TrackingPhysMem
        self.mem.init_tracking((self.frames.frame_size - 1).bit_length())
        self._tracking = True
        self.frames.__class__ = TrackingFrameAllocator
        self.frames.init_tracking(self.mem)
        # Any frame freed may sit in some CPU's Unicorn TLB: drop those caches so
        # the next access comes back through our TLB model, where checkers see it
        # (the base machine does this for page-table frames only).
        self.frames.after_free = self._frame_freed
        self.digests = True
        self._infos: list[Any] | None = None
        # Services translate user addresses over the raw buffer (copy_to_user);
        # while accesses are logged, make those reads visible too.
        plain = self.arch.translate_functional

        def translate(mem: Any, root: int, va: int, access: Access, user: bool = True) -> Any:
            if self.mem.log is not None and mem is self.mem.buf:
                mem = _LoggedImage(self.mem)
            return plain(mem, root, va, access, user)

        self.arch.translate_functional = translate

    def _frame_freed(self, pa: int) -> None:
        self.flush_uc_tlbs()

    # ---- snapshot / reset ---------------------------------------------------------
    # allocator lists of plain ints: copied shallowly (a deepcopy walks every int)
    _INT_LISTS = ("_free", "_quarantine")

    def snapshot(self) -> None:
        fd = self.frames.__dict__
        infos = fd.pop("frames")
        lists = {k: fd.pop(k) for k in self._INT_LISTS if k in fd}
        try:
            super().snapshot()
        finally:
            fd["frames"] = infos
            fd.update(lists)
        self._infos = copy.deepcopy(infos)
        self._lists = {k: type(v)(v) for k, v in lists.items()}
        self.mem.dirty.clear()
        self.frames.touched.clear()
        # The kernel model's state comes back from bytes at every reset: an
        # unpickle is some 20x cheaper than Machine's deepcopy (a few ms per
        # schedule on the shipped scenarios) and builds the same objects.
        self._pickled = self._pickle(self._snapshot[2])

    def _pickle(self, state: Any) -> tuple[bytes, list[Any]] | None:
        buf = io.BytesIO()
        p = _StatePickler(buf, self.kept_objects())
        try:
            p.dump(state)
        except (pickle.PicklingError, TypeError, AttributeError):
            return None  # something only deepcopy can copy: reset() uses it
        return buf.getvalue(), p.shared

    def _copy_state(self, state: Any) -> Any:
        saved = getattr(self, "_pickled", None)
        if saved is not None and self._snapshot is not None and state is self._snapshot[2]:
            return _StateUnpickler(*saved).load()
        return super()._copy_state(state)

    def reset(self) -> None:
        if any(c.sync_walks for c in self.cpus):
            self.mem.full_restore = True  # fills in the hook bypass dirty tracking
        touched = self.frames.touched
        super().reset()  # restores frames.__dict__ but not what snapshot() popped
        for k, v in self._lists.items():
            setattr(self.frames, k, type(v)(v))
        live = self.frames.frames
        for pfn in sorted(touched):
            saved = self._infos[pfn]
            if live[pfn] != saved:
                live[pfn] = _copy_info(saved)
        self.frames.touched = set()

    # ---- tracking guest writes and accesses -------------------------------------
    def on_tlb_use(self, cpu: VCpu, entry: TlbEntry, va: int, acc: Access) -> None:
        if not self._tracking:  # a guest running free while the machine is built
            super().on_tlb_use(cpu, entry, va, acc)
            return
        tr = entry.tr
        pa = tr.pa(va)
        gran = self.arch.uc_page_size
        page = pa - pa % gran
        writable = bool(tr.perms & PERM_W)
        if writable:
            self.mem.mark_dirty(page, gran)
        log = self.mem.log
        if log is not None:
            log.append(("w" if writable else "r", page, gran))
            for pfn, _gen in entry.gens:
                log.append(("meta", pfn, 1))
        super().on_tlb_use(cpu, entry, va, acc)

    def hypercall(self, cpu: VCpu) -> None:
        self.trapped = True
        super().hypercall(cpu)

    def memory_digest(self) -> str:
        return super().memory_digest() if self.digests else ""
