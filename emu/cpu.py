"""One virtual CPU: a Unicorn instance whose MMU is ptemu's.

Owns the Unicorn instance (UC_TLB_VIRTUAL, the shared RAM mapped at
physical 0), the model of what this CPU's TLB holds, and the CPU's mode:
running guest code, in the middle of a hardware walk, in a kernel routine
(hypercall or fault), done, or crashed.

Unicorn's own TLB is only a cache of ours: the fill hook answers from our
TLB model when it can (a hit), otherwise a miss starts a walk. Under the
scheduler a walk is interleavable: the hook stops the instruction (nothing
is committed), each entry read is then one step, and the instruction is
re-executed once the walk has filled our TLB. Flushing our model flushes
Unicorn's whole TLB (it has no per-page flush), which is cheap: refills
come from our model.
"""

from __future__ import annotations

import ctypes
import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import unicorn
from unicorn import UcError

from arch.base import (
    PERM_X,
    Access,
    Fault,
    PteRead,
    PteSetBits,
    PteWrite,
    Translation,
    Walk,
    perm_allows,
)
from emu.kernel.task import KernelTask

if TYPE_CHECKING:
    from arch.base import Arch
    from emu.kernel import Kernel
    from emu.physmem import PhysMem


class CpuHost(Protocol):
    """What a vCPU asks of the machine that owns it.

    emu.machine.Machine is the implementation; the vCPU names only this, so
    this module never imports the machine that imports it.
    """

    arch: Arch
    mem: PhysMem
    kernel: Kernel
    root: int
    step: int

    def frame_gens(self, tr: Translation) -> tuple[tuple[int, int], ...]: ...
    def on_tlb_use(self, cpu: VCpu, entry: TlbEntry, va: int, acc: Access) -> None: ...
    def walker_access(self, cpu: VCpu, msg: PteRead | PteSetBits | PteWrite) -> int: ...
    def run_walk_now(self, cpu: VCpu, va: int, acc: Access) -> Translation | Fault: ...
    def guest_quiescent(self, cpu: VCpu) -> None: ...
    def hypercall(self, cpu: VCpu) -> None: ...
    def kernel_returned(self, cpu: VCpu, kind: str, result: Any) -> None: ...
    def kill_now(self, cpu: VCpu) -> None: ...
    def cpu_stopped(self, cpu: VCpu) -> None: ...
    def trace_guest(self, cpu: VCpu, pc: int) -> None: ...
    def trace_kernel(self, cpu: int, routine: str, op: Any) -> None: ...
    def trace_note(self, cpu: VCpu, text: str) -> None: ...

TCG_BUFFER = 32 << 20  # per instance; Unicorn's default is 1 GiB of address space


class _RegSpy:
    """Stands in for a Uc to learn which register an arch's `get_pc` reads."""

    def __init__(self) -> None:
        self.regs: list[int] = []

    def reg_read(self, reg_id: int, aux: Any = None) -> int:
        self.regs.append(reg_id)
        return 0


class _FastUc:
    """`emu_start` and the PC read of one Uc straight through ctypes.

    They are the two calls of every guest step; the binding's own wrappers
    cost more than Unicorn does for one instruction (a `reg_read` picks a
    register class through a generator on every call). Same calls, same
    results: the PC register is the one the arch's `get_pc` reads (asked
    of a stand-in Uc, so the register stays the arch's fact), read into a
    zeroed 64-bit buffer as the binding does.
    """

    def __init__(self, uc: unicorn.Uc, arch: Any) -> None:
        from unicorn.unicorn_py3.unicorn import uclib
        self.uc = uc
        self._uch = uc._uch
        self._start = uclib.uc_emu_start
        self._read = uclib.uc_reg_read
        self._buf = ctypes.c_uint64()
        self._ref = ctypes.byref(self._buf)
        spy = _RegSpy()
        try:
            arch.get_pc(spy)
        except Exception:  # noqa: BLE001 - an arch whose get_pc does more: use it as is
            spy.regs = []
        self._pc_reg = spy.regs[0] if len(spy.regs) == 1 else None
        self._arch = arch

    def emu_start(self, begin: int, count: int) -> None:
        uc = self.uc
        uc._hook_exception = None
        status = self._start(self._uch, begin, 0, 0, count)
        if status != unicorn.UC_ERR_OK:
            raise UcError(status)
        if uc._hook_exception is not None:
            raise uc._hook_exception

    def pc(self) -> int:
        if self._pc_reg is None:
            return self._arch.get_pc(self.uc)
        self._buf.value = 0
        status = self._read(self._uch, self._pc_reg, self._ref)
        if status != unicorn.UC_ERR_OK:
            raise UcError(status, self._pc_reg)
        return self._buf.value


