"""The scenario format: TOML describing a machine, an address space and programs.

```toml
[machine]
arch = "x86-pae"        # overridable with --arch
cpus = 2
memory_mib = 64         # RAM at physical address 0
# highmem = [{ base = 0x1_0000_0000, mib = 16 }]  # x86-pae: more RAM banks, above 4 GiB
# pte_placement = "highmem"  # where PTE tables go: low | highmem | interleave

[kernel]
version = "6.14"        # the Linux release to follow (default: the newest modelled)
variants = []           # named bug variants, see `ptemu variants`
override = ""           # "file.py:Class" (or a list of them): your own mixin or policy

[[process]]             # optional: processes, each its own mm (default: one, "main")
name = "main"

[[vma]]
process = "main"        # whose address space (default: the first process)
start = 0x10000000      # integers, or expressions over page_size/pmd_size
size = "4 * pmd_size"
kind = "anon"           # anon | shmem | file
prot = "rw"             # r, rw, rx, rwx
populate = false        # fault every page in at setup (or an integer: the first N pages)
private = false         # shmem/file: MAP_PRIVATE (reads map the page cache, writes copy)

[[cpu]]
process = "main"        # the process this vCPU runs (default: the first)
program = "touch"       # guest/programs/<arch>/<program>.S, or "my_prog.S" (a path
args = [0x10000000, 512, "page_size"]   # relative to this file); or inline:
# asm = '''
#     mov eax, SYS_exit
#     int 0x80
# '''

[[cpu]]                 # a forked child: parked until a vCPU of "main" calls
process = "main"        # fork(2) (2: this [[cpu]]'s index), then runs its program
child = "kid"           # in the new process "kid", a copy of main's address space
program = "touch"
args = [0x10000000, 8, "page_size"]

[[cpu]]                 # or a call list, run by guest/programs/<arch>/calls.S:
calls = [["mmap", "16 * pmd_size", "pmd_size", 0],        # a hypercall by name (or number)
         ["touch_write", "16 * pmd_size", 8, "page_size"], # guest stores: addr, count, stride
         ["touch_read", "16 * pmd_size", 8, "page_size"],  # guest loads
         ["madvise", "16 * pmd_size", "pmd_size", 4]]      # up to five arguments each

[checkers]
off = []                # checkers not to run here, by the name their reports start with

[expect]                # for tools/results_table.py
arches = ["x86-pae"]    # the arches this scenario is meant for
caught = ["pte_free_immediate", "no_lockless_sync@x86-pae"]  # variants it must catch
```

A `calls` list replaces `program`/`args`: each record is an op, a hypercall
name from `ptemu list hypercalls` (or any number: an unknown one is the
guest's -ENOSYS) or the pseudo-op `touch_read` / `touch_write`, and up to
five arguments; the machine lays the records out after the calls program
in the vCPU's text and passes their address and count (guest/calls.py).

Every problem is a `ScenarioError` naming the file, the key and the reason.
Integer fields accept small arithmetic over `page_size` and `pmd_size` so
one scenario fits every arch.
"""

from __future__ import annotations

import ast
import operator
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emu.kernel.mm import VMA_KINDS
from emu.kernel.version import NEWEST, Version, parse_version
from emu.physmem import BANK_ALIGN, PTE_PLACEMENTS

SCENARIOS = Path(__file__).resolve().parent.parent / "guest" / "scenarios"


class ScenarioError(ValueError):
    def __init__(self, source: str, key: str, reason: str) -> None:
        super().__init__(f"{source}: {key}: {reason}")
        self.source = source
        self.key = key
        self.reason = reason


@dataclass
class VmaSpec:
    start: Any
    size: Any
    kind: str
    prot: str = "rw"
    populate: bool | int = False  # True: every page; N: the first N pages
    thp: bool = False  # shmem/file: back with one PMD-sized folio; anon: VM_HUGEPAGE
    # False: faults map even a PMD-sized folio with PTEs (as when khugepaged's
    # retract had to skip the VMA), leaving it for collapse_pte_mapped_thp()
    pmd_mapping: bool = True
    name: str = ""
    share: str = ""  # name of an earlier shmem/file VMA whose file this one maps too
    process: str = ""  # the [[process]] whose address space it is in ("": the first)
    private: bool = False  # shmem/file: MAP_PRIVATE (reads share the page cache, writes copy)


