"""Mutation testing for ptemu: does the default suite notice a wrong model?

Usage::

    python tools/mutate.py [--package emu/kernel|emu/check|emu/sched|arch ...]
                           [--file PATH ...] [--jobs J] [--budget S] [--limit N]
                           [--seed S] [--max-tests N] [--report FILE]
                           [--timeout-factor F] [--reimport] [--list] [--only ID]

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

A mutant's id is ``file::scope::operator::source[#n]`` (e.g.
``emu/kernel/gup.py::GupMixin.gup_fast::cmp:Eq->NotEq::pte == orig``): scope is
the enclosing function or class, source the mutated node's text, n the count of
earlier mutants in that scope with the same operator and text.  No line number
is in it, so an id survives code moving; the report gives the line.

How a run goes:

1. A coverage map (coverage.py, one context per pytest node id) says which
   default-suite tests execute each line.  It is built in ``--jobs`` parallel
   runs and cached in ``.mutation/covmap.json``; a source change rebuilds it,
   a test-file change re-measures only the changed test files.
2. Each mutant runs the tests covering its line, fastest first (one case of
   each test function before the other parametrized cases), up to
   ``--budget`` seconds of their recorded time (at least one test; 0: all of
   them), stopping at the first failure, which kills it.  A mutant whose
   line runs only at import time runs the tests that run its module.
3. Speed: the runner imports pytest, Unicorn, Capstone and Hypothesis once,
   collects the default suite once in one pytest session, and forks a process
   per mutant from it.  A mutant inside a function body whose lines never run
   outside a test gives the loaded function object the mutated code object
   (so every import of the function, every method and subclass sees it) and
   runs the collected items; any other mutant (module or class level, or code
   that runs at import or collection) forks a process that forgets the tree
   and imports it afresh.  Either way the mutated file is also on disk in a
   private copy of the tree (``.mutation/work<N>``), which the process runs in
   and puts first on ``sys.path`` and ``PYTHONPATH``, so subprocesses and
   spawned ``--jobs`` workers run the mutant too.  ``--reimport`` runs every
   mutant the second way (slower; for checking the first).
4. A mutant whose process uses more CPU time than its limit
   (``--timeout-factor`` times its tests' recorded duration, plus 10 s), or
   runs ten times that long, is *killed by timeout* and counted as killed:
   the suite noticed (an endless loop never passes).  CPU time, so that a
   loaded machine makes no timeouts.
5. A mutant on a line no test executes is *survived (uncovered)*.
6. Results are cached in ``.mutation/cache.json`` keyed by the mutant id and
   the hash of its file; a kill stands, a survivor is rerun only when a
   source file changed or the tests chosen for it (or their files) did.  So a
   second run with a larger ``--budget`` reruns only the survivors.

Mutants judged equivalent (no behaviour can tell them apart) are listed in
``tools/mutation_equivalent.toml`` with a written reason and left out of the
score; an entry that matches no mutant any more is listed as stale.
``--limit N --seed S`` runs a deterministic sample of at most N mutants
per file (the same N and S give the same sample); the report says so.  The
score is killed / (all mutants run - equivalent).  This tool is not part of
the default suite or CI: it takes minutes to hours.
"""

from __future__ import annotations

import argparse
import ast
import copy
import hashlib
import importlib.util
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
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("MUTATE_STATE", ROOT / ".mutation"))
EQUIVALENT = ROOT / "tools" / "mutation_equivalent.toml"
PACKAGES = ("emu/check", "emu/kernel", "emu/sched", "arch")
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
    scope: str = ""    # qualname of the enclosing function or class ("" at module level)
    nth: int = 0       # earlier mutants in `scope` with the same op and `before`
    func: str = ""     # qualname of the outermost function whose body holds it
    func_lines: tuple = ()  # (first, last) line of that function's body

    @property
    def id(self) -> str:
        """Line-independent: survives code moving within or between lines."""
        where = self.scope or "<module>"
        tail = f"#{self.nth}" if self.nth else ""
        return f"{self.file}::{where}::{self.op}::{self.before}{tail}"

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


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
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (
            node.name in ("__repr__", "__str__")
            or node.name.lstrip("_").startswith("describe")):
        return True  # text for a human reading a trace
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


