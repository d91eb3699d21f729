"""Bounded exhaustive search over schedules, with partial-order reduction.

Stateless model checking (as in VeriSoft and CHESS): every execution starts
from the machine's snapshot, replays a prefix of choices, takes one new
choice, and continues. A depth-first stack of choice points records, for
each step, which tasks could run, which were tried, which must still be
tried, and the footprint of each tried step (`emu.sched.footprint`).

Two reductions, both driven by footprints:

- Dynamic partial-order reduction (Flanagan and Godefroid, POPL 2005): a
  choice point only gets alternatives where the execution just run shows a
  race: two dependent steps of different tasks not ordered by happens-before
  (vector clocks over the dependency relation). The later step's task is
  then tried first at the earlier step's choice point (or, if it could not
  run there, every task that could).
- Sleep sets (Godefroid 1996): once task t's subtree at a choice point is
  explored, t sleeps in the later siblings' subtrees while the steps taken
  there are independent of t's step; a sleeping task is never chosen. An
  execution whose runnable tasks are all asleep is abandoned (`SleepBlocked`).

Executions run to their end are then one per Mazurkiewicz trace (classes of
interleavings equal up to reordering adjacent independent steps): `complete`
counts the distinct interleavings explored. With reduction "none" every
step depends on every other and every runnable task is tried everywhere:
the full, unreduced tree.

The first execution keeps running the same task for as long as it can (no
preemption); deeper choice points are revisited first.

`preemptions` bounds the search (iterative context bounding, Musuvathi and
Qadeer, PLDI 2007): a switch away from a task that could still run counts
as a preemption; switches forced by a task blocking or finishing are free.
Most concurrency bugs need very few. Reductions are switched off under a
bound (a sleeping or unraced alternative may be the only one within the
bound, Coons et al. 2013), so the bounded search tries every choice within
the bound: complete for bugs that need at most that many preemptions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from emu.sched.footprint import Footprint, FootprintRecorder, conflict


class SleepBlocked(Exception):
    """Every runnable task is asleep: this execution would repeat an explored one."""


class Nondeterminism(RuntimeError):
    """Replaying a prefix offered different choices than before."""


@dataclass
class Node:
    runnable: tuple[int, ...]
    sleep: dict[int, Footprint]
    chosen: int
    prev: int | None  # the task that ran the step before (None at the start)
    preempts: int  # preemptions before this choice
    done: list[int] = field(default_factory=list)
    todo: set[int] = field(default_factory=set)  # backtrack set
    fps: dict[int, Footprint] = field(default_factory=dict)


class ExhaustiveSearch:
    """The search state across executions; also the per-execution Strategy."""

    name = "exhaustive"

    def __init__(self, recorder: FootprintRecorder, preemptions: int | None = None,
                 dpor: bool = True) -> None:
        self.rec = recorder
        self.bound = preemptions
        self.reduce = recorder.mode != "none" and preemptions is None
        self.dpor = dpor and self.reduce
        self.stack: list[Node] = []
        self.finished = False
        self.complete = 0  # executions run to their end (one per trace)
        self.blocked = 0  # executions abandoned by sleep sets
        self.max_depth = 0
        self.branch = 0  # first choice point that is new in this execution
        self.new_execution()

    # ---- Strategy interface ------------------------------------------------------
    def new_execution(self) -> None:
        self.pos = 0
        self.open = False  # a step was begun and its footprint not yet taken

    def _close(self) -> None:
        if self.open:
            node = self.stack[self.pos - 1]
            node.fps[node.chosen] = self.rec.take()
            self.open = False

    def choose(self, runnable: list[int], step: int) -> int:
        self._close()
        pos = self.pos
        if pos < len(self.stack):
            node = self.stack[pos]
            if node.runnable != tuple(runnable):
                raise Nondeterminism(f"step {pos}: runnable {runnable}, "
                                     f"previously {list(node.runnable)}")
        else:
            sleep: dict[int, Footprint] = {}
            prev = None
            preempts = 0
            if pos:
                parent = self.stack[pos - 1]
                prev = parent.chosen
                taken = parent.fps[prev]
                if self.reduce:
                    asleep = dict(parent.sleep)
                    for u in parent.done:
                        if u != prev:
                            asleep[u] = parent.fps[u]
                    sleep = {u: fp for u, fp in asleep.items() if not conflict(fp, taken)}
                preempts = parent.preempts + (parent.prev is not None and parent.chosen != parent.prev
                                              and parent.prev in parent.runnable)
            node = Node(tuple(runnable), sleep, -1, prev, preempts)
            cands = self._candidates(node)
            if not cands:
                raise SleepBlocked(f"step {pos}: every runnable task is asleep")
            t = prev if prev in cands else cands[0]
            node.chosen = t
            node.done.append(t)
            node.todo = {t} if self.dpor else set(cands)
            self.stack.append(node)
            self.max_depth = max(self.max_depth, len(self.stack))
        self.pos = pos + 1
        self.rec.begin(node.chosen)
        self.open = True
        return node.chosen

    def _candidates(self, node: Node) -> list[int]:
        cands = [t for t in node.runnable if t not in node.sleep]
        if self.bound is not None and node.preempts >= self.bound and node.prev in node.runnable:
            cands = [t for t in cands if t == node.prev]
        return cands

    # ---- race analysis ------------------------------------------------------------------
    def _add_races(self, start: int) -> None:
        """Backtrack points for races whose later step is at or after `start`."""
        stack = self.stack
        last_w: dict[tuple, int] = {}
        last_rc: dict[tuple, dict[str, dict[int, int]]] = {}
        task_last: dict[int, int] = {}
        clocks: list[dict[int, int]] = []
        for j, node in enumerate(stack):
            p = node.chosen
            fp = node.fps.get(p)
            if fp is None:
                break  # the step that ended the run early never finished
            deps: set[int] = set()
            for key, mode in fp.items():
                w = last_w.get(key)
                if w is not None:
                    deps.add(w)
                rc = last_rc.get(key)
                if rc:
                    for m2, per_task in rc.items():
                        if mode == "w" or m2 != mode:
                            deps.update(per_task.values())
            for key, mode in fp.items():
                if mode == "w":
                    last_w[key] = j
                    last_rc.pop(key, None)
                else:
                    last_rc.setdefault(key, {}).setdefault(mode, {})[p] = j
            mine = task_last.get(p)
            vc = dict(clocks[mine]) if mine is not None else {}
            before = clocks[mine] if mine is not None else {}
            for i in deps:
                for t, x in clocks[i].items():
                    if vc.get(t, -1) < x:
                        vc[t] = x
                q = stack[i].chosen
                if j >= start and q != p and before.get(q, -1) < i:
                    self._backtrack(stack[i], p)
            vc[p] = j
            clocks.append(vc)
            task_last[p] = j

    def _backtrack(self, node: Node, p: int) -> None:
        # Flanagan and Godefroid add p where it can run, else every runnable
        # task. A sleeping p is as good as absent: the sleep set would refuse
        # it, and the trace the race points at (p's step moved before the
        # earlier one, but after steps p has not yet run) would never be run.
        if p in node.runnable and p not in node.sleep:
            node.todo.add(p)
        else:
            node.todo.update(node.runnable)

    # ---- between executions ----------------------------------------------------------
    def end_execution(self, blocked: bool = False) -> bool:
        """Record how the execution ended; move to the next one. False: search done."""
        self._close()
        if blocked:
            self.blocked += 1
        else:
            self.complete += 1
        del self.stack[self.pos:]  # nodes past the end of a shortened run
        if self.dpor:
            self._add_races(self.branch)
        while self.stack:
            node = self.stack[-1]
            allowed = set(self._candidates(node))
            cands = sorted(t for t in node.todo if t in allowed and t not in node.done)
            if cands:
                node.chosen = cands[0]
                node.done.append(cands[0])
                break
            self.stack.pop()
        self.finished = not self.stack
        self.branch = len(self.stack) - 1
        self.new_execution()
        return not self.finished
