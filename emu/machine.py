"""The machine: physical memory, vCPUs, the kernel model, and the step loop.

Owns building a machine from a scenario (address space, programs, vCPU
registers), the loop that asks a strategy which task steps next, the
events every checker sees, the trace, and snapshot/restore so exploring
many schedules never rebuilds Unicorn instances.

Tasks: vCPU i is task i; the RCU callback runner is task `RCU_TASK`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import capstone

from arch import UnknownArch, get_arch
from arch.base import Access, Fault, Prot, PteRead, PteSetBits, PteWrite, Translation
from emu import abi, hypercall, services  # noqa: F401 - services bind the handlers
from emu.check.base import Checker, Violation
from emu.cpu import Mode, TlbEntry, VCpu
from emu.kernel import Kernel
from emu.kernel import steps as ks
from emu.kernel.core import BadPageState, KernelBug, KernelHooks
from emu.kernel.fault import VM_FAULT_SIGSEGV
from emu.kernel.mm import MM, VMA
from emu.kernel.task import KernelTask
from emu.kernel.variants import build_kernel_class
from emu.physmem import FrameAllocator, PhysMem, PhysMemError
from emu.scenario import Scenario, ScenarioError, eval_int
from emu.sched.schedule import RCU_TASK, encode, task_name
from emu.sched.strategies import Strategy
from emu.trace import Trace, describe_op
from guest import calls as call_format
from guest.asm import Program, inline_program, load_program, load_program_file

CODE_SLOT = 0x10000  # bytes of text VMA per vCPU
SIGSEGV_STATUS = 128 + 11  # a process killed by SIGSEGV, as a shell reports its status
STACK_SIZE = 0x10000
PROT_OF = {"r": Prot(write=False), "rw": Prot(), "rx": Prot(write=False, exec=True),
           "rwx": Prot(exec=True)}


def _with_shares(spec: Any, vma: VMA) -> Any:
    """The scenario's VMA spec with the VMA object it shares a file with."""
    import dataclasses
    out = dataclasses.replace(spec)
    out.shares = vma
    return out


@dataclass
class RunResult:
    steps: int
    schedule: str
    violation: Violation | None = None
    deadlock: str | None = None
    step_limit: bool = False
    exit_codes: dict[int, int | None] = field(default_factory=dict)
    # vCPUs whose program's exit status is a result (the `hypercall` program's
    # return value), not a verdict on the run: a non-zero status is no failure
    result_exits: frozenset[int] = frozenset()
    crashes: dict[int, str] = field(default_factory=dict)
    trace_digest: str = ""
    memory_digest: str = ""

    def failed_exits(self) -> list[int]:
        """vCPUs whose program exited with a non-zero verdict, in index order."""
        return sorted(c for c, code in self.exit_codes.items()
                      if code not in (0, None) and c not in self.result_exits)

    @property
    def ok(self) -> bool:
        return self.violation is None and self.deadlock is None and not self.crashes \
            and not self.step_limit