def mutants_of(rel: str, source: str | None = None) -> list[Mutant]:
    """Every mutant of file `rel` (of `source` if given, else the file's text)."""
    if source is None:
        source = (ROOT / rel).read_text()
    tree = ast.parse(source)
    lines = source.splitlines()
    out: list[Mutant] = []

    seen: dict[tuple[str, str, str], int] = {}

    def visit(node: ast.AST, parent: ast.AST, slot: tuple, path: tuple, stmt: int = 0,
              scope: str = "", func: tuple = ("", ())) -> None:
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
            nth = seen.get((scope, op, before), 0)
            seen[(scope, op, before)] = nth + 1
            out.append(Mutant(rel, lineno, node.col_offset, op, path, before, after, stmt,
                              scope, nth, *func))
        inner = scope
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            inner = f"{scope}.{node.name}" if scope else node.name
        for sub_slot, child in _children(node):
            # only a body runs in the function's code object: its decorators
            # and defaults run when the def does
            in_body = (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                       and sub_slot[0] == "body" and not func[0])
            visit(child, node, sub_slot, path + (sub_slot,), stmt, inner,
                  (inner, (node.body[0].lineno, node.end_lineno)) if in_body else func)

    visit(tree, None, (None, None), ())
    return out


def apply(m: Mutant) -> str:
    """The mutated file's text."""
    return ast.unparse(mutated_tree(m)) + "\n"


