"""Mutation testing for ptemu: does the default suite notice a wrong model?

Usage::

    python tools/mutate.py [--package emu/kernel|emu/check|emu/sched|arch ...]
                           [--file PATH ...] [--jobs J] [--limit N] [--seed S]
                           [--report FILE] [--timeout-factor F] [--list]

Each mutant is one small, meaningful change to one source file, made on the
AST (so comments and layout never matter):

    cmp      flip a comparison (== / !=, < / <=, > / >=, is / is not, in / not in)
    negate   `if x` / `while x` / `a if x else b`  ->  `not x`
    boolop   `and` <-> `or`
    const    an integer constant n -> n + 1 and n -> n - 1 (offsets, shifts, sizes)
    bool     True <-> False
    del      delete a statement: an expression statement (a call, a `yield` of a
             step, a `yield from` of a lock, recheck, flush, rcu_read_lock...), an
             augmented assignment, a store into an attribute or subscript, a
             `break` or a `continue`
    ret      `return <expr>` -> `return None`

A mutant's id is ``file:line:col:operator`` (e.g.
``emu/kernel/gup.py:61:15:cmp:Eq->NotEq``); ids are deterministic, so results
can be cached and compared between runs.

How a run goes:

1. A coverage map (coverage.py, one context per pytest node id) says which
   default-suite tests execute each line; it is built once and cached in
   ``.mutation/covmap.json`` until a source or test file changes.
2. Each mutant runs only the tests covering its line, fastest first, in a
   private copy of the tree (``.mutation/work<N>``), with ``pytest -x -p
   no:cacheprovider``; the first failing test kills it.  A mutant whose line
   is executed only at import time runs every test that runs its module.
   ``--max-tests N`` caps the tests per mutant (tests naming the module
   first, then the fastest, one case per test function before the other
   parametrized cases); the report says so.
3. A mutant that runs past its time limit (``--timeout-factor`` times the
   covering tests' recorded duration, plus 10 s) is *killed by timeout* and
   counted as killed: the suite noticed (an infinite loop never passes).
4. A mutant on a line no test executes is *survived (uncovered)*.
5. Results are cached in ``.mutation/cache.json`` keyed by the hash of the
   mutated file and the mutant id; a killed mutant is never rerun, a
   survivor is rerun when any test or source file changed.  A rerun only
   does new mutants.

Mutants judged equivalent (no behaviour can tell them apart) are listed in
``tools/mutation_equivalent.toml`` with a written reason and left out of the
score.  ``--limit N --seed S`` runs a deterministic sample of at most N mutants
per file (the same N and S give the same sample); the report says so.  The
score is killed / (all mutants run - equivalent).  This tool is not part of
the default suite or CI: it takes minutes to hours.
"""

from __future__ import annotations

import argparse
import ast
import copy
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".mutation"
EQUIVALENT = ROOT / "tools" / "mutation_equivalent.toml"
PACKAGES = ("emu/kernel", "emu/check", "emu/sched", "arch")
TREE = ("emu", "arch", "guest", "tests", "tools", "pyproject.toml")

CMP_SWAP = {
    ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Lt: ast.LtE, ast.LtE: ast.Lt,
    ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Is: ast.IsNot, ast.IsNot: ast.Is,
    ast.In: ast.NotIn, ast.NotIn: ast.In,
}


@dataclass(frozen=True)
class Mutant:
    file: str          # path relative to ROOT
    line: int
    col: int
    op: str            # e.g. "cmp:Eq->NotEq"
    path: tuple        # (field, index) steps from the module node to the target
    before: str
    after: str
    stmt_line: int = 0  # first line of the enclosing statement (what coverage reports)

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line}:{self.col}:{self.op}"


@dataclass
class Result:
    mutant: Mutant
    status: str        # killed | timeout | survived | uncovered | error
    tests_run: int = 0
    seconds: float = 0.0
    killer: str = ""
    cached: bool = False
    equivalent: str = ""


# --------------------------------------------------------------------------
# Generating mutants
# --------------------------------------------------------------------------

def _short(node: ast.AST) -> str:
    text = ast.unparse(node).replace("\n", "; ")
    return text if len(text) <= 70 else text[:67] + "..."


