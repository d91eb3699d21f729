"""Kernel-model state and the meaning of each step message.

Owns per-CPU kernel state (IRQ-off, preempt and RCU nesting, held locks),
the locks keyed by what they protect, RCU grace periods and callbacks, and
`ready`/`perform`: whether a yielded step can proceed now and what doing it
means. The Linux routines themselves live in the sibling modules and are
mixed into `emu.kernel.Kernel`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from arch.base import Arch
from emu.kernel import steps as s
from emu.kernel.mm import MM
from emu.kernel.sync import Rcu, RcuCallback, RwSem, Spinlock
from emu.kernel.version import NEWEST, Version
from emu.physmem import FrameAllocator, PhysMem, PhysMemError

if TYPE_CHECKING:
    from emu.kernel.folio import Folio


class KernelBug(Exception):
    """The model caught the kernel doing something Linux would BUG() on."""


class BadPageState(KernelBug):
    """A page went back to the page allocator in a state Linux's free_pages_prepare()
    reports ("BUG: Bad page state"): flags such as PG_active set, references left,
    or (for a page of shared page tables) parts still allocated or pending."""


@dataclass
class CpuKernelState:
    """What one CPU holds while it runs kernel code."""

    cpu: int
    irq_off: int = 0
    irq_off_step: int | None = None  # step at which IRQs went off (outermost)
    rcu_nesting: int = 0
    rcu_start_step: int | None = None  # step of the outermost rcu_read_lock
    held: list[Any] = field(default_factory=list)  # Spinlocks and (RwSem, mode)
    online: bool = True
    in_walk: bool = False  # mid-walk: an instruction in flight, no interrupt taken
    walk_start_step: int | None = None
    # current->mm: the address space of the process this CPU runs (its bit
    # in mm_cpumask); idle CPUs count as the first process's
    mm: MM | None = None

    @property
    def preempt_count(self) -> int:
        return sum(1 for h in self.held if isinstance(h, Spinlock))

    def in_read_side(self) -> bool:
        """RCU read-side in the broad sense: rcu_read_lock, IRQs or preemption off."""
        return self.rcu_nesting > 0 or self.irq_off > 0 or self.preempt_count > 0

    def reader_since(self) -> int | None:
        """Earliest step from which this CPU has been protected against frees."""
        starts = [x for x in (self.rcu_start_step, self.irq_off_step, self.walk_start_step)
                  if x is not None]
        return min(starts) if starts else None

    def takes_ipi(self) -> bool:
        """Would an IPI be handled now (IRQs on, at an instruction boundary)?"""
        return self.irq_off == 0 and not self.in_walk


class KernelHooks:
    """Observer interface for checkers and tracing; every method is optional."""

    def on_kernel_load(self, cpu: int, op: s.Load, value: int) -> None: ...
    def on_kernel_store(self, cpu: int, pa: int, size: int, value: int, what: str) -> None: ...
    def on_table_free(self, cpu: int | None, pa: int, size: int, deferred: bool) -> None: ...
    def on_note(self, cpu: int | None, text: str) -> None: ...
    def on_observed(self, cpu: int, obs: s.Observed) -> None: ...
    def on_outside_ram(self, cpu: int, pa: int, size: int, who: str) -> None: ...


class KernelCore:
    """State and step semantics; Linux routines are added by mixins."""

    def __init__(self, arch: Arch, mem: PhysMem, frames: FrameAllocator, ncpus: int) -> None:
        self.arch = arch
        # the Linux release followed, a comparable (6, n) (emu/kernel/version.py)
        self.version: Version = arch.kernel_version or NEWEST
        self.mem = mem
        self.frames = frames
        self.ncpus = ncpus
        self.cpus = [CpuKernelState(i) for i in range(ncpus)]
        self.rcu = Rcu(ncpus)
        self.ptlocks: dict[int, Spinlock] = {}  # split PTE/PMD locks keyed by table page
        # every process's mm_struct, in the scenario's order (one unless it
        # declares [[process]] tables)
        self.mms: list[MM] = []
        self.hooks: KernelHooks = KernelHooks()
        self.step = 0  # kept current by the machine
        self.cpu = 0  # the CPU whose routine is being advanced right now
        # set by the machine: flush translations in [start, end) on the CPUs
        # running `mm` (None: on every CPU)
        self.tlb_flush: Callable[[int, int, MM | None], None] = lambda start, end, mm: None

    @property
    def mm(self) -> MM:
        """The first process's mm: the only one unless the scenario declares several.

        For tests and tools; kernel routines take the mm they work on from
        the VMA (vma->vm_mm) or the calling CPU (`current_mm`).
        """
        return self.mms[0]

    def current_mm(self) -> MM:
        """current->mm of the CPU whose routine is being advanced."""
        mm = self.cpus[self.cpu].mm
        return mm if mm is not None else self.mms[0]

    def mm_cpus(self, mm: MM | None) -> list[int]:
        """mm_cpumask(mm): the CPUs running `mm` (every CPU for None)."""
        return [c.cpu for c in self.cpus if mm is None or (c.mm or self.mms[0]) is mm]

    # ---- helpers --------------------------------------------------------------
    def setup_vma(self, vma: Any, spec: Any) -> None:
        """Attach backing state to a new VMA (page cache for shmem/file)."""

    def folio_trylock(self, folio: Folio) -> s.KernelGen:
        """folio_trylock() (v6.12): one atomic step; True if this CPU now holds the folio
        lock (reclaim and khugepaged's isolation skip a folio someone else has locked)."""
        cpu = self.cpu
        sem = folio.lock

        def take() -> bool:
            if not sem.can_write(cpu):
                return False
            sem.writer = cpu
            self.cpus[cpu].held.append((sem, "write"))
            return True

        return (yield s.KernelAtomic(take, f"folio_trylock {folio.pa:#x}"))

    def online_cpus(self) -> list[int]:
        return [c.cpu for c in self.cpus if c.online]

    def note(self, text: str) -> s.Note:
        return s.Note(text)

    def read_entry_now(self, pa: int, size: int) -> int:
        """Read outside the schedule: only for setup, dumps and checkers."""
        return self.mem.read_int(pa, size, self.arch.byteorder)

    # ---- readiness --------------------------------------------------------------
    def ready(self, cpu: int, op: Any) -> bool:
        t = type(op)
        if t is s.SpinLock:
            return op.lock.owner is None or op.lock.owner == cpu
        if t is s.DownRead:
            return op.sem.can_read(cpu)
        if t is s.DownWrite:
            return op.sem.can_write(cpu)
        if t is s.SynchronizeRcu:
            return True
        if t is _WaitGp:
            return self.rcu.completed >= op.target
        if t is s.RcuBarrier:
            return not self.rcu.callbacks
        if t in (s.TlbFlushRange, s.TlbRemoveTableSyncOne):
            if t is s.TlbFlushRange and self.arch.tlb_flush_kind != "ipi":
                return True
            # flush_tlb_range() IPIs mm_cpumask(mm); tlb_remove_table_sync_one() every CPU
            targets = self.mm_cpus(op.mm) if t is s.TlbFlushRange else range(self.ncpus)
            return all(self.cpus[c].takes_ipi() for c in targets
                       if c != cpu and self.cpus[c].online)
        return True

    def blocked_on(self, cpu: int, op: Any) -> str:
        """Why `op` cannot proceed: for deadlock reports."""
        if isinstance(op, s.SpinLock):
            return f"spin_lock({op.lock.name}) held by cpu{op.lock.owner}"
        if isinstance(op, (s.DownRead, s.DownWrite)):
            who = f"writer cpu{op.sem.writer}" if op.sem.writer is not None else \
                f"readers {[f'cpu{r}' for r in op.sem.readers]}"
            return f"{type(op).__name__}({op.sem.name}) held by {who}"
        if isinstance(op, (s.TlbFlushRange, s.TlbRemoveTableSyncOne)):
            targets = self.mm_cpus(op.mm) if isinstance(op, s.TlbFlushRange) else range(self.ncpus)
            offs = [f"cpu{c}" for c in targets if not self.cpus[c].takes_ipi() and c != cpu]
            return f"{type(op).__name__} IPI waiting for IRQs on at {', '.join(offs)}"
        if isinstance(op, _WaitGp):
            return f"synchronize_rcu waiting for grace period {op.target}"
        if isinstance(op, s.RcuBarrier):
            return f"rcu_barrier waiting for {len(self.rcu.callbacks)} callbacks"
        return repr(op)

    # ---- performing -------------------------------------------------------------
    def perform(self, cpu: int, op: Any) -> Any:
        st = self.cpus[cpu]
        t = type(op)
        bo = self.arch.byteorder
        if t is s.Load:
            try:
                value = self.mem.read_int(op.pa, op.size, bo)
            except PhysMemError:
                self.hooks.on_outside_ram(cpu, op.pa, op.size, f"a kernel load ({op.what})")
                raise
            self.hooks.on_kernel_load(cpu, op, value)
            return value
        if t is s.Store:
            self.hooks.on_kernel_store(cpu, op.pa, op.size, op.value, op.what)
            self.mem.write_int(op.pa, op.size, op.value, bo)
            return None
        if t is s.Cmpxchg:
            cur = self.mem.read_int(op.pa, op.size, bo)
            self.hooks.on_kernel_load(cpu, s.Load(op.pa, op.size, op.what), cur)
            if cur == op.old:
                self.hooks.on_kernel_store(cpu, op.pa, op.size, op.new, op.what)
                self.mem.write_int(op.pa, op.size, op.new, bo)
            return cur
        if t is s.Xchg:
            cur = self.mem.read_int(op.pa, op.size, bo)
            self.hooks.on_kernel_load(cpu, s.Load(op.pa, op.size, op.what), cur)
            self.hooks.on_kernel_store(cpu, op.pa, op.size, op.new, op.what)
            self.mem.write_int(op.pa, op.size, op.new, bo)
            return cur
        if t is s.KernelAtomic:
            return op.fn()
        if t is s.SecondaryLoad:
            return self.mem.read_int(op.pa, op.size, bo)
        if t is s.SpinLock:
            if op.lock.owner == cpu:
                raise KernelBug(f"cpu{cpu} takes {op.lock.name} it already holds (recursive spinlock)")
            op.lock.owner = cpu
            st.held.append(op.lock)
            return None
        if t is s.SpinUnlock:
            if op.lock.owner != cpu:
                raise KernelBug(f"cpu{cpu} unlocks {op.lock.name} owned by cpu{op.lock.owner}")
            op.lock.owner = None
            st.held.remove(op.lock)
            return None
        if t is s.DownRead:
            op.sem.readers.append(cpu)
            st.held.append((op.sem, "read"))
            return None
        if t is s.UpRead:
            if cpu not in op.sem.readers:
                raise KernelBug(f"cpu{cpu} up_read({op.sem.name}) without down_read")
            op.sem.readers.remove(cpu)
            st.held.remove((op.sem, "read"))
            return None
        if t is s.DownWrite:
            op.sem.writer = cpu
            st.held.append((op.sem, "write"))
            return None
        if t is s.UpWrite:
            if op.sem.writer != cpu:
                raise KernelBug(f"cpu{cpu} up_write({op.sem.name}) without down_write")
            op.sem.writer = None
            st.held.remove((op.sem, "write"))
            return None
        if t is s.DowngradeWrite:
            if op.sem.writer != cpu:
                raise KernelBug(f"cpu{cpu} downgrade_write({op.sem.name}) without down_write")
            op.sem.writer = None
            op.sem.readers.append(cpu)
            st.held[st.held.index((op.sem, "write"))] = (op.sem, "read")
            return None
        if t is s.RcuReadLock:
            if st.rcu_nesting == 0:
                st.rcu_start_step = self.step
            st.rcu_nesting += 1
            return None
        if t is s.RcuReadUnlock:
            if st.rcu_nesting == 0:
                raise KernelBug(f"cpu{cpu} rcu_read_unlock() without rcu_read_lock()")
            st.rcu_nesting -= 1
            if st.rcu_nesting == 0:
                st.rcu_start_step = None
            return None
        if t is s.IrqDisable:
            if st.irq_off == 0:
                st.irq_off_step = self.step
            st.irq_off += 1
            return None
        if t is s.IrqEnable:
            if st.irq_off == 0:
                raise KernelBug(f"cpu{cpu} local_irq_restore() with IRQs already on")
            st.irq_off -= 1
            if st.irq_off == 0:
                st.irq_off_step = None
            return None
        if t is s.CallRcu:
            if op.head is not None:
                for cb in self.rcu.callbacks:
                    if cb.head == op.head:
                        raise KernelBug(
                            f"cpu{cpu} call_rcu() on the rcu_head of {op.head:#x}, already queued "
                            f"at step {cb.queued_step} by cpu{cb.cpu} ({cb.what}): "
                            "the callback list is corrupted")
            target = self.rcu.request_gp(self.step, self.online_cpus())
            self.rcu.queue(RcuCallback(target, op.fn, op.what, self.step, cpu, op.head))
            return None
        if t is s.SynchronizeRcu:
            return _WaitGp(self.rcu.request_gp(self.step, self.online_cpus()))
        if t is _WaitGp or t is s.RcuBarrier:
            return None
        if t is s.TlbFlushRange:
            self.tlb_flush(op.start, op.end, op.mm)
            return None
        if t is s.TlbRemoveTableSyncOne:
            return None
        raise TypeError(f"kernel routine yielded {op!r}, which is not a step")

    # ---- RCU callbacks (run by the machine's RCU task) ------------------------------
    def run_one_rcu_callback(self) -> str | None:
        ready = self.rcu.ready_callbacks()
        if not ready:
            return None
        cb = ready[0]
        self.rcu.callbacks.remove(cb)
        cb.fn()
        return cb.what

    # ---- lock lookup ---------------------------------------------------------------
    def lock_for(self, key: int, name: str) -> Spinlock:
        """The split page-table lock embedded in the table page at `key`."""
        lock = self.ptlocks.get(key)
        if lock is None:
            lock = self.ptlocks[key] = Spinlock(name, page=key)
        return lock

    def rwsem(self, name: str) -> RwSem:
        return RwSem(name)


@dataclass(frozen=True)
class _WaitGp:
    """Second half of synchronize_rcu(): wait for the grace period `target`."""

    target: int
