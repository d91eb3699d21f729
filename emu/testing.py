"""Hand-written interleavings of kernel routines, for tests and porters.

`Interleaving` runs kernel routines on chosen CPUs of a built machine,
stepping them in an explicit order given as a schedule string (the same
`pt1:` format runs use; `a` = cpu0), then finishes whatever is left in
task order. This is trio's Sequencer / the DESIGN's ForcedOrder idea: a
test states the interleaving it means instead of hoping a strategy finds
it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from emu.kernel.steps import KernelGen
from emu.kernel.task import KernelTask
from emu.machine import Machine
from emu.sched.schedule import RCU_TASK, decode
from emu.trace import describe_op


class InterleavingError(AssertionError):
    pass


class Interleaving:
    def __init__(self, m: Machine) -> None:
        self.m = m
        self.tasks: dict[int, KernelTask] = {}
        self.log: list[str] = []

    def start(self, cpu: int, gen: KernelGen, name: str = "") -> KernelTask:
        name = name or f"task{cpu}"
        task = KernelTask(self.m.kernel, cpu, gen, name,
                          lambda op: self.m.trace_kernel(cpu, name, op))
        self.tasks[cpu] = task
        return task

    def step(self, cpu: int) -> Any:
        m = self.m
        m.frames.step = m.kernel.step = m.step
        if cpu == RCU_TASK:
            what = m.kernel.run_one_rcu_callback()
            if what is None:
                raise InterleavingError(f"step {m.step}: no RCU callback is ready")
            self.log.append(f"{m.step} rcu {what}")
        else:
            task = self.tasks.get(cpu)
            if task is None or task.done:
                raise InterleavingError(f"step {m.step}: cpu{cpu} has nothing to run")
            if not task.runnable():
                raise InterleavingError(f"step {m.step}: cpu{cpu} is blocked: {task.blocked_on()}")
            op = task.step()
            self.log.append(f"{m.step} cpu{cpu} {describe_op(op)}")
        m.step += 1

    def run_until(self, cpu: int, pending: Callable[[Any], bool], max_steps: int = 10_000) -> None:
        """Step `cpu` until the step it is about to make satisfies `pending`."""
        task = self.tasks[cpu]
        for _ in range(max_steps):
            if task.done:
                raise InterleavingError(f"cpu{cpu} finished before reaching the wanted step")
            if pending(task.pending):
                return
            self.step(cpu)
        raise InterleavingError(f"cpu{cpu} never reached the wanted step")

    def run_while_runnable(self, cpu: int, max_steps: int = 100_000) -> None:
        """Step `cpu` until it finishes or blocks."""
        task = self.tasks[cpu]
        for _ in range(max_steps):
            if task.done or not task.runnable():
                return
            self.step(cpu)
        raise InterleavingError(f"cpu{cpu} ran {max_steps} steps without blocking")

    def run(self, schedule: str = "pt1:", finish: bool = True,
            quiesce: Callable[[], None] | None = None) -> dict[int, Any]:
        """Step in the given order, then run every task to completion in cpu order."""
        for cpu in decode(schedule):
            self.step(cpu)
        if finish:
            self.finish()
        return {cpu: t.result for cpu, t in self.tasks.items()}

    def finish(self, max_steps: int = 100_000) -> None:
        for _ in range(max_steps):
            live = [c for c, t in sorted(self.tasks.items()) if not t.done]
            if not live:
                return
            ready = [c for c in live if self.tasks[c].runnable()]
            if not ready:
                why = "; ".join(f"cpu{c}: {self.tasks[c].blocked_on()}" for c in live)
                raise InterleavingError(f"deadlock: {why}")
            self.step(ready[0])
        raise InterleavingError("tasks did not finish")

    def pass_grace_period(self) -> None:
        """Every CPU passes a quiescent state, then ready callbacks run."""
        k = self.m.kernel
        for c in k.online_cpus():
            if not k.cpus[c].in_read_side():
                k.rcu.quiescent(c, self.m.step, k.online_cpus())
        while k.rcu.ready_callbacks():
            self.step(RCU_TASK)


# ---- routines tests race against each other -----------------------------------------

READ_PTE_UNDER_RCU = "read pte under rcu"


def rcu_pte_reader(k: Any, pmd_pa: int, addr: int, note: str = "") -> KernelGen:
    """A pte_offset_map() user: map the table, read the pte, unmap. Returns the pte."""
    from emu.kernel import steps as st
    ptep = yield from k.pte_offset_map(pmd_pa, addr)
    if note:
        yield st.Note(note)
    value = yield st.Load(ptep, k.arch.level("pte").entry_size, READ_PTE_UNDER_RCU)
    yield from k.pte_unmap(ptep)
    return value


def about_to_read_pte(op: Any) -> bool:
    """run_until() predicate: the reader holds the table and reads it next."""
    from emu.kernel import steps as st
    return isinstance(op, st.Load) and op.what == READ_PTE_UNDER_RCU


def zap_and_retract(k: Any, cache: Any) -> KernelGen:
    """Zap a file's mappings, then retract its page tables, as collapse_file() does."""
    yield from k.unmap_mapping_range(cache, 0, cache.size_pages)
    yield from k.retract_page_tables(cache, 0)