@dataclass
class CpuSpec:
    program: str  # a built-in name, a .S path as written, or "" for inline asm
    args: list[Any] = field(default_factory=list)
    # [op, arg, ...] records for the calls program: op is an int or a known name
    calls: list[list[Any]] | None = None
    path: Path | None = None  # a user's own .S file, resolved against the scenario's directory
    asm: str = ""  # inline program text
    asm_line: int = 1  # the scenario file's line on which the inline text starts
    process: str = ""  # the [[process]] this vCPU runs ("": the first)
    # set: this vCPU is parked until a vCPU of `process` calls fork(<this cpu's
    # index>); it then runs its program in a new process of this name, a copy
    # of the parent's address space (its text and stack are the parent's until then)
    child: str = ""
    # "SIGSEGV": the program may die of it (a fault no VMA allows), its process
    # killed as Linux kills it; "" (default): such a fault is a crash of the run
    signal: str = ""


def is_program_path(program: str) -> bool:
    """A program given as a file (`prog.S`, `dir/prog.s`) rather than a built-in name."""
    return program.endswith((".S", ".s", ".asm")) or "/" in program


@dataclass
class Scenario:
    source: str
    arch: str
    cpus: int
    memory_mib: int
    vmas: list[VmaSpec]
    programs: list[CpuSpec]
    variants: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)  # "file.py:Class", scenario-relative
    base_dir: Path = field(default_factory=Path.cwd)
    options: dict[str, Any] = field(default_factory=dict)  # arch policy knobs
    explore: dict[str, Any] = field(default_factory=dict)
    expect: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    version: Version = NEWEST
    version_given: bool = False  # said in the file (so an arch option may conflict with it)
    # the [[process]] names in order; one implicit "main" when none is declared
    processes: list[str] = field(default_factory=lambda: ["main"])
    highmem: tuple[tuple[int, int], ...] = ()  # RAM banks beyond the one at 0: (base, bytes)
    pte_placement: str = "low"  # low | highmem | interleave (emu.physmem.FrameAllocator)
    checkers_off: list[str] = field(default_factory=list)  # `[checkers] off`: names not to run
    processes_declared: bool = False  # [[process]] tables given: each is torn down at exit

    @property
    def override(self) -> list[str]:
        """The overrides, under the name of their `[kernel] override` key."""
        return self.overrides


_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.LShift: operator.lshift,
           ast.RShift: operator.rshift, ast.BitOr: operator.or_, ast.BitAnd: operator.and_}


