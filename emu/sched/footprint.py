"""What one step touched, for partial-order reduction.

A footprint maps a resource key to an access mode: "r" (read), "w"
(write) or "c" (a commutative update: two "c"s commute, "c" against "r" or
"w" does not). Two steps are *independent* when no key is in both
footprints with a write, or with "r" against "c". Independent steps
commute: either order reaches the same state, and neither enables or
disables the other.

Keys (all stable across runs, so footprints of different executions compare):
- ("e", pa >> 3): one 8-byte word of physical memory (a page-table entry);
  a small access (<= 64 bytes) touches its words, and reads its frame's key;
  a small write also makes a "c" update of the frame's ("fw", pfn) key;
- ("f", pfn): a whole frame: its metadata and its existence. Allocation,
  free and relabelling write it; large accesses (a page zeroed or copied, a
  guest access through a translation) use it directly, and a large read
  reads ("fw", pfn) too, so it orders against small writes;
- ("alloc",): the allocator's free lists (allocation order decides pfns);
- ("lock", name) / ("sem", name): a spinlock or rwsem by name (locks that
  share a name are conservatively one); down_read/up_read are "c";
- ("irq", cpu): whether `cpu` would take an IPI now: written when IRQs go
  off or a walk starts (which holds IPIs back), read by steps that send an
  IPI and wait; turning IRQs back on and ending a walk are releases, which
  touch nothing (as a lock release in Flanagan and Godefroid's DPOR);
- ("rcur", cpu): `cpu`'s RCU read-side nesting;
- ("tlb", cpu): `cpu`'s TLB contents;
- ("rcu",): grace periods and callbacks (a quiescent state is a "c");
- ("kpy",): the kernel model's Python state beyond the above (folio counts,
  VMA lists, page caches), changed between two yields without a step
  message. RCU callbacks and RCU requests write it. In "coarse" mode every
  kernel step, hypercall, kernel entry and return writes it too (all kernel
  steps are then ordered); the default "frames" mode trusts the model's
  contract (emu/kernel/steps.py) that such state is CPU-local,
  lock-protected or commutative (counters).

"none" makes every step depend on every other (no reduction): the
reference the reduced search is checked against.

The recorder is a checker that never fails: it listens to the machine's
events and to the `ExploreMachine`'s physical-access log.
"""

from __future__ import annotations

from typing import Any

from emu.check.base import Checker
from emu.cpu import Mode
from emu.kernel import steps as ks
from emu.sched.schedule import RCU_TASK

Footprint = dict[tuple, str]
ALL: Footprint = {("*",): "w"}  # depends on everything
SMALL = 64  # bytes: accesses up to this size are tracked per 8-byte word


def merge(fp: Footprint, key: tuple, mode: str) -> None:
    old = fp.get(key)
    if old is None or old == mode:
        fp[key] = mode
    else:
        fp[key] = "w"


def conflict(a: Footprint, b: Footprint) -> bool:
    if ("*",) in a or ("*",) in b:
        return True
    if len(b) < len(a):
        a, b = b, a
    for key, ma in a.items():
        mb = b.get(key)
        if mb is not None and (ma == "w" or mb == "w" or ma != mb):
            return True
    return False


POR_MODES = ("frames", "coarse", "none")