def mutated_tree(m: Mutant) -> ast.Module:
    """The mutated file's AST; unchanged nodes keep their line numbers."""
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
    return ast.fix_missing_locations(tree)


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
rc = pytest.main(["-q", "-p", "no:cacheprovider", *sys.argv[3:]], plugins=[ContextPlugin()])
cov.stop()
cov.save()
json.dump(durations, open(sys.argv[2], "w"))
sys.exit(rc)
'''


def _test_files() -> dict[str, str]:
    return {str(p.relative_to(ROOT)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((ROOT / "tests").rglob("*.py")) if "__pycache__" not in p.parts}


def _source_files() -> dict[str, str]:
    return {str(p.relative_to(ROOT)): hashlib.sha256(p.read_bytes()).hexdigest()
            for d in ("emu", "arch", "guest") for p in sorted((ROOT / d).rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts}


def _measure(targets: list[str], durations: dict, jobs: int) -> tuple[dict, dict]:
    """Coverage of `targets` (test files or node ids), in `jobs` groups of
    about equal recorded duration run at once."""
    cost = {f: durations.get(f) or sum(d for t, d in durations.items() if t.startswith(f + "::"))
            or 1.0 for f in targets}
    groups: list[list[str]] = [[] for _ in range(max(1, min(jobs, len(targets))))]
    for f in sorted(targets, key=lambda f: -cost[f]):
        min(groups, key=lambda g: sum(cost[x] for x in g)).append(f)
    procs = []
    for i, g in enumerate(groups):
        db, dur = STATE / f"cov{i}.sqlite", STATE / f"durations{i}.json"
        db.unlink(missing_ok=True)
        procs.append((subprocess.Popen([sys.executable, "-c", COV_PLUGIN, str(db), str(dur),
                                        *g], cwd=ROOT), db, dur))
    import coverage
    lines: dict[str, dict[str, list[str]]] = {}
    got: dict[str, float] = {}
    try:
        failed = [p.wait() for p, _, _ in procs]
    finally:
        for p, _, _ in procs:
            if p.poll() is None:
                p.kill()
    if any(failed):
        sys.exit(f"mutate: the default suite fails before mutation (pytest exit {failed})")
    for _, db, dur in procs:
        cdata = coverage.CoverageData(basename=str(db))
        cdata.read()
        for fname in cdata.measured_files():
            rel = str(Path(fname).resolve().relative_to(ROOT))
            for ln, ctxs in cdata.contexts_by_lineno(fname).items():
                lines.setdefault(rel, {}).setdefault(str(ln), []).extend(ctxs)
        got.update(json.loads(dur.read_text()))
        db.unlink()
        dur.unlink()
    return lines, got


def _update(data: dict, sources: dict, tests: dict, jobs: int) -> tuple[dict, dict] | None:
    """The cached map brought up to date by measuring again only what a change
    can have moved: the changed test files, and every test that ran a changed
    source file (a test that ran none runs the same code as before). None
    when only a full rebuild will do."""
    old_src, old_tests = data.get("source_files"), data.get("tests", {})
    conftest = "tests/conftest.py"
    if old_src is None or old_tests.get(conftest) != tests.get(conftest):
        return None
    changed_src = sorted(f for f in set(sources) | set(old_src)
                         if sources.get(f) != old_src.get(f))
    if any(not f.endswith(".py") for f in changed_src):
        return None  # a guest program: which tests run it is not in the map
    changed_tests = sorted(f for f in tests if old_tests.get(f) != tests[f] and f != conftest)
    drop = tuple(f + "::" for f in changed_tests + [f for f in old_tests if f not in tests])
    stale: set[str] = set()
    for rel in changed_src:
        ctxs = {c for cs in data["lines"].get(rel, {}).values() for c in cs}
        if ctxs == {""}:
            return None  # run only at import: no test to measure it again with
        stale |= {c for c in ctxs if c and not c.startswith(drop)}
    print(f"measuring {len(changed_tests)} changed test files and {len(stale)} tests of "
          f"{len(changed_src)} changed source files under coverage...",
          file=sys.stderr, flush=True)
    lines = {rel: {ln: [c for c in cs if c not in stale and not c.startswith(drop)]
                   for ln, cs in by.items()}
             for rel, by in data["lines"].items() if rel not in changed_src}
    durations = {t: d for t, d in data["durations"].items()
                 if t not in stale and not t.startswith(drop)}
    targets = changed_tests + sorted(stale)
    if targets:
        new_lines, new_dur = _measure(targets, data["durations"], jobs)
        for rel, by in new_lines.items():
            for ln, cs in by.items():
                lines.setdefault(rel, {}).setdefault(ln, []).extend(cs)
        durations.update(new_dur)
    return lines, durations


def coverage_map(keep: bool = False, jobs: int = 2) -> tuple[dict, dict]:
    """{file: {line: [node ids]}} and {node id: seconds} for the default suite.

    Built in `jobs` parallel coverage runs, then kept up to date by measuring
    only what a change can have moved (see _update); with `keep`, a map whose
    sources are current is used even if tests changed."""
    STATE.mkdir(exist_ok=True)
    cache = STATE / "covmap.json"
    sources = _source_files()
    tests = _test_files()
    data = json.loads(cache.read_text()) if cache.exists() else {}
    if "source_files" not in data and data.get("sources") == tree_digest(("emu", "arch", "guest")):
        data["source_files"] = sources  # a map from before per-file hashes, still current
    if data.get("source_files") == sources and (keep or data.get("tests") == tests):
        return data["lines"], data["durations"]
    t0 = time.time()
    got = _update(data, sources, tests, jobs) if data else None
    if got is None:
        print("building the coverage map (the whole default suite under coverage)...",
              file=sys.stderr, flush=True)
        files = [f for f in tests if Path(f).name.startswith("test_")]
        got = _measure(files, data.get("durations", {}), jobs)
    lines, durations = got
    lines = {rel: {ln: sorted(set(cs)) for ln, cs in by.items()} for rel, by in lines.items()}
    cache.write_text(json.dumps({"source_files": sources, "tests": tests, "lines": lines,
                                 "durations": durations}))
    print(f"coverage map ready in {time.time() - t0:.0f} s", file=sys.stderr)
    return lines, durations


# --------------------------------------------------------------------------
# Running mutants
# --------------------------------------------------------------------------

FUNCTIONS: dict[tuple[str, str], list] = {}  # (file, qualname) -> loaded function objects


def preload() -> None:
    """Import, once in the runner, what every mutant's tests need and no
    mutant changes: pytest and its plugins, Unicorn, Capstone, Hypothesis.
    Each mutant's process is a fork of this one and starts with them loaded."""
    import capstone  # noqa: F401
    import hypothesis  # noqa: F401
    import pytest  # noqa: F401
    import unicorn  # noqa: F401
    from _pytest import assertion, capture, fixtures, main, python, runner, terminal  # noqa: F401


def index_functions() -> None:
    """FUNCTIONS, from every function object of the loaded tree."""
    import gc
    import types
    FUNCTIONS.clear()
    for obj in gc.get_objects():
        if type(obj) is types.FunctionType and obj.__code__.co_filename.startswith(str(ROOT)):
            key = (obj.__code__.co_filename, obj.__code__.co_qualname)
            FUNCTIONS.setdefault(key, []).append(obj)


class SessionLoop:
    """pytest plugin: instead of running the collected suite, hand its items
    (by node id) to `body`, which forks a process per mutant from here, where
    the whole tree and every test module are loaded and collected once."""

    def __init__(self, body) -> None:  # noqa: ANN001
        self.body = body

    def pytest_runtestloop(self, session) -> bool:  # noqa: ANN001
        capman = session.config.pluginmanager.getplugin("capturemanager")
        capman.suspend_global_capture(in_=True)
        try:
            index_functions()
            self.body({item.nodeid: item for item in session.items})
        finally:
            capman.resume_global_capture()
        return True


def _swap_code(m: Mutant) -> bool:
    """Give the loaded function holding the mutant the mutated code: every
    reference to it (imports, methods, subclasses) then runs the mutant.
    False when that cannot be done exactly (the caller re-imports instead)."""
    import types
    fname = str(ROOT / m.file)
    fns = FUNCTIONS.get((fname, m.func), [])
    if not fns or len({f.__code__ for f in fns}) != 1:
        return False  # not loaded, or two defs with one name

    def find(code: types.CodeType) -> list[types.CodeType]:
        got = [code] if code.co_qualname == m.func else []
        for c in code.co_consts:
            if isinstance(c, types.CodeType):
                got += find(c)
        return got
    new = find(compile(mutated_tree(m), fname, "exec"))
    if len(new) != 1:
        return False
    try:
        for f in fns:
            f.__code__ = new[0]
    except ValueError:  # the mutant changed the function's free variables
        return False
    return True


def _reimport(work: Path) -> None:
    """Forget every loaded module of the tree, so the next imports come from
    `work`, where the mutated file is."""
    for name, mod in list(sys.modules.items()):
        f = getattr(mod, "__file__", None) or ""
        if f.startswith(str(ROOT) + os.sep) and os.sep + ".venv" + os.sep not in f:
            del sys.modules[name]
    sys.path.insert(0, str(work))


class Probe:
    """pytest plugin in a mutant's process: the first failing test, and
    whether a test module failed to import."""

    def __init__(self) -> None:
        self.killer = ""
        self.collect_error = False

    def pytest_runtest_logreport(self, report) -> None:
        if report.failed and not self.killer:
            self.killer = report.nodeid

    def pytest_collectreport(self, report) -> None:
        if report.failed:
            self.collect_error = True
            self.killer = self.killer or f"ERROR collecting {report.nodeid}"


def _prepare(work: Path) -> None:
    """Start of a mutant's process: its own process group (a timeout kills
    what it spawned), no state from the last mutant, output discarded, and
    subprocesses and spawned workers that import the mutant from `work`."""
    os.setsid()
    for d in (".ptemu", ".hypothesis"):
        shutil.rmtree(work / d, ignore_errors=True)
    os.chdir(work)
    os.environ.update(PYTHONPATH=str(work), PYTHONDONTWRITEBYTECODE="1")
    sys.dont_write_bytecode = True
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)


def _child(job: Job, wfd: int) -> None:
    """A mutant's process, forked outside a pytest session: import the tree
    afresh from `work` (where the mutated file is), run the tests, report."""
    code = 3
    try:
        _prepare(job.work)
        _reimport(job.work)
        import pytest
        probe = Probe()
        rc = int(pytest.main(["-x", "-q", "-p", "no:cacheprovider", "--no-header", "-rN",
                              "--rootdir", str(ROOT),
                              *(str(ROOT / t) for t in job.tests)], plugins=[probe]))
        os.write(wfd, json.dumps({"rc": rc, "killer": probe.killer,
                                  "collect_error": probe.collect_error}).encode())
        code = 0
    finally:
        os._exit(code)


def _session_child(job: Job, items: dict, wfd: int) -> None:
    """A mutant's process, forked inside the SessionLoop: swap the mutated
    function's code in, run the already collected tests until one fails."""
    code = 3
    try:
        _prepare(job.work)
        if not _swap_code(job.mutant):
            out = {"rc": -2, "killer": "", "collect_error": False}  # run it re-imported
        elif any(t not in items for t in job.tests):
            out = {"rc": 4, "killer": "a covering test is no longer collected",
                   "collect_error": False}
        else:
            sys.path.insert(0, str(job.work))
            from _pytest.runner import runtestprotocol
            sel = [items[t] for t in job.tests]
            killer = ""
            for i, item in enumerate(sel):
                reports = runtestprotocol(item, nextitem=sel[i + 1] if i + 1 < len(sel)
                                          else None, log=False)
                if any(r.failed for r in reports):
                    killer = item.nodeid
                    break
            out = {"rc": 1 if killer else 0, "killer": killer, "collect_error": False}
        os.write(wfd, json.dumps(out).encode())
        code = 0
    finally:
        os._exit(code)


@dataclass
class Job:
    mutant: Mutant
    key: str
    text: str
    work: Path
    tests: list[str]
    limit: float
    t0: float = 0.0
    pid: int = 0
    rfd: int = -1
    retried: bool = False
    saved: tuple = ()
    status: int = 0  # the process's wait status
    swap: bool = False  # may run by swapping one function's code (see Runner.swappable)


@dataclass
class Runner:
    """Runs mutants `jobs` at a time, each in a fork of this process."""
    lines: dict
    durations: dict
    timeout_factor: float
    max_tests: int | None = None
    warm: bool = True
    budget: float | None = None  # seconds of recorded test time per mutant
    items: dict | None = None  # node id -> collected item, inside the SessionLoop
    live: set = field(default_factory=set)  # running mutant processes (group ids)

    def swappable(self, m: Mutant) -> bool:
        """Can the mutant run by swapping its function's code in a process
        where the tree is already loaded? Only if it is inside a function's
        body and no line of that function runs outside a test (at import or
        collection, where the loaded tree already used the original)."""
        if not (self.warm and m.func):
            return False
        by_line = self.lines.get(m.file, {})
        first, last = m.func_lines
        return not any("" in by_line.get(str(ln), ()) for ln in range(first, last + 1))

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
        def dur(t: str) -> float:
            return self.durations.get(t, 1.0)
        ranked = sorted(tests, key=lambda t: (dur(t), t))
        # one case of each test function first (a budget then spans as many
        # different tests as it can), then the other parametrized cases
        seen: set[str] = set()
        first = []
        for t in ranked:
            func = t.split("[")[0]
            if func not in seen:
                seen.add(func)
                first.append(t)
        chosen = set(first)
        ranked = first + [t for t in ranked if t not in chosen]
        if self.max_tests:
            ranked = ranked[:self.max_tests]
        if not self.budget:
            return ranked
        # within the budget: first the tests named for the module (its test
        # file, or tests naming it: test_arm.py, test_detached_table_...),
        # fastest first, then the other fastest; at least one test
        stem = Path(m.file).stem
        named = [t for t in ranked if stem in t] if stem not in ("__init__", "base") else []
        kept: list[str] = []
        taken: set[str] = set()
        spent = 0.0
        for t in named + ranked:
            if t not in taken and spent + dur(t) <= self.budget:
                kept.append(t)
                taken.add(t)
                spent += dur(t)
        return kept or ranked[:1]

    def _start(self, job: Job) -> None:
        target = job.work / job.mutant.file
        pyc = importlib.util.cache_from_source(str(target))
        if not job.saved:
            st = target.stat()
            job.saved = (target.read_text(), st.st_atime_ns, st.st_mtime_ns)
            if os.path.exists(pyc):
                os.replace(pyc, pyc + ".keep")  # the original's bytecode, back after
            target.write_text(job.text or apply(job.mutant))
        rfd, wfd = os.pipe()
        job.t0 = time.time()
        pid = os.fork()
        if pid == 0:
            os.close(rfd)
            if job.swap:
                _session_child(job, self.items, wfd)
            _child(job, wfd)
        os.close(wfd)
        job.pid, job.rfd = pid, rfd
        self.live.add(pid)

    def _restore(self, job: Job) -> None:
        target = job.work / job.mutant.file
        text, atime, mtime = job.saved
        target.write_text(text)
        os.utime(target, ns=(atime, mtime))  # so the kept bytecode is valid again
        pyc = importlib.util.cache_from_source(str(target))
        if os.path.exists(pyc + ".keep"):
            os.replace(pyc + ".keep", pyc)

    def _finish(self, job: Job, timed_out: bool) -> Result | None:
        """The job's Result, or None when it was restarted."""
        out = b""
        while chunk := os.read(job.rfd, 65536):
            out += chunk
        os.close(job.rfd)
        seconds = time.time() - job.t0
        if timed_out:
            status, killer = "timeout", ""
        else:
            try:
                got = json.loads(out)
            except ValueError:
                sig = os.WTERMSIG(job.status) if os.WIFSIGNALED(job.status) else 0
                # a test process crashing (a segfault in Unicorn or Keystone
                # fed a mutant's value) is a failure the suite shows: killed
                got = {"rc": 1 if sig else -1, "collect_error": False,
                       "killer": f"the tests' process crashed (signal {sig})" if sig
                       else "the mutant's process died"}
            rc, killer = got["rc"], got["killer"]
            if rc == -2:
                self._restore(job)
                return Result(job.mutant, "deferred")
            if got["collect_error"]:
                status = "killed"  # the mutant breaks a test module's import
            elif rc == 4 and not job.retried and not job.swap:
                # a parametrized test's ids changed (the mutant changed a value
                # they are made from): run every case of the covering functions
                job.tests = list(dict.fromkeys(t.split("[")[0] for t in job.tests))
                job.retried = True
                self._start(job)
                return None
            else:
                status = {0: "survived", 1: "killed", 2: "killed"}.get(rc, "error")
                if status == "error":
                    killer = killer or f"pytest exit {rc}"
        self._restore(job)
        return Result(job.mutant, status, len(job.tests), seconds, killer)

    def run_all(self, jobs: list[tuple[Mutant, str, str]], workdirs: list[Path]):
        """Yield (key, Result) as mutants finish; at most len(workdirs) run at once."""
        pending = list(reversed(jobs))
        free = list(workdirs)
        running: dict[int, Job] = {}
        while pending or running:
            while pending and free:
                m, text, key = pending.pop()
                tests = self.tests_for(m)
                if not tests:
                    yield key, Result(m, "uncovered")
                    continue
                budget = sum(self.durations.get(t, 1.0) for t in tests)
                job = Job(m, key, text, free.pop(), tests,
                          self.timeout_factor * budget + 10,
                          swap=self.items is not None and self.swappable(m))
                self._start(job)
                running[job.pid] = job
            if not running:
                continue
            pid, wstatus = os.waitpid(-1, os.WNOHANG)
            now = time.time()
            done: list[tuple[Job, bool]] = []
            if pid and pid in running:
                running[pid].status = wstatus
                done.append((running.pop(pid), False))
            for p, job in list(running.items()):
                # CPU time, not wall time: on a loaded machine a fork may wait
                # long for a core, and that is no endless loop
                if _cpu_seconds(p) > job.limit or now - job.t0 > 10 * job.limit:
                    os.killpg(p, signal.SIGKILL)
                    os.waitpid(p, 0)
                    done.append((running.pop(p), True))
            if not done:
                time.sleep(0.01)
            for job, timed_out in done:
                self.live.discard(job.pid)
                try:
                    os.killpg(job.pid, signal.SIGKILL)  # anything it left behind
                except ProcessLookupError:
                    pass
                r = self._finish(job, timed_out)
                if r is None:
                    running[job.pid] = job
                else:
                    free.append(job.work)
                    yield job.key, r


def _cpu_seconds(pid: int) -> float:
    """CPU time of a running process and of the children it has reaped."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


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
        # bytecode for the unmutated tree, so a mutant's process compiles only its file
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(work)], check=False,
                       stdout=subprocess.DEVNULL)
        dirs.append(work)
    return dirs


def load_equivalent() -> dict[str, str]:
    if not EQUIVALENT.exists():
        return {}
    data = tomllib.loads(EQUIVALENT.read_text())
    return {e["id"]: e["reason"] for e in data.get("equivalent", [])}


@dataclass
class Verdicts:
    """What a survivor's verdict depends on besides its own file: the tests
    chosen for it, the text of their files, and every source file those tests
    run (a test that runs none of the changed files behaves as before), plus
    the guest programs and the tools the tests import."""
    lines: dict
    test_files: dict
    sources: dict
    fixed: str = ""
    tree: str = ""
    runs: dict = field(default_factory=dict)  # test -> files it executes

    def __post_init__(self) -> None:
        for rel, by in self.lines.items():
            for cs in by.values():
                for c in cs:
                    if c:
                        self.runs.setdefault(c, set()).add(rel)
        tools = sorted(p for p in (ROOT / "tools").glob("*.py") if p.name != "mutate.py")
        self.fixed = hashlib.sha256(json.dumps(
            [[v for k, v in sorted(self.sources.items()) if k.startswith("guest/")],
             [hashlib.sha256(p.read_bytes()).hexdigest() for p in tools]]).encode()).hexdigest()

    def legacy(self, hit: dict, tests: list[str]) -> bool:
        """An entry cached before `depends` that still holds: same source tree,
        same tests and test files."""
        files = sorted({t.split("::")[0] for t in tests})
        old = hashlib.sha256(json.dumps([tests, [self.test_files.get(f, "") for f in files]])
                             .encode()).hexdigest()
        if not self.tree:
            self.tree = tree_digest(("emu", "arch", "guest"))
        return hit.get("selection") == old and hit.get("sources") == self.tree

    def digest(self, tests: list[str]) -> str:
        files = sorted({t.split("::")[0] for t in tests})
        ran = sorted(set().union(*(self.runs.get(t, set()) for t in tests)))
        return hashlib.sha256(json.dumps(
            [tests, [self.test_files.get(f, "") for f in files],
             [self.sources.get(f, "") for f in ran], self.fixed]).encode()).hexdigest()


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
    ap.add_argument("--budget", type=float, default=3.0,
                    help="run a mutant's covering tests, fastest first, up to this many "
                         "seconds of their recorded (coverage-run) time, at least one; "
                         "0: all of them (default 3)")
    ap.add_argument("--reimport", action="store_true",
                    help="run every mutant in a process that imports the tree afresh "
                         "(slower; by default a mutant inside a function runs by giving "
                         "the already loaded function the mutated code)")
    ap.add_argument("--list", action="store_true", help="list the mutant ids and exit")
    ap.add_argument("--only", action="append", default=[],
                    help="run only this mutant id (repeatable)")
    args = ap.parse_args(argv)
    if os.environ.get("PYTHONHASHSEED") != "0":
        # every mutant's process is a fork of this one: fix its hash seed here
        os.execve(sys.executable, [sys.executable, *sys.argv],
                  dict(os.environ, PYTHONHASHSEED="0"))
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
        # the checkers and the kernel model first: their survivors matter most
        files = [str(p.relative_to(ROOT)) for pkg in (args.package or PACKAGES)
                 for p in sorted((ROOT / pkg).glob("*.py"))]
    mutants = select(files, args.limit, args.seed)
    if args.only:
        wanted = set(args.only)
        mutants = [m for m in mutants if m.id in wanted]
    if args.list:
        for m in mutants:
            print(f"{m.id}\t{m.before} -> {m.after}")
        return 0

    t0 = time.time()
    lines, durations = coverage_map(args.keep_map, args.jobs)
    verdicts = Verdicts(lines, _test_files(), _source_files())
    cache_file = STATE / "cache.json"
    cache = json.loads(cache_file.read_text()) if cache_file.exists() else {}
    equivalent = load_equivalent()
    runner = Runner(lines, durations, args.timeout_factor, args.max_tests, not args.reimport,
                    args.budget or None)

    stopped: list[int] = []

    def stop(signum, frame):
        stopped.append(signum)
        raise SystemExit(f"mutate: stopped by signal {signum}")
    signal.signal(signal.SIGTERM, stop)
    results: list[Result] = []
    todo: list[tuple[Mutant, str, str]] = []
    file_hash: dict[str, str] = {}
    for m in mutants:
        # the id and the file's text determine the mutated text
        if m.file not in file_hash:
            file_hash[m.file] = hashlib.sha256((ROOT / m.file).read_bytes()).hexdigest()
        text = ""  # made when the mutant runs
        key = hashlib.sha256((m.id + "\0" + file_hash[m.file]).encode()).hexdigest()
        hit = cache.get(key)
        # a kill stands; a survivor stands while the sources and its tests do
        if hit and (hit["status"] in ("killed", "timeout") or (
                hit["status"] in ("survived", "uncovered")
                and (hit.get("depends") == verdicts.digest(runner.tests_for(m))
                     or verdicts.legacy(hit, runner.tests_for(m))))):
            if "depends" not in hit:
                hit["depends"] = verdicts.digest(runner.tests_for(m))
            results.append(Result(m, hit["status"], hit.get("tests", 0), 0.0,
                                  hit.get("killer", ""), cached=True))
        elif m.id in equivalent and not args.only:
            # judged equivalent: left out of the score, so not worth running
            results.append(Result(m, hit["status"] if hit else "survived", 0, 0.0, "",
                                  cached=True))
        else:
            todo.append((m, text, key))
    print(f"{len(mutants)} mutants in {len(files)} files, {len(todo)} to run",
          file=sys.stderr, flush=True)
    workdirs = make_workdirs(min(args.jobs, max(1, len(todo)))) if todo else []
    if todo:
        preload()
    done = 0
    later: list[tuple[Mutant, str, str]] = []

    def consume(results_in) -> None:  # noqa: ANN001
        nonlocal done
        for key, r in results_in:
            if r.status == "deferred":
                later.append((r.mutant, texts[key], key))
                continue
            done += 1
            results.append(r)
            cache[key] = {"status": r.status, "tests": r.tests_run, "killer": r.killer,
                          "depends": verdicts.digest(runner.tests_for(r.mutant))}
            if done % 10 == 0 or done == len(todo):
                cache_file.write_text(json.dumps(cache))
            print(f"[{done}/{len(todo)}] {r.status:9} {r.seconds:5.1f}s {r.mutant.id}",
                  file=sys.stderr, flush=True)

    texts = {key: text for _, text, key in todo}
    try:
        swap = [] if args.reimport else [t for t in todo if runner.swappable(t[0])]
        chosen = {key for _, _, key in swap}
        later = [t for t in todo if t[2] not in chosen]
        if swap:
            # inside one pytest session that collected the suite: each of these
            # runs by swapping its function's code (a mutant that cannot be
            # swapped exactly joins `later`)
            import pytest

            def body(items: dict) -> None:
                runner.items = items
                try:
                    consume(runner.run_all(swap, workdirs))
                finally:
                    runner.items = None
            saved = os.dup(1)
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # pytest's own chatter
            try:
                rc = pytest.main(["-q", "-p", "no:cacheprovider", "--no-header",
                                  "--rootdir", str(ROOT), str(ROOT / "tests")],
                                 plugins=[SessionLoop(body)])
            finally:
                os.dup2(saved, 1)
            if stopped:  # pytest turned the SystemExit into an internal error
                sys.exit(f"mutate: stopped by signal {stopped[0]}")
            if rc not in (0, 5):
                sys.exit(f"mutate: collecting the default suite fails (pytest exit {int(rc)})")
        if later:
            consume(runner.run_all(later, workdirs))
    finally:
        for pid in list(runner.live):  # our own mutant processes, by process group
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        cache_file.write_text(json.dumps(cache))
    for w in workdirs:
        shutil.rmtree(w, ignore_errors=True)
    for r in results:
        r.equivalent = equivalent.get(r.mutant.id, "")
    order = {m.id: i for i, m in enumerate(mutants)}
    results.sort(key=lambda r: order[r.mutant.id])
    sample = (f"a deterministic sample of at most {args.limit} mutants per file "
              f"(--limit {args.limit} --seed {args.seed})" if args.limit else "every mutant")
    if args.budget:
        sample += (f"; each run against the fastest tests covering its line up to "
                   f"{args.budget:g} s of their recorded time (--budget)")
    if args.max_tests:
        sample += (f"; each run against at most {args.max_tests} of the tests covering "
                   "its line (a survivor may be killed by one left out)")
    header = (f"# Mutation report\n\n`python tools/mutate.py {' '.join(argv or sys.argv[1:])}`"
              f"\n\n{len(mutants)} mutants, {sample}; {len(todo)} run now, "
              f"{len(mutants) - len(todo)} from the cache; {time.time() - t0:.0f} s.")
    text = report(results, header)
    every = {m.id for f in files for m in mutants_of(f)}
    stale = sorted(i for i in equivalent if i.split("::")[0] in files and i not in every)
    if stale:
        text += ("\n## Stale equivalence entries (no such mutant: re-judge them)\n\n"
                 + "".join(f"- `{i}`\n" for i in stale))
    if args.report:
        args.report.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