class Machine(KernelHooks):
    def __init__(self, scenario: Scenario, arch: str | None = None,
                 checkers: list[Checker] | None = None, trace: bool = True) -> None:
        self.scenario = scenario
        try:
            self.arch = get_arch(arch or scenario.arch, scenario.version, scenario.version_given,
                                 **scenario.options)
        except UnknownArch as exc:
            if not scenario.options:
                raise
            raise ScenarioError(scenario.source, "arch_options", str(exc)) from None
        self.ncpus = scenario.cpus
        self.mem = self._physmem(scenario)
        self.frames = FrameAllocator(self.mem, self.arch.page_size,
                                     pte_placement=scenario.pte_placement)
        # The machine is built (and VMAs populated) by the correct model; the
        # variants are switched on when it is done, so a variant's bug shows
        # in the run it is about, not as a broken initial state.
        self._kernel_class = build_kernel_class(scenario.variants, scenario.override,
                                                scenario.base_dir)
        self.kernel = Kernel(self.arch, self.mem, self.frames, self.ncpus)
        self.kernel.hooks = self
        self.kernel.tlb_flush = self.tlb_flush
        self.step = 0
        self.trace = Trace(trace)
        self.choices: list[int] = []
        self.checkers: list[Checker] = []
        self.programs: dict[int, Program] = {}
        # vCPUs waiting to be forked, by index: the name of the child process each starts
        self.parked: dict[int, str] = {}
        self.cpus: list[VCpu] = []
        self._cs = capstone.Cs(self.arch.cs_arch, self.arch.cs_mode)
        self._build()
        self.kernel.__class__ = self._kernel_class
        if self._kernel_class.make_policy is not Kernel.make_policy:
            # a variant's policy takes over the tables the correct one built
            policy = self.kernel.make_policy()
            policy.__dict__.update(self.kernel.policy.__dict__)
            self.kernel.policy = policy
        self._checkers_off(scenario)
        for c in checkers or []:
            self.add_checker(c)
        self._snapshot: Any = None

    # ---- processes -------------------------------------------------------------
    @property
    def mm(self) -> MM:
        """The first process's mm (the only one unless the scenario declares several)."""
        return self.kernel.mms[0]

    @property
    def root(self) -> int:
        """The first process's top-level table."""
        return self.kernel.mms[0].root

    def mm_of(self, cpu: VCpu | int) -> MM:
        """current->mm of a vCPU: the process it runs."""
        return self.kernel.cpus[cpu if isinstance(cpu, int) else cpu.index].mm or self.mm

    def mm_named(self, name: str) -> MM:
        """A process's mm by its `[[process]]` name (KeyError if there is none)."""
        return self.process[name]

    # ---- building -----------------------------------------------------------
    def _physmem(self, sc: Scenario) -> PhysMem:
        """RAM as the scenario lays it out: the bank at 0 and any `[machine] highmem`."""
        for i, (base, size) in enumerate(sc.highmem):
            try:
                limit = self.arch.ram_limit()
            except ValueError as exc:
                raise ScenarioError(sc.source, "machine.highmem", str(exc)) from None
            if base + size > limit:
                raise ScenarioError(sc.source, f"machine.highmem[{i}]",
                                    f"[{base:#x}, {base + size:#x}) reaches beyond the "
                                    f"{limit.bit_length() - 1}-bit physical address space "
                                    f"(ends at {limit:#x}; x86-pae: arch option maxphyaddr)")
            if base % self.arch.page_size:
                raise ScenarioError(sc.source, f"machine.highmem[{i}].base",
                                    f"{base:#x} is not aligned to the {self.arch.page_size:#x} frame")
        try:
            return PhysMem(sc.memory_mib << 20, sc.highmem)
        except PhysMemError as exc:
            raise ScenarioError(sc.source, "machine.highmem", str(exc)) from None

    def names(self) -> dict[str, int]:
        return {"page_size": self.arch.page_size, "pmd_size": self.arch.pmd_size,
                "cpus": self.ncpus}

    def _build(self) -> None:
        a = self.arch
        k = self.kernel
        sc = self.scenario

        # one mm per process, its root allocated (pgd_alloc) in the scenario's order
        several = len(sc.processes) > 1
        for name in sc.processes:
            k.mms.append(k.mm_alloc(name, name if several else ""))
        self.process = {mm.name: mm for mm in k.mms}
        for st in k.cpus:
            st.mm = k.mms[0]  # idle CPUs count as the first process's
        names = self.names()
        named: dict[str, VMA] = {}
        for i, v in enumerate(sc.vmas):
            mm = self.process[v.process or sc.processes[0]]
            start = eval_int(v.start, names, sc.source, f"vma[{i}].start")
            size = eval_int(v.size, names, sc.source, f"vma[{i}].size")
            self._check_vma(start, size, f"vma[{i}]", mm)
            if v.thp and not a.supports_huge_pmd():
                raise ScenarioError(sc.source, f"vma[{i}].thp",
                                    f"{a.name} has no PMD-sized pages (no THP)")
            mm.insert_vma(VMA(start, start + size, v.kind, PROT_OF[v.prot], v.name or f"vma{i}",
                              private=v.private))
            vma = mm.find_vma(start)
            named[vma.name] = vma
            if v.share:
                v = _with_shares(v, named[v.share])
            k.setup_vma(vma, v)
        for i in range(self.ncpus):
            self.cpus.append(VCpu(self, i))
        for i, spec in enumerate(sc.programs):
            base = a.code_base + i * CODE_SLOT
            key = f"cpu[{i}].asm" if spec.asm else f"cpu[{i}].program"
            try:
                if spec.asm:
                    prog = inline_program(a, spec.asm, base, sc.source, spec.asm_line)
                elif spec.path is not None:
                    prog = load_program_file(a, spec.path, base, spec.program)
                else:
                    prog = load_program(a, spec.program, base)
            except ValueError as exc:
                raise ScenarioError(sc.source, key, str(exc)) from None
            image = prog.code
            args_src = spec.args
            # this vCPU's own text and stack, for programs that unmap them
            stack_top = a.stack_top - i * 2 * STACK_SIZE
            own = {**names, "text": base, "stack": stack_top - STACK_SIZE}
            if spec.calls is not None:
                image, args_src = self._lay_out_calls(i, spec.calls, base, image, own)
            if len(image) > CODE_SLOT:
                raise ScenarioError(sc.source, f"cpu[{i}].program", "program larger than 64 KiB")
            self.programs[i] = prog
            mm = self.process[spec.process or sc.processes[0]]
            pages = -(-len(image) // a.page_size) * a.page_size
            self._check_vma(base, pages, f"cpu[{i}] text", mm)
            mm.insert_vma(VMA(base, base + pages, "text", Prot(write=False, exec=True),
                              f"cpu{i} text", image=image))
            stack_top = a.stack_top - i * 2 * STACK_SIZE
            self._check_vma(stack_top - STACK_SIZE, STACK_SIZE, f"cpu[{i}] stack", mm)
            mm.insert_vma(VMA(stack_top - STACK_SIZE, stack_top, "anon", Prot(), f"cpu{i} stack"))
            cpu = self.cpus[i]
            k.cpus[i].mm = mm
            # the process's root register: CR3 / TTBR0 / ASCE / PGD. A vCPU
            # runs one process for its life, so this load is its only switch.
            a.setup_cpu(cpu.uc, i, mm.root)
            cpu.load_root(a.hw_root(mm.root))
            a.set_pc(cpu.uc, base)
            a.set_sp(cpu.uc, stack_top - 64)
            args = [eval_int(x, own, sc.source, f"cpu[{i}].args[{j}]") for j, x in enumerate(args_src)]
            try:
                a.set_args(cpu.uc, args)
            except ValueError as exc:
                raise ScenarioError(sc.source, f"cpu[{i}].args", str(exc)) from None
            cpu.pc = base
            if spec.child:
                # parked until its parent forks it (start_forked)
                self.parked[i] = spec.child
                cpu.mode = Mode.DONE
                k.cpus[i].online = False
        for i in range(len(sc.programs), self.ncpus):
            self.cpus[i].mode = Mode.DONE
            k.cpus[i].online = False
        # populate = fault every page of the VMA in, before any CPU runs
        for i, v in enumerate(sc.vmas):
            if v.populate is not False and v.populate != 0:
                mm = self.process[v.process or sc.processes[0]]
                vma = mm.find_vma(eval_int(v.start, names, sc.source, f"vma[{i}].start"))
                pages = None if v.populate is True else v.populate
                if pages is not None and pages < 0:
                    raise ScenarioError(sc.source, f"vma[{i}].populate", "must be true, false or >= 0")
                self.populate(vma, pages)
        self._fast_forward()
        self.frames.step = 0

    def _fast_forward(self) -> None:
        """Run every program that calls `race_begin` up to that call, free.

        What comes before the marker is the program's set-up: nothing a
        schedule should interleave. It runs here, before the first step and
        the snapshot (so once per machine, not once per schedule), at
        Unicorn speed (`VCpu.run_free`), vCPU after vCPU in index order, as
        `populate` runs: under the correct model (the variants are switched
        on after the build), with no checker attached and the trace off.
        A program without the marker is not touched: its every instruction
        stays a step, so existing schedules and traces keep their meaning.
        """
        nr = abi.by_name()["race_begin"]
        numbers = abi.by_name()
        traced = self.trace.enabled
        self.trace.enabled = False
        try:
            for i, spec in enumerate(self.scenario.programs):
                if spec.child:
                    continue  # a parked child starts when forked, not here
                if spec.calls is not None:
                    marked = any(call_format.op_number(rec[0], numbers) == nr
                                 for rec in spec.calls)
                else:
                    marked = "SYS_race_begin" in self.programs[i].source
                if marked:
                    self.cpus[i].run_free(nr)
        finally:
            self.trace.enabled = traced

    def _lay_out_calls(self, i: int, records: list[list[Any]], base: int, code: bytes,
                       names: dict[str, int]) -> tuple[bytes, list[int]]:
        """The calls program's text image with its records after the code, and its
        two arguments: the records' address and count (guest/calls.py)."""
        a, src = self.arch, self.scenario.source
        numbers = abi.by_name()
        words = []
        for j, rec in enumerate(records):
            op = call_format.op_number(rec[0], numbers)
            words.append([op, *(eval_int(x, names, src, f"cpu[{i}].calls[{j}][{n}]")
                                for n, x in enumerate(rec[1:], 1))])
        offset = -(-len(code) // 8) * 8
        blob = call_format.encode(words, a.word_size, a.byteorder)
        return code + bytes(offset - len(code)) + blob, [base + offset, len(words)]

    def _check_vma(self, start: int, size: int, key: str, mm: MM) -> None:
        a = self.arch
        src = self.scenario.source
        if size <= 0 or start % a.page_size or size % a.page_size:
            raise ScenarioError(src, key, f"start {start:#x} and size {size:#x} must be positive "
                                f"multiples of the {a.name} page size {a.page_size:#x}")
        if start < a.page_size or start + size > (1 << a.va_bits):
            raise ScenarioError(src, key, f"[{start:#x}, {start + size:#x}) outside the "
                                f"{a.va_bits}-bit user address space")
        other = mm.overlaps(start, start + size)
        if other is not None:
            raise ScenarioError(src, key, f"[{start:#x}, {start + size:#x}) overlaps {other}")

    def populate(self, vma: VMA, pages: int | None = None) -> None:
        end = vma.end if pages is None else min(vma.end, vma.start + pages * self.arch.page_size)
        for addr in range(vma.start, end, self.arch.page_size):
            acc = Access.WRITE if vma.prot.write else Access.READ
            self.run_kernel_now(self.kernel.handle_mm_fault(addr, acc, vma.mm),
                                f"populate {addr:#x}")

    def run_kernel_now(self, gen: Any, name: str) -> Any:
        """Run a kernel routine to completion outside the schedule (setup, tools)."""
        task = KernelTask(self.kernel, 0, gen, name)
        result = task.run_to_completion()
        st = self.kernel.cpus[0]
        if st.held or st.rcu_nesting or st.irq_off:
            raise KernelBug(f"{name} left rcu_nesting={st.rcu_nesting} irq_off={st.irq_off} "
                            f"locks={[getattr(h, 'name', h) for h in st.held]}")
        return result

    # ---- tasks and the step loop --------------------------------------------------
    def runnable_tasks(self) -> list[int]:
        out = []
        for cpu in self.cpus:
            if cpu.runnable():
                out.append(cpu.index)
            elif cpu.mode is Mode.KERNEL:
                self._maybe_sleeping_qs(cpu)
        if self.kernel.rcu.ready_callbacks():
            out.append(RCU_TASK)
        return out

    def _maybe_sleeping_qs(self, cpu: VCpu) -> None:
        op = cpu.task.pending
        if isinstance(op, (ks.DownRead, ks.DownWrite, ks.RcuBarrier)) or type(op).__name__ == "_WaitGp":
            st = self.kernel.cpus[cpu.index]
            if not st.in_read_side():
                self.kernel.rcu.quiescent(cpu.index, self.step, self.kernel.online_cpus())

    def run(self, strategy: Strategy, max_steps: int = 2_000_000) -> RunResult:
        strategy.new_execution()
        viol = deadlock = None
        limit = False
        t: int | None = None  # the task taking the current step
        try:
            while True:
                runnable = self.runnable_tasks()
                if not runnable:
                    alive = [c for c in self.cpus if c.alive()]
                    if alive:
                        deadlock = self.deadlock_report()
                    break
                if self.step >= max_steps:
                    limit = True
                    break
                t = strategy.choose(runnable, self.step)
                self.choices.append(t)
                self.frames.step = self.kernel.step = self.step
                if t == RCU_TASK:
                    what = self.kernel.run_one_rcu_callback()
                    self.trace.add(self.step, "rcu", "rcu", what)
                else:
                    self.cpus[t].step()
                self.step += 1
            t = None  # checks at the end of the run belong to no step
            if not limit and deadlock is None:
                # A run cut by the step limit, or stuck, is not quiescent: its
                # end-of-run invariants (accounting, balanced locks) do not hold.
                for c in self.checkers:
                    c.on_run_end()
        except Violation as v:
            viol = v
        except BadPageState as exc:
            viol = Violation("bad-page-state", str(exc), self.step)
        except KernelBug as exc:
            viol = Violation("kernel-bug", str(exc), self.step)
        except PhysMemError as exc:
            name = "double-free" if "double free" in str(exc) else "physmem"
            viol = Violation(name, str(exc), self.step)
        if viol is not None:
            self._trace_failing_step(viol, t)
            self.step += 1
        return RunResult(
            steps=self.step, schedule=encode(self.choices), violation=viol, deadlock=deadlock,
            step_limit=limit,
            exit_codes={c.index: c.exit_code for c in self.cpus if c.index in self.programs},
            result_exits=frozenset(i for i, p in self.programs.items() if p.exit_is_result)
            | {c.index for c in self.cpus if c.signalled},
            crashes={c.index: c.crash for c in self.cpus if c.crash},
            trace_digest=self.trace.digest(), memory_digest=self.memory_digest())

    def _trace_failing_step(self, v: Violation, t: int | None) -> None:
        """Name the task whose step failed, and make sure that step is in the trace.

        A checker may reject a kernel step before it is performed (and so
        before it is traced), the allocator or the model may raise inside
        it, and an RCU callback is traced after it runs: without this the
        report, the lanes and the timeline would all lack the very step
        that broke the invariant.
        """
        if t is None or v.step != self.step:
            return  # a check at the end of the run belongs to no step
        if v.cpu is None and t != RCU_TASK:
            v.cpu = t
        lane = "rcu" if t == RCU_TASK else f"cpu{t}"
        if t == RCU_TASK:
            v.details.setdefault("task", "rcu")
        if any(r[0] == v.step and r[1] == lane and r[2] != "note"
               for r in reversed(self.trace.records[-64:])):
            return
        if t == RCU_TASK:
            self.trace.add(v.step, "rcu", "rcu", f"callback failed: {v.checker}")
            return
        c = self.cpus[t]
        if c.mode is Mode.KERNEL and c.task is not None and c.task.last_op is not None:
            self.trace.add(v.step, lane, "kernel", f"{c.task.name}: {describe_op(c.task.last_op)}")
        elif c.mode is Mode.WALK and c.walk_msg is not None:
            msg = c.walk_msg
            self.trace.add(v.step, lane, "walk", f"{type(msg).__name__} {msg.level} [{msg.pa:#x}]")
        else:
            self.trace.add(v.step, lane, "guest", c.pc)

    def drain_rcu(self, max_callbacks: int = 10_000) -> bool:
        """rcu_barrier() at the end of a run: every vCPU has stopped, so each is
        quiescent; run every queued callback (traced). False if some callback
        could still not run (a grace period that cannot end)."""
        k = self.kernel
        for _ in range(max_callbacks):
            if not k.rcu.callbacks:
                return True
            for c in k.cpus:
                if not c.in_read_side():
                    k.rcu.quiescent(c.cpu, self.step, k.online_cpus())
            if not k.rcu.ready_callbacks():
                return False
            self.frames.step = k.step = self.step
            what = k.run_one_rcu_callback()
            self.trace.add(self.step, "rcu", "rcu", f"{what} (rcu_barrier at the end of the run)")
        return not k.rcu.callbacks

    def deadlock_report(self) -> str:
        parts = []
        for c in self.cpus:
            if c.mode is Mode.KERNEL:
                held = ", ".join(getattr(h, "name", None) or f"{h[0].name}({h[1]})"
                                 for h in self.kernel.cpus[c.index].held) or "nothing"
                parts.append(f"cpu{c.index} in {c.task.name}: blocked on {c.task.blocked_on()}; "
                             f"holds {held}")
        return "deadlock: " + "; ".join(parts)

    def memory_digest(self) -> str:
        return self.mem.digest()

    # ---- snapshot / restore ----------------------------------------------------------
    def snapshot(self) -> None:
        """Remember the pre-run state so `reset()` can return to it cheaply.

        Memory is copied as bytes, registers as Unicorn contexts, and the
        kernel model's and allocator's Python state by one deepcopy (so the
        objects they share stay shared); the Unicorn instances, translated
        code and the arch are kept.
        """
        self._snapshot = (self.mem.snapshot(), [c.context() for c in self.cpus],
                          self._copy_state((self.kernel.__dict__, self.frames.__dict__)),
                          [(c.pc, c.mode, c.exit_code, c.crash, c.hw_root) for c in self.cpus])

    def kept_objects(self) -> tuple[Any, ...]:
        """What a state copy shares with the live machine instead of copying."""
        return (self, self.mem, self.arch, self.kernel, self.frames, self.kernel.hooks,
                self.kernel.tlb_flush)

    def _copy_state(self, state: Any) -> Any:
        import copy
        return copy.deepcopy(state, {id(x): x for x in self.kept_objects()})

    def reset(self) -> None:
        if self._snapshot is None:
            raise RuntimeError("reset() before snapshot()")
        image, ctxs, py, cpus = self._snapshot
        kstate, fstate = self._copy_state(py)
        self.mem.restore(image)
        self.kernel.__dict__.update(kstate)
        self.kernel.tlb_flush = self.tlb_flush
        self.frames.__dict__.update(fstate)
        self.process = {mm.name: mm for mm in self.kernel.mms}
        for c, ctx, (pc, mode, code, crash, hw_root) in zip(self.cpus, ctxs, cpus, strict=True):
            c.restore(ctx)
            # hw_root too: a forked child's vCPU loaded its child's root in the last run
            c.pc, c.mode, c.exit_code, c.crash, c.hw_root = pc, mode, code, crash, hw_root
            c.killed = c.exit_pending = None
            c.signalled = None
            c.task = c.walk = c.walk_req = None
            c.flush_all()
            if c.mmu_root is not None:
                c.load_root(c.hw_root)  # the restored tables' PDPTEs, as at the start
        self.step = 0
        self.choices = []
        self.trace = Trace(self.trace.enabled)
        for ch in self.checkers:
            ch.attach(self)

    def _checkers_off(self, sc: Scenario) -> None:
        from emu.check import default_checkers
        known = [c.name for c in default_checkers()]
        for j, name in enumerate(sc.checkers_off):
            if name not in known:
                raise ScenarioError(sc.source, f"checkers.off[{j}]",
                                    f"no checker {name!r} (known: {', '.join(known)})")

    def add_checker(self, c: Checker) -> None:
        if c.name in self.scenario.checkers_off:
            return  # the scenario's `[checkers] off`
        c.attach(self)
        self.checkers.append(c)

    # ---- vCPU callbacks ------------------------------------------------------------------
    def frame_gens(self, tr: Translation) -> tuple[tuple[int, int], ...]:
        out = []
        for pa in (*tr.tables, tr.pa_base):
            try:
                fi = self.frames.info(pa)
            except PhysMemError:
                continue
            out.append((fi.pfn, fi.generation))
        return tuple(out)

    def on_tlb_use(self, cpu: VCpu, entry: TlbEntry, va: int, acc: Access) -> None:
        for c in self.checkers:
            c.on_tlb_use(cpu.index, entry, va, acc)

    def walker_access(self, cpu: VCpu, msg: PteRead | PteSetBits | PteWrite) -> int:
        bo = self.arch.byteorder
        idx = cpu.index
        try:
            value = self.mem.read_int(msg.pa, msg.size, bo)
        except PhysMemError:
            self.trace.add(self.step, f"cpu{idx}", "walk", f"{msg.level} read {msg.pa:#x} outside RAM")
            self.on_outside_ram(idx, msg.pa, msg.size, f"the page-table walker reading a "
                                f"{msg.level} entry")
            return 0
        if type(msg) is PteWrite:
            # a software refill storing into its translation cache (sparc64 TSB)
            self.trace.add(self.step, f"cpu{idx}", "walk", f"write {msg.level} [{msg.pa:#x}] = {msg.value:#x}")
            for c in self.checkers:
                c.on_walker_write(idx, msg.pa, msg.size, msg.value, msg.level)
            self.mem.write_int(msg.pa, msg.size, msg.value, bo)
            return msg.value
        if type(msg) is PteRead:
            self.trace.add(self.step, f"cpu{idx}", "walk", f"read {msg.level} [{msg.pa:#x}] = {value:#x}")
            for c in self.checkers:
                c.on_walker_read(idx, msg.pa, msg.size, value, msg.level)
            return value
        if value != msg.expect:
            # the entry changed since the walk read it: the compare-and-OR fails
            self.trace.add(self.step, f"cpu{idx}", "walk", f"set A/D {msg.level} [{msg.pa:#x}]: "
                           f"entry changed ({msg.expect:#x} -> {value:#x}), not written")
            return value
        new = value | msg.bits
        self.trace.add(self.step, f"cpu{idx}", "walk", f"set A/D {msg.level} [{msg.pa:#x}] |= {msg.bits:#x}")
        for c in self.checkers:
            c.on_walker_write(idx, msg.pa, msg.size, new, msg.level)
        self.mem.write_int(msg.pa, msg.size, new, bo)
        return new

    def run_walk_now(self, cpu: VCpu, va: int, acc: Access) -> Translation | Fault:
        gen = self.arch.walk(cpu.mmu_root, va, acc, True)
        try:
            msg = next(gen)
            while True:
                msg = gen.send(self.walker_access(cpu, msg))
        except StopIteration as stop:
            return stop.value

    def guest_quiescent(self, cpu: VCpu) -> None:
        """A user-mode instruction is a quiescent state for RCU."""
        rcu = self.kernel.rcu
        if rcu.need_qs and cpu.index in rcu.need_qs:
            rcu.quiescent(cpu.index, self.step, self.kernel.online_cpus())

    def hypercall(self, cpu: VCpu) -> None:
        nr, args = self.arch.hypercall_args(cpu.uc)
        result = hypercall.dispatch(self, cpu, nr, args)
        if isinstance(result, int):
            self.arch.set_return(cpu.uc, result)
            self._after_service(cpu, "hypercall")
        else:
            cpu.start_kernel(result, "hypercall", f"hypercall {nr}")
        if getattr(cpu, "_exit_code", None) is not None:
            code = cpu._exit_code
            cpu._exit_code = None
            self.exit_vcpu(cpu, code)

    def request_exit(self, cpu: VCpu, code: int) -> None:
        cpu._exit_code = code

    # ---- process exit ------------------------------------------------------------------
    def tears_down(self, mm: MM) -> bool:
        """Is `mm` freed when its last vCPU exits? A declared [[process]] is; the
        implicit one of a scenario without them lives on (its tables stay for
        inspection, as they always have) unless a vCPU called exit_group."""
        return self.scenario.processes_declared or mm.exit_code is not None or mm.forked

    # ---- fork ------------------------------------------------------------------------
    def fork_child(self, cpu: VCpu, index: int) -> str | None:
        """The name of the process fork(index) called on `cpu` makes, or None if that
        [[cpu]] is no parked child of the caller's process or was forked already."""
        name = self.parked.get(index)
        spec = self.scenario.programs[index] if name is not None else None
        if spec is None or name in self.process:
            return None
        parent = self.process[spec.process or self.scenario.processes[0]]
        return name if self.mm_of(cpu) is parent else None

    def start_forked(self, index: int, mm: MM) -> None:
        """The forked child's vCPU comes to life in its new mm: its root register loaded,
        its program run from the start."""
        self.process[mm.name] = mm
        cpu = self.cpus[index]
        self.kernel.cpus[index].mm = mm
        self.kernel.cpus[index].online = True
        self.arch.setup_cpu(cpu.uc, index, mm.root)
        cpu.flush_all()
        cpu.load_root(self.arch.hw_root(mm.root))
        cpu.mode = Mode.GUEST
        self.trace.add(self.step, f"cpu{index}", "note", f"forked: runs in process {mm.name}")

    def exit_vcpu(self, cpu: VCpu, code: int) -> None:
        """do_exit() of one vCPU's task: the last user of a torn-down mm runs mmput()
        (exit_mmap and the freeing of its tables) before it is done."""
        mm = self.mm_of(cpu)
        self.kernel.release_pins(cpu.index)  # the task's pins go with it (its fds close)
        others = [c for c in self.cpus if c is not cpu and c.alive() and self.mm_of(c) is mm]
        if mm.dead or others or not self.tears_down(mm):
            cpu.finish(code)
            return
        cpu.exit_pending = code
        cpu.start_kernel(self.kernel.mmput(mm), "exit", f"mmput({mm.name})")

    def exit_group(self, cpu: VCpu, code: int) -> None:
        """exit_group(): every thread of the caller's process exits with `code`; the
        others as SIGKILL reaches them, at their next return to user mode."""
        mm = self.mm_of(cpu)
        mm.exit_code = code
        for c in self.cpus:
            if c is not cpu and c.alive() and self.mm_of(c) is mm:
                c.killed = code
        self.request_exit(cpu, code)

    def may_be_signalled(self, cpu: VCpu) -> bool:
        """Does the scenario let this vCPU's program die of SIGSEGV (`[[cpu]] signal`)?"""
        progs = self.scenario.programs
        return cpu.index < len(progs) and progs[cpu.index].signal == "SIGSEGV"

    def force_sigsegv(self, cpu: VCpu) -> None:
        """force_sig_fault(SIGSEGV) with the default action: the whole process dies
        (do_group_exit), its status 128 + 11 as a shell reports it; the last vCPU
        tears the mm down. A guest outcome, not a crash of ptemu or of the run."""
        mm = self.mm_of(cpu)
        self.trace.add(self.step, f"cpu{cpu.index}", "note",
                       f"SIGSEGV at guest pc {cpu.pc:#x}: process {mm.name} killed")
        self._after_service(cpu, "fault")
        for c in self.cpus:
            if c.alive() and self.mm_of(c) is mm:
                c.signalled = "SIGSEGV"
        self.exit_group(cpu, SIGSEGV_STATUS)
        code, cpu._exit_code = cpu._exit_code, None
        self.exit_vcpu(cpu, code)

    def kill_now(self, cpu: VCpu) -> None:
        """A vCPU killed by exit_group() reaches user mode: it exits instead."""
        code = cpu.killed
        cpu.killed = None
        self.trace.add(self.step, f"cpu{cpu.index}", "note", f"killed by exit_group({code})")
        self.exit_vcpu(cpu, code)

    def kernel_returned(self, cpu: VCpu, kind: str, result: Any) -> None:
        if kind == "fault":
            if result == VM_FAULT_SIGSEGV:
                va = cpu.pc
                if self.may_be_signalled(cpu):
                    self.force_sigsegv(cpu)
                    return
                cpu._crash(f"SIGSEGV: unresolvable fault (guest pc {va:#x})")
                return
        elif kind == "hypercall":
            self.arch.set_return(cpu.uc, result if isinstance(result, int) else 0)
        self._after_service(cpu, kind)
        if kind == "exit":
            code = cpu.exit_pending
            cpu.exit_pending = None
            cpu.finish(code)

    def _after_service(self, cpu: VCpu, kind: str) -> None:
        st = self.kernel.cpus[cpu.index]
        if st.held or st.rcu_nesting or st.irq_off:
            held = [getattr(h, "name", None) or h[0].name for h in st.held]
            raise Violation("imbalance", f"cpu{cpu.index} returns to user from {kind} with "
                            f"rcu_nesting={st.rcu_nesting} irq_off={st.irq_off} locks={held}",
                            self.step, cpu.index)
        for c in self.checkers:
            c.on_service_end(cpu.index, kind)

    def cpu_stopped(self, cpu: VCpu) -> None:
        self.kernel.cpus[cpu.index].online = False
        self.kernel.rcu.offline(cpu.index, self.step, self.kernel.online_cpus())
        what = f"exit({cpu.exit_code})" if cpu.mode is Mode.DONE else f"crashed: {cpu.crash}"
        self.trace.add(self.step, f"cpu{cpu.index}", "note", what)

    def tlb_flush(self, start: int, end: int, mm: MM | None = None) -> None:
        """flush_tlb_range() of `mm` (None: every mm) on the CPUs running it."""
        for each in self.kernel.mms if mm is None else [mm]:
            self.arch.flush_tsb(each.root, start, end, self._tsb_read, self._tsb_write)
        cpus = self.kernel.mm_cpus(mm)
        for c in self.cpus:
            if c.index in cpus:
                c.flush_range(start, end)

    def _tsb_read(self, pa: int, size: int) -> int:
        return self.mem.read_int(pa, size, self.arch.byteorder)

    def _tsb_write(self, pa: int, size: int, value: int) -> None:
        """A store by the flushing CPU into the walker's cache (flush_tsb_user)."""
        cpu = self.kernel.cpu
        self.trace.add(self.step, f"cpu{cpu}", "note", f"flush_tsb [{pa:#x}] = {value:#x}")
        self.on_kernel_store(cpu, pa, size, value, "flush_tsb_user")
        self.mem.write_int(pa, size, value, self.arch.byteorder)

    def flush_uc_tlbs(self) -> None:
        for c in self.cpus:
            c.flush_uc_tlb()

    # ---- kernel hooks (KernelHooks) ---------------------------------------------------------
    def on_kernel_load(self, cpu: int, op: ks.Load, value: int) -> None:
        for c in self.checkers:
            c.on_kernel_load(cpu, op.pa, op.size, value, op.what)

    def on_kernel_store(self, cpu: int, pa: int, size: int, value: int, what: str) -> None:
        for c in self.checkers:
            c.on_kernel_store(cpu, pa, size, value, what)

    def on_table_free(self, cpu: int | None, pa: int, size: int, deferred: bool) -> None:
        if self.trace.enabled and pa >= 0:  # for the report: which routine freed it
            from emu.kernel_stack import kernel_callers
            self.trace.add(self.step, f"cpu{cpu}" if cpu is not None else "rcu", "note",
                           f"table {pa:#x} freed by {' < '.join(kernel_callers()) or '?'}")
        for c in self.checkers:
            c.on_table_free(cpu, pa, size, deferred)
        # Unicorn may cache a translation through this frame: make the next
        # use come back through our TLB model, where checkers see it.
        self.flush_uc_tlbs()

    def on_outside_ram(self, cpu: int, pa: int, size: int, who: str) -> None:
        for c in self.checkers:
            c.on_outside_ram(cpu, pa, size, who)

    def on_observed(self, cpu: int, obs: ks.Observed) -> None:
        self.trace.add(self.step, f"cpu{cpu}", "note", f"{obs.what} [{obs.pa:#x}] = {obs.value:#x}")
        for c in self.checkers:
            c.on_lockless_value(cpu, obs.pa, obs.size, obs.value, obs.what)

    def on_note(self, cpu: int | None, text: str) -> None:
        self.trace.add(self.step, f"cpu{cpu}" if cpu is not None else "-", "note", text)

    # ---- trace helpers ---------------------------------------------------------------------
    def trace_guest(self, cpu: VCpu, pc: int) -> None:
        self.trace.add(self.step, f"cpu{cpu.index}", "guest", pc)

    def trace_kernel(self, cpu: int, routine: str, op: Any) -> None:
        """A kernel step was performed on `cpu` (checkers see it, the trace records it)."""
        for c in self.checkers:
            c.on_kernel_step(cpu, op)
        if self.trace.enabled:
            self.trace.add(self.step, f"cpu{cpu}", "kernel", f"{routine}: {describe_op(op)}")

    def trace_note(self, cpu: VCpu, text: str) -> None:
        self.trace.add(self.step, f"cpu{cpu.index}", "note", text)

    def disasm(self, task: str, pc: int) -> str:
        """Capstone disassembly of the guest instruction at `pc` for trace lines."""
        for prog in self.programs.values():
            off = pc - prog.base
            if 0 <= off < len(prog.code):
                for insn in self._cs.disasm(prog.code[off: off + 16], pc, 1):
                    return f"{pc:#x}: {insn.mnemonic} {insn.op_str}".rstrip()
        return f"{pc:#x}: ?"

    def trace_lines(self, last: int | None = None) -> list[str]:
        recs = self.trace.records if last is None else self.trace.records[-last:]
        return self.trace.lines(self.disasm, recs)

    def task_names(self) -> list[str]:
        return [task_name(i) for i in range(self.ncpus)]