class FootprintRecorder(Checker):
    """Collects the footprint of the step in progress; `take()` hands it over."""

    name = "footprint"

    def __init__(self, mode: str = "frames") -> None:
        if mode not in POR_MODES:
            raise ValueError(f"unknown partial-order reduction mode {mode!r}; "
                             f"known: {', '.join(POR_MODES)}")
        self.mode = mode
        self.fp: Footprint = {}
        self.task: int | None = None
        self.before: Any = None

    def attach(self, m: Any) -> None:
        super().attach(m)
        self.log: list = []
        self.final: Footprint | None = None
        self.frame_shift = m.mem.frame_shift

    def on_run_end(self) -> None:
        # Close the last step before end-of-run checkers (the accounting audit)
        # read memory: their reads are not the step's. The recorder is first
        # in the machine's checker list for this.
        self.final = self.take()
        self.m.mem.log = None

    def detach(self) -> None:
        self.m.mem.log = None

    # ---- step bracketing (called by the exhaustive strategy) -------------------
    def begin(self, task: int) -> None:
        """The machine is about to step `task`."""
        m = self.m
        self.fp = {}
        self.final = None
        self.log.clear()
        m.mem.log = self.log
        self.task = task
        m.trapped = False
        rcu = m.kernel.rcu
        self.rcu_before = (rcu.completed, len(rcu.need_qs))
        if task == RCU_TASK:
            self.before = None
            return
        cpu = m.cpus[task]
        self.before = (cpu.mode, cpu.task)
        if cpu.mode is Mode.GUEST:
            # Every access of this instruction must come through the fill
            # hook (and so into the log), not Unicorn's cached translation.
            cpu.flush_uc_tlb()

    def _memory(self, fp: Footprint) -> None:
        fs = self.frame_shift
        for kind, a, n in self.log:
            if kind == "r" or kind == "w":
                if n <= SMALL:
                    for word in range(a >> 3, ((a + n - 1) >> 3) + 1):
                        merge(fp, ("e", word), kind)
                    for pfn in range(a >> fs, ((a + n - 1) >> fs) + 1):
                        merge(fp, ("f", pfn), "r")
                        if kind == "w":
                            merge(fp, ("fw", pfn), "c")
                else:
                    for pfn in range(a >> fs, ((a + n - 1) >> fs) + 1):
                        merge(fp, ("f", pfn), kind)
                        if kind == "r":
                            merge(fp, ("fw", pfn), "r")
            elif kind == "meta":
                merge(fp, ("f", a), "r")
            else:  # alloc / free / relabel
                for pfn in range(a, a + n):
                    merge(fp, ("f", pfn), "w")
                    merge(fp, ("fw", pfn), "w")
                if kind == "alloc":
                    merge(fp, ("alloc",), "w")

    def take(self) -> Footprint:
        """The footprint of the step begun last (call after it ran)."""
        if self.final is not None:
            return self.final
        if self.mode == "none":
            return ALL
        m = self.m
        fp = self.fp
        self._memory(fp)
        task = self.task
        rcu = m.kernel.rcu
        if (rcu.completed, len(rcu.need_qs)) != self.rcu_before:
            # a quiescent state was reported (by the step, or for a CPU that
            # the step left sleeping), or a grace period began or ended
            merge(fp, ("rcu",), "c")
        if task == RCU_TASK:
            for key in (("kpy",), ("rcu",)):
                merge(fp, key, "w")
            return fp
        cpu = m.cpus[task]
        mode_before, task_before = self.before
        after = cpu.mode
        if mode_before is Mode.GUEST:
            merge(fp, ("tlb", task), "r")
            if after is Mode.GUEST and not m.trapped:
                merge(fp, ("rcu",), "c")  # a user instruction is a quiescent state
            elif after is Mode.WALK:
                merge(fp, ("irq", task), "w")  # mid-walk: IPIs wait
        elif mode_before is Mode.WALK:
            merge(fp, ("tlb", task), "w")  # the walk's end ("irq" is released, see IrqEnable)
        elif mode_before is Mode.KERNEL and self.mode == "coarse":
            merge(fp, ("kpy",), "w")
        if self.mode == "coarse":
            entered = after is Mode.KERNEL and task_before is not cpu.task
            left = mode_before is Mode.KERNEL and after is not Mode.KERNEL
            if m.trapped or entered or left:
                merge(fp, ("kpy",), "w")
        if after is Mode.DONE or after is Mode.CRASHED:
            # offline: a quiescent state for good (IPIs stop waiting for it: a release)
            merge(fp, ("rcu",), "c")
        return fp

    # ---- machine events ----------------------------------------------------------
    def on_kernel_step(self, cpu: int, op: Any) -> None:
        fp = self.fp
        t = type(op)
        # Acquisitions of one lock are dependent; a release only enables the
        # next acquisition, which is already ordered after the previous one
        # (the treatment of locks in Flanagan and Godefroid's DPOR).
        if t is ks.SpinLock:
            merge(fp, ("lock", op.lock.name), "w")
        elif t is ks.DownRead:
            merge(fp, ("sem", op.sem.name), "c")
        elif t is ks.DownWrite:
            merge(fp, ("sem", op.sem.name), "w")
        elif t in (ks.SpinUnlock, ks.UpRead, ks.UpWrite, ks.DowngradeWrite):
            # downgrade_write() only lets waiting readers in: a release
            pass
        elif t is ks.IrqDisable:
            # Like a lock: turning IRQs off holds the other CPUs' IPIs back;
            # turning them on only lets an IPI already ordered after it go.
            merge(fp, ("irq", cpu), "w")
        elif t is ks.IrqEnable:
            pass
        elif t is ks.RcuReadLock or t is ks.RcuReadUnlock:
            merge(fp, ("rcur", cpu), "w")
        elif t is ks.TlbFlushRange or t is ks.TlbRemoveTableSyncOne:
            for c in range(self.m.ncpus):
                if c != cpu:
                    merge(fp, ("irq", c), "r")
                if t is ks.TlbFlushRange:
                    merge(fp, ("tlb", c), "w")
        elif t in (ks.Load, ks.Store, ks.Cmpxchg, ks.Xchg):
            pass  # in the physical-access log
        else:
            # CallRcu, SynchronizeRcu and its grace-period wait, RcuBarrier, and
            # any step kind added later: RCU and kernel state, conservatively
            merge(fp, ("rcu",), "w")
            merge(fp, ("kpy",), "w")