def _children(node: ast.AST) -> Iterator[tuple[tuple, ast.AST]]:
    for name, value in ast.iter_fields(node):
        if isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, ast.AST):
                    yield (name, i), item
        elif isinstance(value, ast.AST):
            yield (name, None), value


def _follow(tree: ast.AST, path: tuple) -> ast.AST:
    node = tree
    for name, i in path:
        value = getattr(node, name)
        node = value if i is None else value[i]
    return node


def _is_docstring(stmt: ast.stmt, parent: ast.AST, index: int | None) -> bool:
    return (index == 0 and isinstance(parent, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                               ast.AsyncFunctionDef))
            and isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
            and isinstance(stmt.value.value, str))


MESSAGE_CALLS = {"fail", "Violation", "KernelBug", "Note", "note", "ScenarioError",
                 "VariantError", "InterleavingError"}


def _call_name(node: ast.AST) -> str:
    if isinstance(node, ast.Call):
        f = node.func
        return f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
    return ""


def _is_note(stmt: ast.AST) -> bool:
    """`yield s.Note(...)`: trace text, not behaviour."""
    return (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Yield)
            and _call_name(stmt.value.value) in ("Note", "note"))


def _skip_subtree(node: ast.AST) -> bool:
    """Code whose mutation says nothing about the model: messages (raised
    exceptions, violation reports, trace notes), annotations, asserts."""
    if isinstance(node, ast.Raise) or _call_name(node) in MESSAGE_CALLS or _is_note(node):
        return True
    if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
        return True
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in (
            "__repr__", "__str__", "describe"):
        return True
    # annotations, asserts and raised messages are not behaviour under test
    return isinstance(node, (ast.arg, ast.Assert, ast.JoinedStr)) or (
        isinstance(node, ast.AnnAssign) and node.value is None)


def _operators(node: ast.AST, parent: ast.AST, slot: tuple) -> Iterator[tuple[str, object]]:
    """(operator name, transform) pairs for one node; transform mutates in place
    and returns the replacement node (or None to keep the node)."""
    if isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            new = CMP_SWAP.get(type(op))
            if new is None:
                continue
            tag = f"cmp:{type(op).__name__}->{new.__name__}" + (f"#{i}" if i else "")

            def flip(n, i=i, new=new):
                n.ops[i] = new()
                return n
            yield tag, flip
    if isinstance(node, (ast.If, ast.While, ast.IfExp)):
        def negate(n):
            n.test = ast.UnaryOp(op=ast.Not(), operand=n.test)
            return n
        yield "negate", negate
    if isinstance(node, ast.BoolOp):
        other = ast.Or if isinstance(node.op, ast.And) else ast.And

        def swap(n, other=other):
            n.op = other()
            return n
        yield f"boolop:{type(node.op).__name__}->{other.__name__}", swap
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool):
            def flipb(n):
                n.value = not n.value
                return n
            yield f"bool:{node.value}->{not node.value}", flipb
        elif isinstance(node.value, int) and not isinstance(parent, ast.UnaryOp):
            for d in (1, -1):
                def bump(n, d=d):
                    n.value = n.value + d
                    return n
                yield f"const:{d:+d}", bump
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(
            node.operand, ast.Constant) and type(node.operand.value) is int:
        for d in (1, -1):
            def bumpneg(n, d=d):
                return ast.Constant(value=-n.operand.value + d)
            yield f"const:{d:+d}", bumpneg
    if isinstance(node, ast.stmt) and not _is_docstring(node, parent, slot[1]):
        stub = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)  # `...`
        deletable = not stub and not _is_note(node) and isinstance(node, (ast.Expr, ast.AugAssign, ast.Break, ast.Continue)) or (
            isinstance(node, ast.Assign) and all(
                isinstance(t, (ast.Attribute, ast.Subscript)) for t in node.targets))
        if deletable:
            yield "del", lambda n: ast.Pass()
    if isinstance(node, ast.Return) and node.value is not None and not (
            isinstance(node.value, ast.Constant) and node.value.value is None):
        def none(n):
            n.value = None
            return n
        yield "ret:None", none