def eval_int(value: Any, names: dict[str, int], source: str, key: str) -> int:
    """An int field: an integer, or arithmetic over `names` in a string."""
    if isinstance(value, bool):
        raise ScenarioError(source, key, "expected an integer, got a boolean")
    if isinstance(value, int):
        return value
    if not isinstance(value, str):
        raise ScenarioError(source, key, f"expected an integer or expression, got {type(value).__name__}")
    try:
        tree = ast.parse(value, mode="eval")
    except SyntaxError:
        raise ScenarioError(source, key, f"cannot parse expression {value!r}") from None

    def ev(node: ast.AST) -> int:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int) \
                and not isinstance(node.value, bool):
            return node.value
        if isinstance(node, ast.Name):
            if node.id not in names:
                raise ScenarioError(source, key, f"unknown name {node.id!r} (known: {', '.join(sorted(names))})")
            return names[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            right = ev(node.right)
            if isinstance(node.op, (ast.FloorDiv, ast.Mod)) and right == 0:
                raise ScenarioError(source, key, "division by zero")
            return _BINOPS[type(node.op)](ev(node.left), right)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        raise ScenarioError(source, key, f"unsupported expression {value!r}")

    return ev(tree)


def _get(tbl: dict[str, Any], key: str, typ: type | tuple[type, ...], source: str, path: str,
         default: Any = ...) -> Any:
    if key not in tbl:
        if default is ...:
            raise ScenarioError(source, f"{path}.{key}" if path else key, "missing")
        return default
    v = tbl[key]
    if typ is int and isinstance(v, bool) or not isinstance(v, typ):
        want = typ.__name__ if isinstance(typ, type) else " or ".join(t.__name__ for t in typ)
        raise ScenarioError(source, f"{path}.{key}" if path else key,
                            f"expected {want}, got {type(v).__name__} {v!r}")
    return v


def _check_keys(tbl: dict[str, Any], allowed: set[str], source: str, path: str) -> None:
    for k in tbl:
        if k not in allowed:
            raise ScenarioError(source, f"{path}.{k}", f"unknown key (allowed: {', '.join(sorted(allowed))})")


def parse(text: str, source: str = "<scenario>", base_dir: Path | None = None) -> Scenario:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(source, "<toml>", str(exc)) from None
    _check_keys(doc, {"machine", "kernel", "process", "vma", "cpu", "explore", "expect",
                      "description", "arch_options", "checkers"}, source, "")
    mach = _get(doc, "machine", dict, source, "")
    _check_keys(mach, {"arch", "cpus", "memory_mib", "highmem", "pte_placement"}, source,
                "machine")
    arch = _get(mach, "arch", str, source, "machine")
    cpus = _get(mach, "cpus", int, source, "machine")
    if not 1 <= cpus <= 16:
        raise ScenarioError(source, "machine.cpus", f"must be 1..16, got {cpus}")
    mem = _get(mach, "memory_mib", int, source, "machine", 64)
    if not 1 <= mem <= 2048:
        raise ScenarioError(source, "machine.memory_mib", f"must be 1..2048, got {mem}")
    highmem = _highmem(mach, mem, source)
    placement = _get(mach, "pte_placement", str, source, "machine", "low")
    if placement not in PTE_PLACEMENTS:
        raise ScenarioError(source, "machine.pte_placement",
                            f"must be one of {', '.join(PTE_PLACEMENTS)}, got {placement!r}")
    if placement != "low" and not highmem:
        raise ScenarioError(source, "machine.pte_placement",
                            f"{placement!r} needs machine.highmem banks to place PTE tables in")
    kern = _get(doc, "kernel", dict, source, "", {})
    _check_keys(kern, {"version", "variants", "override"}, source, "kernel")
    version_text = _get(kern, "version", str, source, "kernel", None)
    version = NEWEST
    if version_text is not None:
        try:
            version = parse_version(version_text)
        except ValueError as exc:
            raise ScenarioError(source, "kernel.version", str(exc)) from None
    variants = _get(kern, "variants", list, source, "kernel", [])
    for i, v in enumerate(variants):
        if not isinstance(v, str):
            raise ScenarioError(source, f"kernel.variants[{i}]", "expected a variant name")
    override = _get(kern, "override", (str, list), source, "kernel", "")
    overrides = [override] if isinstance(override, str) else override
    for i, o in enumerate(overrides):
        if not isinstance(o, str) or (o and ":" not in o):
            raise ScenarioError(source, f"kernel.override[{i}]" if isinstance(override, list)
                                else "kernel.override", f"expected 'file.py:Class', got {o!r}")
    overrides = [o for o in overrides if o]
    processes = _processes(doc, source)
    vmas = []
    for i, v in enumerate(_get(doc, "vma", list, source, "", [])):
        path = f"vma[{i}]"
        if not isinstance(v, dict):
            raise ScenarioError(source, path, "expected a table")
        _check_keys(v, {"start", "size", "kind", "prot", "populate", "thp", "pmd_mapping", "name",
                        "share", "process", "private"}, source, path)
        kind = _get(v, "kind", str, source, path, "anon")
        if kind not in VMA_KINDS or kind == "text":
            raise ScenarioError(source, f"{path}.kind", f"must be anon, shmem or file, got {kind!r}")
        prot = _get(v, "prot", str, source, path, "rw")
        if prot not in ("r", "rw", "rx", "rwx"):
            raise ScenarioError(source, f"{path}.prot", f"must be r, rw, rx or rwx, got {prot!r}")
        vmas.append(VmaSpec(_get(v, "start", (int, str), source, path),
                            _get(v, "size", (int, str), source, path), kind, prot,
                            _get(v, "populate", (bool, int), source, path, False),
                            _get(v, "thp", bool, source, path, False),
                            _get(v, "pmd_mapping", bool, source, path, True),
                            _get(v, "name", str, source, path, ""),
                            _get(v, "share", str, source, path, ""),
                            _process_of(v, processes, source, path),
                            _get(v, "private", bool, source, path, False)))
        if vmas[-1].private and kind not in ("shmem", "file"):
            raise ScenarioError(source, f"{path}.private", "only a shmem or file vma is MAP_PRIVATE "
                                "(anon memory is private already)")
        if vmas[-1].share:
            earlier = {x.name: x for x in vmas[:-1] if x.name}
            target = earlier.get(vmas[-1].share)
            if target is None or target.kind not in ("shmem", "file"):
                raise ScenarioError(source, f"{path}.share",
                                    f"{vmas[-1].share!r} is not an earlier named shmem/file vma")
            if kind != target.kind:
                raise ScenarioError(source, f"{path}.kind", f"must be {target.kind!r} like the vma it shares")
    programs = []
    for i, c in enumerate(_get(doc, "cpu", list, source, "", [])):
        path = f"cpu[{i}]"
        if not isinstance(c, dict):
            raise ScenarioError(source, path, "expected a table")
        _check_keys(c, {"program", "args", "asm", "calls", "process", "child", "signal"},
                    source, path)
        args = _get(c, "args", list, source, path, [])
        for j, a in enumerate(args):
            if isinstance(a, bool) or not isinstance(a, (int, str)):
                raise ScenarioError(source, f"{path}.args[{j}]", "expected an integer or expression")
        if "calls" in c:
            if "asm" in c:
                raise ScenarioError(source, path, "give one of calls and asm, not both")
            programs.append(_call_list(c, source, path))
        else:
            programs.append(_program(c, i, args, text, source, base_dir or Path.cwd()))
        programs[-1].process = _process_of(c, processes, source, path)
        programs[-1].child = _child_of(c, processes, programs[:-1], source, path)
        programs[-1].signal = _get(c, "signal", str, source, path, "")
        if programs[-1].signal not in ("", "SIGSEGV"):
            raise ScenarioError(source, f"{path}.signal",
                                f"must be \"SIGSEGV\", got {programs[-1].signal!r}")
    if len(programs) > cpus:
        raise ScenarioError(source, "cpu", f"{len(programs)} programs for {cpus} cpus")
    if not programs:
        raise ScenarioError(source, "cpu", "no [[cpu]] program given")
    checks = _get(doc, "checkers", dict, source, "", {})
    _check_keys(checks, {"off"}, source, "checkers")
    checkers_off = _get(checks, "off", list, source, "checkers", [])
    for j, item in enumerate(checkers_off):
        if not isinstance(item, str):
            raise ScenarioError(source, f"checkers.off[{j}]", "expected a checker name")
    expect = _get(doc, "expect", dict, source, "", {})
    _check_keys(expect, {"arches", "caught"}, source, "expect")
    for key in ("arches", "caught"):
        items = _get(expect, key, list, source, "expect", [])
        for j, item in enumerate(items):
            if not isinstance(item, str):
                raise ScenarioError(source, f"expect.{key}[{j}]", "expected a string")
    return Scenario(source, arch, cpus, mem, vmas, programs, list(variants), overrides,
                    base_dir or Path.cwd(),
                    options=_get(doc, "arch_options", dict, source, "", {}),
                    explore=_get(doc, "explore", dict, source, "", {}),
                    expect=expect,
                    description=_get(doc, "description", str, source, "", ""),
                    version=version, version_given=version_text is not None,
                    processes=processes, highmem=highmem, pte_placement=placement,
                    checkers_off=list(checkers_off),
                    processes_declared="process" in doc)


def _processes(doc: dict[str, Any], source: str) -> list[str]:
    """The `[[process]]` names, in order (each its own mm); ["main"] if none is declared."""
    tables = _get(doc, "process", list, source, "", [])
    if not tables:
        return ["main"]
    names: list[str] = []
    for i, p in enumerate(tables):
        path = f"process[{i}]"
        if not isinstance(p, dict):
            raise ScenarioError(source, path, "expected a table")
        _check_keys(p, {"name"}, source, path)
        name = _get(p, "name", str, source, path)
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", name):
            raise ScenarioError(source, f"{path}.name", f"{name!r} is not a name "
                                "(letters, digits, _ and -, not starting with a digit)")
        if name in names:
            raise ScenarioError(source, f"{path}.name", f"{name!r} declared twice")
        names.append(name)
    return names


def _child_of(c: dict[str, Any], processes: list[str], earlier: list[CpuSpec], source: str,
              path: str) -> str:
    """A `[[cpu]] child = NAME`: the name of the process fork() makes for it, new."""
    name = _get(c, "child", str, source, path, "")
    if name and (name in processes or any(p.child == name for p in earlier)):
        raise ScenarioError(source, f"{path}.child", f"{name!r} already names a process")
    return name


def _process_of(tbl: dict[str, Any], processes: list[str], source: str, path: str) -> str:
    """The process a [[vma]] or [[cpu]] belongs to: its `process` key, else the first."""
    name = _get(tbl, "process", str, source, path, processes[0])
    if name not in processes:
        raise ScenarioError(source, f"{path}.process",
                            f"no [[process]] named {name!r} (declared: {', '.join(processes)})")
    return name


def _highmem(mach: dict[str, Any], low_mib: int, source: str) -> tuple[tuple[int, int], ...]:
    """`[machine] highmem`: RAM banks beyond the one at 0, each { base, mib }, checked
    for alignment and overlap here (the arch's physical-address limit when it is built)."""
    banks = []
    for i, b in enumerate(_get(mach, "highmem", list, source, "machine", [])):
        key = f"machine.highmem[{i}]"
        if not isinstance(b, dict):
            raise ScenarioError(source, key, "expected a table { base = ..., mib = ... }")
        _check_keys(b, {"base", "mib"}, source, key)
        base = eval_int(_get(b, "base", (int, str), source, key), {}, source, f"{key}.base")
        mib = _get(b, "mib", int, source, key)
        if not 1 <= mib <= 2048:
            raise ScenarioError(source, f"{key}.mib", f"must be 1..2048, got {mib}")
        if base % BANK_ALIGN:
            raise ScenarioError(source, f"{key}.base",
                                f"{base:#x} is not a multiple of 64 KiB (frame aligned)")
        banks.append((base, mib << 20, key))
    end, owner = low_mib << 20, "the memory_mib bank at 0"
    for base, size, key in sorted(banks):
        if base < end:
            raise ScenarioError(source, f"{key}.base", f"[{base:#x}, {base + size:#x}) overlaps "
                                f"{owner} (which ends at {end:#x})")
        end, owner = base + size, key
    return tuple((base, size) for base, size, _key in banks)


def _call_list(c: dict[str, Any], source: str, path: str) -> CpuSpec:
    """A `[[cpu]] calls = [...]` table: records for the calls program, checked here
    (ops by name; the arguments' expressions are evaluated when the machine is built)."""
    from emu import abi
    from guest import calls as call_format
    if "args" in c:
        raise ScenarioError(source, f"{path}.args", "a cpu with calls takes no args (the "
                            "calls program gets the records' address and count)")
    if _get(c, "program", str, source, path, "calls") != "calls":
        raise ScenarioError(source, f"{path}.program", "must be \"calls\" (or absent) with calls")
    records = _get(c, "calls", list, source, path)
    if len(records) > call_format.MAX_RECORDS:
        raise ScenarioError(source, f"{path}.calls",
                            f"{len(records)} records, at most {call_format.MAX_RECORDS}")
    names = abi.by_name()
    known = ", ".join([*names, *call_format.PSEUDO_OPS])
    for j, rec in enumerate(records):
        key = f"{path}.calls[{j}]"
        if not isinstance(rec, list) or not rec:
            raise ScenarioError(source, key, "expected [op, arg, ...]")
        op = rec[0]
        if isinstance(op, bool) or not isinstance(op, (int, str)):
            raise ScenarioError(source, f"{key}[0]", "expected a call name or number")
        if isinstance(op, int) and op < 0:
            raise ScenarioError(source, f"{key}[0]", f"call number {op} is negative")
        if call_format.op_number(op, names) is None:
            raise ScenarioError(source, f"{key}[0]", f"unknown call {op!r} (known: {known})")
        if len(rec) - 1 > call_format.MAX_ARGS:
            raise ScenarioError(source, key, f"{len(rec) - 1} arguments, at most "
                                f"{call_format.MAX_ARGS}")
        for k, a in enumerate(rec[1:], 1):
            if isinstance(a, bool) or not isinstance(a, (int, str)):
                raise ScenarioError(source, f"{key}[{k}]", "expected an integer or expression")
    return CpuSpec("calls", [], [list(r) for r in records])


def _program(c: dict[str, Any], i: int, args: list[Any], text: str, source: str,
             base_dir: Path) -> CpuSpec:
    path = f"cpu[{i}]"
    if ("program" in c) == ("asm" in c):
        raise ScenarioError(source, path, "give exactly one of program (a built-in name or a "
                            ".S file) and asm (the program's text)")
    if "asm" in c:
        asm = _get(c, "asm", str, source, path)
        if not asm.strip():
            raise ScenarioError(source, f"{path}.asm", "empty program")
        return CpuSpec("", args, asm=asm, asm_line=_asm_line(text, i))
    program = _get(c, "program", str, source, path)
    if not is_program_path(program):
        return CpuSpec(program, args)
    file = (base_dir / program).resolve()
    if not file.is_file():
        raise ScenarioError(source, f"{path}.program", f"no such file {program!r} "
                            f"(a path is relative to the scenario's directory, {base_dir})")
    return CpuSpec(program, args, path=file)


_ASM_KEY = re.compile(r"^[ \t]*asm[ \t]*=[ \t]*(\'\'\'|\"\"\"|\'|\")(\r?\n)?", re.M)
_CPU_HEAD = re.compile(r"^[ \t]*\[\[[ \t]*cpu[ \t]*\]\]", re.M)


def _asm_line(text: str, i: int) -> int:
    """The line of the scenario file on which the inline asm of cpu[i] starts.

    tomllib keeps no positions: find the `asm =` key inside the i-th
    [[cpu]] table (a multi-line string drops the newline after its quotes).
    """
    heads = [m.start() for m in _CPU_HEAD.finditer(text)]
    if i >= len(heads):
        return 1
    end = heads[i + 1] if i + 1 < len(heads) else len(text)
    m = _ASM_KEY.search(text, heads[i], end)
    if m is None:
        return 1
    return text.count("\n", 0, m.start(1)) + 1 + (1 if m.group(2) else 0)


def load(path: str | Path) -> Scenario:
    p = Path(path)
    if not p.is_file():
        builtin = SCENARIOS / f"{p.name}.toml" if p.suffix == "" else SCENARIOS / p.name
        if builtin.is_file() and len(p.parts) == 1:
            p = builtin
        else:
            raise ScenarioError(str(path), "<file>", "no such file")
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(str(path), "<file>", f"cannot read: {exc}") from None
    return parse(text, str(path), p.resolve().parent)


def builtin_names() -> list[str]:
    return sorted(p.stem for p in SCENARIOS.glob("*.toml"))