class Mode(enum.Enum):
    GUEST = "guest"
    WALK = "walk"
    KERNEL = "kernel"
    DONE = "done"
    CRASHED = "crashed"


@dataclass
class TlbEntry:
    """What one CPU's TLB holds for one mapping (a page or a huge page)."""

    tr: Translation
    fill_step: int
    # frame generation of every table and the target when filled: a change
    # means the entry outlived what it was built from
    gens: tuple[tuple[int, int], ...] = ()


class GuestCrash(Exception):
    pass


class VCpu:
    def __init__(self, machine: CpuHost, index: int) -> None:
        self.m = machine
        self.index = index
        arch = machine.arch
        self.arch = arch
        uc = unicorn.Uc(arch.uc_arch, arch.uc_mode)
        self.uc = uc
        uc.ctl_set_tcg_buffer_size(TCG_BUFFER)
        uc.ctl_set_tlb_mode(unicorn.UC_TLB_VIRTUAL)
        for base, size in machine.mem.banks:  # the buffer is indexed by physical address
            uc.mem_map_ptr(base, size, unicorn.UC_PROT_ALL, machine.mem.address + base)
        # `until` is never reached: exits list empty, slices bounded by count
        uc.ctl_exits_enabled(True)
        uc.ctl_set_exits([])
        uc.hook_add(unicorn.UC_HOOK_TLB_FILL, self._fill)
        uc.hook_add(unicorn.UC_HOOK_INTR, self._intr)
        self.fast = _FastUc(uc, arch)
        self.tlb: dict[int, TlbEntry] = {}
        self._tlb_sizes = sorted({arch.uc_page_size, arch.page_size, arch.pmd_size,
                                  *arch.extra_tlb_sizes})
        self.mode = Mode.GUEST
        self.walk: Walk | None = None
        self.walk_msg: Any = None
        self.walk_req: tuple[int, Access] | None = None
        self.task: KernelTask | None = None
        self.task_kind = ""
        self.pc = 0
        self.exit_code: int | None = None
        self.crash: str | None = None
        self._miss: tuple[int, Access] | None = None
        self._trap: int | None = None
        self._hook_error: BaseException | None = None
        self.sync_walks = False  # walk inside the hook (no interleaving): fast mode
        self.quantum = 1  # > 1: guest slices of up to this many instructions (see _slice)
        self._slicing = False  # inside a slice: a data access stops it
        self._data_stop = False  # the slice stopped before a data access
        self._uc_data = True  # Unicorn's TLB may hold data translations
        self.hw_root = 0
        self.mmu_root: Any = None  # the root register and what the MMU latched with it
        self.killed: int | None = None  # exit_group() of its process: exit at user mode
        self.exit_pending: int | None = None  # the exit code, while mmput() runs
        # the signal that killed its process ("SIGSEGV"), where the scenario allows it
        self.signalled: str | None = None

    def load_root(self, hw_root: int) -> None:
        """Load the root register (CR3, the ASCE, TTBR0): the MMU latches what
        it latches at that moment (x86-PAE's PDPTEs) and walks use that."""
        self.hw_root = hw_root
        self.mmu_root = self.arch.load_root(
            hw_root, lambda pa, size: self.m.mem.read_int(pa, size, self.arch.byteorder))

    # ---- TLB model -------------------------------------------------------------
    def tlb_lookup(self, va: int) -> TlbEntry | None:
        for size in self._tlb_sizes:
            e = self.tlb.get(va & ~(size - 1))
            if e is not None and e.tr.size == size:
                return e
        return None

    def tlb_insert(self, tr: Translation) -> None:
        self.tlb[tr.va_base] = TlbEntry(tr, self.m.step, self.m.frame_gens(tr))

    def flush_range(self, start: int, end: int) -> bool:
        if start <= 0 and end >= 1 << self.arch.va_bits and self.mmu_root is not None:
            # flush_tlb_mm(): x86 reloads CR3 for it (native_flush_tlb_local),
            # which relatches the PAE PDPTEs; elsewhere reloading is a no-op.
            self.load_root(self.hw_root)
        gone = [va for va, e in self.tlb.items() if va < end and start < va + e.tr.size]
        for va in gone:
            del self.tlb[va]
        if gone:
            self.flush_uc_tlb()
        return bool(gone)

    def flush_all(self) -> None:
        self.tlb.clear()
        self.flush_uc_tlb()

    def flush_uc_tlb(self) -> None:
        self.uc.ctl(unicorn.UC_CTL_TLB_FLUSH, unicorn.UC_CTL_IO_WRITE)

    # ---- Unicorn hooks (exceptions must not escape into C) ---------------------
    def _fill(self, uc: unicorn.Uc, va: int, access: int, entry: Any, _ud: Any) -> bool:
        try:
            acc = Access(access - unicorn.UC_MEM_READ)
            if self._slicing and acc is not Access.FETCH:
                self._data_stop = True  # nothing of this instruction is committed
                uc.emu_stop()
                return False
            e = self.tlb_lookup(va)
            if e is not None and perm_allows(e.tr.perms, acc):
                self.m.on_tlb_use(self, e, va, acc)
                entry.paddr = e.tr.pa(va)
                # in a slice, a fetch fill lets Unicorn fetch only: a load or
                # store to the same page comes back here and ends the slice
                entry.perms = e.tr.perms & PERM_X if self._slicing else e.tr.perms
                return True
            if e is not None:
                # An entry that does not allow the access faults, and a fault
                # invalidates the TLB entries for its address (SDM 4.10.4.1)
                # before the walk refills: else an entry of another size than
                # the refill's would keep shadowing it.
                self.tlb = {k: x for k, x in self.tlb.items()
                            if not k <= va < k + x.tr.size}
            if self.sync_walks:
                res = self.m.run_walk_now(self, va, acc)
                if isinstance(res, Translation):
                    self.tlb_insert(res)
                    entry.paddr = res.pa(va)
                    entry.perms = res.perms
                    return True
            self._miss = (va, acc)
        except BaseException as exc:  # noqa: BLE001 - re-raised after emu_start
            self._hook_error = exc
        uc.emu_stop()
        return False

    def _intr(self, uc: unicorn.Uc, intno: int, _ud: Any) -> None:
        self._trap = intno
        uc.emu_stop()

    # ---- scheduling interface -------------------------------------------------------
    def runnable(self) -> bool:
        if self.mode is Mode.GUEST or self.mode is Mode.WALK:
            return True
        if self.mode is Mode.KERNEL:
            return self.task.runnable()
        return False

    def alive(self) -> bool:
        return self.mode not in (Mode.DONE, Mode.CRASHED)

    def step(self) -> None:
        mode = self.mode
        if mode is Mode.GUEST:
            if self.killed is not None:
                self.m.kill_now(self)  # SIGKILL, delivered on the way to user mode
                return
            self._guest_step()
        elif mode is Mode.WALK:
            self._walk_step()
        elif mode is Mode.KERNEL:
            self._kernel_step()
        else:
            raise RuntimeError(f"cpu{self.index} stepped while {mode.value}")

    # ---- guest -------------------------------------------------------------------
    def _guest_step(self) -> None:
        m = self.m
        uc = self.uc
        pc = self.pc
        m.trace_guest(self, pc)
        if self.quantum > 1:
            err = self._slice(pc)
            if self._data_stop:
                self._data_stop = False
                if self.pc == pc:  # its first instruction loads or stores: run just that
                    err = self._single(pc)
                elif self._hook_error is None:
                    # the slice ran up to a load or store: that is the next step
                    m.guest_quiescent(self)
                    return
        else:
            err = self._single(pc)
        if self._hook_error is not None:
            exc, self._hook_error = self._hook_error, None
            raise exc
        if self._trap is not None:
            intno, self._trap = self._trap, None
            if intno == self.arch.callconv.intno:
                self.arch.after_trap(uc)
                self.pc = self.arch.get_pc(uc)
                m.hypercall(self)
                return
            self._crash(f"unexpected interrupt {intno:#x} at {pc:#x}")
            return
        if err is not None:
            if self._miss is not None:
                va, acc = self._miss
                self._miss = None
                self.start_walk(va, acc)
                return
            self._crash(f"guest exception at {self.pc:#x}: {err}")
            return
        m.guest_quiescent(self)

    def _single(self, pc: int) -> UcError | None:
        """Run the one instruction at `pc` (with a sparc64 delay slot: two)."""
        uc = self.uc
        self._miss = None
        self._trap = None
        self._uc_data = True  # its loads and stores may leave translations in Unicorn's TLB
        try:
            self.fast.emu_start(pc, self.arch.step_count(uc, pc))
            err = None
        except UcError as exc:
            err = exc
        self.pc = self.fast.pc()
        return err

    def _slice(self, pc: int) -> UcError | None:
        """Run guest code from `pc` as one step: up to `quantum` instructions,
        ending before the first that loads or stores (or at a trap, or at a
        fetch that misses our TLB model).

        Why this loses no interleaving a checker can see. What a slice runs
        is register arithmetic and instruction fetches that hit this CPU's
        TLB model. Neither reads nor writes anything another task can read
        or write: registers are the CPU's own, and a fetch reads a text
        page, which no guest store can reach (text VMAs are mapped without
        write permission, and a slice lets Unicorn fetch, never load or
        store, through what it fills: `_fill`). So each instruction of a
        slice commutes with every step of every other task (guest
        instruction, walker entry read, kernel step, RCU callback) but
        those that take the translation it fetches through away, and
        running the slice as one step only moves other tasks' steps from
        inside it to before or after it. A step that takes a translation
        away is a TLB flush or a free of the frame (the kernel model flushes
        Unicorn's TLBs on both): moved before the slice, the slice's first
        fetch comes back through `_fill`, where the stale-TLB checker sees
        the use exactly as it would have seen it mid-slice; moved after it,
        the fetches used a translation the TLB still held, as a CPU may
        before the shootdown reaches it. Every load and store, every walk,
        every trap is still a step of its own, at its own place in every
        schedule, which is all the checkers observe of a guest.
        """
        uc = self.uc
        if self._uc_data:
            # Unicorn must hold no data translation, or a load or store
            # would hit it without `_fill` seeing it
            self.flush_uc_tlb()
            self._uc_data = False
        self._miss = None
        self._trap = None
        self._slicing = True
        try:
            self.fast.emu_start(pc, self.arch.slice_count(uc, pc, self.quantum))
            err = None
        except UcError as exc:
            err = exc
        finally:
            self._slicing = False
        self.pc = self.fast.pc()
        return err

    # ---- free running (fast-forward) ----------------------------------------------
    def run_free(self, marker: int | None) -> str:
        """Run this vCPU's guest code at Unicorn speed, outside the schedule.

        One `emu_start` with no instruction count (a count makes Unicorn
        instrument every translated block, shared/reference/unicorn_facts.md
        section 8) runs until a hook stops it: the fill hook walks inside
        itself (`sync_walks`), so only a walk that faults, or a trap, comes
        back here. A fault or a hypercall runs its kernel routine to
        completion on this CPU (nothing else runs meanwhile: this is set-up
        time, like `populate`), then the guest goes on. Stops at the
        hypercall numbered `marker` (returning 0 to the guest, which
        continues after it), or when the program exits or crashes. Returns
        "marker", "exit" or "crash".
        """
        uc = self.uc
        arch = self.arch
        self.sync_walks = True
        try:
            while self.mode is Mode.GUEST:
                self._miss = self._trap = None
                try:
                    uc.emu_start(self.pc, 0, 0, 0)
                    err = None
                except UcError as exc:
                    err = exc
                if self._hook_error is not None:
                    exc, self._hook_error = self._hook_error, None
                    raise exc
                self.pc = arch.get_pc(uc)
                if self._trap is not None:
                    intno, self._trap = self._trap, None
                    if intno != arch.callconv.intno:
                        self._crash(f"unexpected interrupt {intno:#x} at {self.pc:#x}")
                        break
                    arch.after_trap(uc)
                    self.pc = arch.get_pc(uc)
                    if marker is not None and arch.hypercall_args(uc)[0] == marker:
                        arch.set_return(uc, 0)
                        return "marker"
                    self.m.hypercall(self)
                elif err is not None and self._miss is not None:
                    va, acc = self._miss
                    self._miss = None
                    self.m.trace_note(self, f"walk fault: {acc.name.lower()} {va:#x}")
                    self.start_kernel(self.m.kernel.handle_mm_fault(va, acc, self.m.mm_of(self)), "fault")
                elif err is not None:
                    self._crash(f"guest exception at {self.pc:#x}: {err}")
                    break
                if self.mode is Mode.KERNEL:
                    self.task.run_to_completion()
                    self._kernel_done()
        finally:
            self.sync_walks = False
        return "exit" if self.mode is Mode.DONE else "crash"

    # ---- walks -------------------------------------------------------------------------
    def start_walk(self, va: int, acc: Access) -> None:
        self.walk = self.arch.walk(self.mmu_root, va, acc, True)
        self.walk_req = (va, acc)
        self.walk_msg = next(self.walk)
        self.mode = Mode.WALK
        st = self.m.kernel.cpus[self.index]
        st.in_walk = True
        st.walk_start_step = self.m.step

    def _walk_step(self) -> None:
        msg = self.walk_msg
        value = self.m.walker_access(self, msg)
        try:
            self.walk_msg = self.walk.send(value)
        except StopIteration as stop:
            self.walk = None
            self._walk_done(stop.value)

    def _walk_done(self, res: Translation | Fault) -> None:
        va, acc = self.walk_req
        self.walk_req = None
        st = self.m.kernel.cpus[self.index]
        st.in_walk = False
        st.walk_start_step = None
        if isinstance(res, Translation):
            self.tlb_insert(res)
            self.mode = Mode.GUEST
            return
        self.m.trace_note(self, f"walk fault: {acc.name.lower()} {va:#x} at {res.level} ({res.reason})")
        self.start_kernel(self.m.kernel.handle_mm_fault(va, acc, self.m.mm_of(self)), "fault")

    # ---- kernel ------------------------------------------------------------------------
    def start_kernel(self, gen: Any, kind: str, name: str = "") -> None:
        self.task = KernelTask(self.m.kernel, self.index, gen, name or kind,
                               lambda op: self.m.trace_kernel(self.index, self.task.name, op))
        self.task_kind = kind
        self.mode = Mode.KERNEL
        if self.task.done:
            self._kernel_done()

    def _kernel_step(self) -> None:
        self.task.step()
        if self.task.done:
            self._kernel_done()

    def _kernel_done(self) -> None:
        result = self.task.result
        kind = self.task_kind
        self.task = None
        self.mode = Mode.GUEST
        self.m.kernel_returned(self, kind, result)

    def _crash(self, why: str) -> None:
        self.mode = Mode.CRASHED
        self.crash = why
        self.m.cpu_stopped(self)

    def finish(self, code: int) -> None:
        self.mode = Mode.DONE
        self.exit_code = code
        self.m.cpu_stopped(self)

    # ---- snapshot ----------------------------------------------------------------------
    def context(self) -> Any:
        return self.arch.save_regs(self.uc)

    def restore(self, ctx: Any) -> None:
        self.arch.restore_regs(self.uc, ctx)

    def close(self) -> None:
        pass