def mutants_of(rel: str) -> list[Mutant]:
    source = (ROOT / rel).read_text()
    tree = ast.parse(source)
    lines = source.splitlines()
    out: list[Mutant] = []

    def visit(node: ast.AST, parent: ast.AST, slot: tuple, path: tuple, stmt: int = 0) -> None:
        if _skip_subtree(node):
            return
        if isinstance(node, ast.stmt):
            stmt = node.lineno
        lineno = getattr(node, "lineno", None)
        if lineno is not None and "no mutate" in lines[lineno - 1]:
            return
        for op, transform in _operators(node, parent, slot):
            mutated = transform(copy.deepcopy(node))
            if isinstance(node, (ast.If, ast.While, ast.IfExp)) and op == "negate":
                before, after = _short(node.test), _short(mutated.test)
            else:
                before, after = _short(node), _short(mutated)
            if after == before:
                continue
            out.append(Mutant(rel, lineno, node.col_offset, op, path, before, after, stmt))
        for sub_slot, child in _children(node):
            visit(child, node, sub_slot, path + (sub_slot,), stmt)

    visit(tree, None, (None, None), ())
    return out


def apply(m: Mutant) -> str:
    tree = ast.parse((ROOT / m.file).read_text())
    target = _follow(tree, m.path)
    parent = _follow(tree, m.path[:-1])
    name, i = m.path[-1]
    for op, transform in _operators(target, parent, m.path[-1]):
        if op == m.op:
            replacement = transform(target)
            break
    else:
        raise ValueError(f"{m.id}: operator not applicable")
    if i is None:
        setattr(parent, name, replacement)
    else:
        getattr(parent, name)[i] = replacement
    return ast.unparse(ast.fix_missing_locations(tree)) + "\n"


# --------------------------------------------------------------------------
# Coverage map
# --------------------------------------------------------------------------

def _digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(str(p.relative_to(ROOT)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def tree_digest(dirs: tuple[str, ...] = ("emu", "arch", "guest", "tests")) -> str:
    files = [p for d in dirs for p in (ROOT / d).rglob("*")
             if p.is_file() and "__pycache__" not in p.parts]
    return _digest(files)


COV_PLUGIN = '''
import json, sys, time, coverage
cov = coverage.Coverage(data_file=sys.argv[1], source=["emu", "arch"], branch=False)
durations = {}
class ContextPlugin:
    def pytest_runtest_setup(self, item):
        cov.switch_context(item.nodeid)
        self._t = time.perf_counter()
    def pytest_runtest_logfinish(self, nodeid, location):
        durations[nodeid] = durations.get(nodeid, 0.0) + time.perf_counter() - self._t
        cov.switch_context("")
cov.start()
import pytest
rc = pytest.main(["-q", "-p", "no:cacheprovider", "tests"], plugins=[ContextPlugin()])
cov.stop()
cov.save()
json.dump(durations, open(sys.argv[2], "w"))
sys.exit(rc)
'''


def coverage_map(keep: bool = False) -> tuple[dict, dict]:
    """{file: {line: [node ids]}} and {node id: seconds} for the default suite.

    Rebuilt when a source or test file changed; with `keep`, only when a
    source file did (tests added since are then not selected)."""
    STATE.mkdir(exist_ok=True)
    cache = STATE / "covmap.json"
    digest = tree_digest()
    sources = tree_digest(("emu", "arch", "guest"))
    if cache.exists():
        data = json.loads(cache.read_text())
        if data.get("digest") == digest or (keep and data.get("sources") == sources):
            return data["lines"], data["durations"]
    print("building the coverage map (the whole default suite under coverage)...",
          file=sys.stderr, flush=True)
    t0 = time.time()
    dbfile, durfile = STATE / "cov.sqlite", STATE / "durations.json"
    dbfile.unlink(missing_ok=True)
    rc = subprocess.run([sys.executable, "-c", COV_PLUGIN, str(dbfile), str(durfile)],
                        cwd=ROOT).returncode
    if rc != 0:
        sys.exit(f"mutate: the default suite fails before mutation (pytest exit {rc})")
    import coverage
    cdata = coverage.CoverageData(basename=str(dbfile))
    cdata.read()
    lines: dict[str, dict[str, list[str]]] = {}
    for fname in cdata.measured_files():
        rel = str(Path(fname).resolve().relative_to(ROOT))
        by_line = cdata.contexts_by_lineno(fname)
        lines[rel] = {str(ln): sorted(c for c in ctxs) for ln, ctxs in by_line.items()}
    durations = json.loads(durfile.read_text())
    cache.write_text(json.dumps({"digest": digest, "sources": sources, "lines": lines,
                                 "durations": durations}))
    print(f"coverage map built in {time.time() - t0:.0f} s", file=sys.stderr)
    return lines, durations


# --------------------------------------------------------------------------
# Running mutants
# --------------------------------------------------------------------------

@dataclass
class Runner:
    lines: dict
    durations: dict
    timeout_factor: float
    max_tests: int | None = None
    live: set = field(default_factory=set)  # running pytest processes

    def _pytest(self, args: list[str], work: Path, env: dict, limit: float) -> tuple[str, str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
             "--no-header", "-rN", *args],
            cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, start_new_session=True)
        self.live.add(proc)
        try:
            out, _ = proc.communicate(timeout=limit)
            status = {0: "survived", 1: "killed", 2: "killed"}.get(proc.returncode, "error")
            if proc.returncode == 4 and "ERROR collecting" in out:
                status = "killed"  # the mutant breaks a test module's import
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            status = "timeout"
        finally:
            self.live.discard(proc)
        return status, out

    def tests_for(self, m: Mutant) -> list[str]:
        """Covering tests, those of the module's own test file first, then the
        fastest; [] when uncovered. A line run only at import time (a module
        constant, a table) is covered by every test that runs the module."""
        by_line = self.lines.get(m.file, {})
        # a continuation line or a decorator is not a line to coverage: its
        # statement's first line is
        ctxs = set(by_line.get(str(m.line), by_line.get(str(m.stmt_line), [])))
        tests = {c for c in ctxs if c}
        if not tests and "" in ctxs:
            tests = {c for cs in by_line.values() for c in cs if c}
            if not tests:  # a module run only at import (tables, step classes)
                tests = set(self.durations)
        if not tests:
            return []
        stem = Path(m.file).stem
        ranked = sorted(tests, key=lambda t: (stem not in t, self.durations.get(t, 1.0), t))
        # one case of each test function first (the cap then spans as many
        # different tests as it can), then the other parametrized cases
        seen: set[str] = set()
        first = []
        for t in ranked:
            func = t.split("[")[0]
            if func not in seen:
                seen.add(func)
                first.append(t)
        rest = [t for t in ranked if t not in set(first)]
        ranked = first + rest
        return ranked[:self.max_tests] if self.max_tests else ranked

    def run(self, m: Mutant, text: str, work: Path) -> Result:
        tests = self.tests_for(m)
        if not tests:
            return Result(m, "uncovered")
        args = tests
        budget = sum(self.durations.get(t, 1.0) for t in tests)
        limit = self.timeout_factor * budget + 10
        target = work / m.file
        original = target.read_text()
        pyc = target.parent / "__pycache__"
        shutil.rmtree(pyc, ignore_errors=True)
        target.write_text(text)
        env = dict(os.environ, PYTHONPATH=str(work), PYTHONDONTWRITEBYTECODE="1",
                   PYTHONHASHSEED="0")
        t0 = time.time()
        try:
            status, out = self._pytest(args, work, env, limit)
            if status == "error" and "ERROR: not found" in out:
                # a parametrized test's ids changed (the mutant changed a value
                # they are made from, or the test file changed): run every
                # case of the covering test functions instead
                funcs = list(dict.fromkeys(t.split("[")[0] for t in args))
                status, out = self._pytest(funcs, work, env, limit)
        finally:
            target.write_text(original)
            shutil.rmtree(pyc, ignore_errors=True)
        killer = ""
        if status in ("killed", "error"):
            for ln in out.splitlines():
                if ln.startswith(("FAILED", "ERROR")):
                    killer = ln.split(" - ")[0]
                    break
            if status == "error":
                tail = out.strip().splitlines()
                killer = killer or (tail[-1] if tail else "?")
        return Result(m, status, len(args), time.time() - t0, killer)


def make_workdirs(n: int) -> list[Path]:
    dirs = []
    for i in range(n):
        work = STATE / f"work{i}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        for name in TREE:
            src = ROOT / name
            if src.is_dir():
                shutil.copytree(src, work / name,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(src, work / name)
        dirs.append(work)
    return dirs


def load_equivalent() -> dict[str, str]:
    if not EQUIVALENT.exists():
        return {}
    data = tomllib.loads(EQUIVALENT.read_text())
    return {e["id"]: e["reason"] for e in data.get("equivalent", [])}


def _covers(hit: dict, max_tests: int | None) -> bool:
    """A cached survivor stands for this run if it ran at least as many tests."""
    if "max_tests" not in hit:
        return False
    cap = hit["max_tests"]
    return cap is None or (max_tests is not None and cap >= max_tests)


def select(files: list[str], limit: int | None, seed: int) -> list[Mutant]:
    chosen: list[Mutant] = []
    for rel in files:
        ms = mutants_of(rel)
        if limit is not None and len(ms) > limit:
            rng = random.Random(f"{seed}:{rel}")
            ms = sorted(rng.sample(ms, limit), key=lambda m: (m.line, m.col, m.op))
        chosen.extend(ms)
    return chosen


def package_of(rel: str) -> str:
    for p in PACKAGES:
        if rel.startswith(p + "/"):
            return p
    return str(Path(rel).parent)


def report(results: list[Result], header: str) -> str:
    out = [header, ""]
    out.append("| package | mutants | killed | timeout | survived | uncovered | error "
               "| equivalent | score |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    tot = {k: 0 for k in ("n", "killed", "timeout", "survived", "uncovered", "error", "eq")}
    pkgs = sorted({package_of(r.mutant.file) for r in results})
    for pkg in pkgs + ["total"]:
        rs = results if pkg == "total" else [r for r in results
                                             if package_of(r.mutant.file) == pkg]
        c = {k: 0 for k in tot}
        c["n"] = len(rs)
        for r in rs:
            c["eq" if r.equivalent else r.status] += 1
        live = c["n"] - c["eq"]
        dead = c["killed"] + c["timeout"]
        score = f"{100 * dead / live:.1f}% ({dead}/{live})" if live else "-"
        out.append(f"| {pkg} | {c['n']} | {c['killed']} | {c['timeout']} | {c['survived']} "
                   f"| {c['uncovered']} | {c['error']} | {c['eq']} | {score} |")
    out.append("")
    out.append("killed includes mutants that broke collection (import errors); "
               "timeout = killed by timeout (counted as killed).")
    left = [r for r in results if r.status in ("survived", "uncovered", "error")
            and not r.equivalent]
    if left:
        out += ["", "## Surviving mutants", ""]
        for r in sorted(left, key=lambda r: (r.mutant.file, r.mutant.line, r.mutant.col)):
            m = r.mutant
            tag = {"uncovered": " (uncovered)", "error": f" (error: {r.killer})"}.get(
                r.status, "")
            out.append(f"- {m.file}:{m.line} `{m.op}`{tag}: `{m.before}` -> `{m.after}`"
                       f"  [{m.id}]")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="tools/mutate.py",
        description="Mutation testing of ptemu: single meaningful mutations of the "
                    "model, each run against the default-suite tests covering it.")
    ap.add_argument("--package", action="append", choices=PACKAGES,
                    help="package to mutate (repeatable; default: all four)")
    ap.add_argument("--file", action="append", default=[],
                    help="one source file to mutate (repeatable; overrides --package)")
    ap.add_argument("--jobs", type=int, default=2, help="parallel mutants (default 2)")
    ap.add_argument("--limit", type=int, default=None,
                    help="at most N mutants per file, a deterministic sample")
    ap.add_argument("--seed", type=int, default=1, help="sampling seed (default 1)")
    ap.add_argument("--report", type=Path, default=None, help="write the report here")
    ap.add_argument("--timeout-factor", type=float, default=4.0,
                    help="time limit = F x covering tests' duration + 10 s (default 4)")
    ap.add_argument("--max-tests", type=int, default=None,
                    help="run at most N covering tests per mutant (the module's own "
                         "test file first, then the fastest); the report says so")
    ap.add_argument("--keep-map", action="store_true",
                    help="reuse the coverage map if only tests changed since it was built")
    ap.add_argument("--list", action="store_true", help="list the mutant ids and exit")
    ap.add_argument("--only", action="append", default=[],
                    help="run only this mutant id (repeatable)")
    args = ap.parse_args(argv)
    if args.jobs < 1 or (args.limit is not None and args.limit < 1):
        print("mutate: --jobs and --limit must be positive", file=sys.stderr)
        return 2

    if args.file:
        files = []
        for f in args.file:
            p = (Path.cwd() / f).resolve()
            if not p.is_file() or p.suffix != ".py":
                print(f"mutate: no such python file: {f}", file=sys.stderr)
                return 2
            files.append(str(p.relative_to(ROOT)))
    else:
        files = sorted(str(p.relative_to(ROOT)) for pkg in (args.package or PACKAGES)
                       for p in (ROOT / pkg).glob("*.py"))
    mutants = select(files, args.limit, args.seed)
    if args.only:
        wanted = set(args.only)
        mutants = [m for m in mutants if m.id in wanted]
    if args.list:
        for m in mutants:
            print(f"{m.id}\t{m.before} -> {m.after}")
        return 0

    t0 = time.time()
    lines, durations = coverage_map(args.keep_map)
    digest = tree_digest()
    cache_file = STATE / "cache.json"
    cache = json.loads(cache_file.read_text()) if cache_file.exists() else {}
    equivalent = load_equivalent()
    runner = Runner(lines, durations, args.timeout_factor, args.max_tests)

    def stop(signum, frame):
        raise SystemExit(f"mutate: stopped by signal {signum}")
    signal.signal(signal.SIGTERM, stop)
    results: list[Result] = []
    todo: list[tuple[Mutant, str, str]] = []
    for m in mutants:
        text = apply(m)
        key = hashlib.sha256((m.id + "\0" + text).encode()).hexdigest()
        hit = cache.get(key)
        if hit and (hit["status"] in ("killed", "timeout") or (
                hit["status"] not in ("error", "uncovered") and hit.get("tree") == digest
                and _covers(hit, args.max_tests))):
            results.append(Result(m, hit["status"], hit.get("tests", 0), 0.0,
                                  hit.get("killer", ""), cached=True))
        else:
            todo.append((m, text, key))
    print(f"{len(mutants)} mutants in {len(files)} files, {len(todo)} to run",
          file=sys.stderr, flush=True)
    workdirs = make_workdirs(min(args.jobs, max(1, len(todo)))) if todo else []
    free = list(workdirs)

    def one(item):
        m, text, key = item
        work = free.pop()
        try:
            return key, runner.run(m, text, work)
        finally:
            free.append(work)

    done = 0
    pool = ThreadPoolExecutor(max(1, len(workdirs)))
    try:
        for key, r in pool.map(one, todo):
            done += 1
            results.append(r)
            cache[key] = {"status": r.status, "tests": r.tests_run, "killer": r.killer,
                          "tree": digest, "max_tests": args.max_tests}
            if done % 10 == 0 or done == len(todo):
                cache_file.write_text(json.dumps(cache))
            print(f"[{done}/{len(todo)}] {r.status:9} {r.seconds:5.1f}s {r.mutant.id}",
                  file=sys.stderr, flush=True)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in list(runner.live):  # our own pytest runs, by process group
            os.killpg(proc.pid, signal.SIGKILL)
        cache_file.write_text(json.dumps(cache))
    for w in workdirs:
        shutil.rmtree(w, ignore_errors=True)
    for r in results:
        r.equivalent = equivalent.get(r.mutant.id, "")
    order = {m.id: i for i, m in enumerate(mutants)}
    results.sort(key=lambda r: order[r.mutant.id])
    sample = (f"a deterministic sample of at most {args.limit} mutants per file "
              f"(--limit {args.limit} --seed {args.seed})" if args.limit else "every mutant")
    if args.max_tests:
        sample += (f"; each run against at most {args.max_tests} of the tests covering "
                   "its line (a survivor may be killed by one left out)")
    header = (f"# Mutation report\n\n`python tools/mutate.py {' '.join(argv or sys.argv[1:])}`"
              f"\n\n{len(mutants)} mutants, {sample}; {len(todo)} run now, "
              f"{len(mutants) - len(todo)} from the cache; {time.time() - t0:.0f} s.")
    text = report(results, header)
    if args.report:
        args.report.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
