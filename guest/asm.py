"""Assembling guest programs with Keystone.

Owns where program sources live (`guest/programs/<arch>/<name>.S` for the
built-in ones; a user's own `.S` file or inline text from a scenario), the
textual constants every program may use (`SYS_<name>` hypercall numbers,
`PAGE_SIZE`, `PMD_SIZE`, the call-list format's `CALL_*` from guest/calls.py),
and turning Keystone's failures into one clear error naming the file and
line (`prog.S:12: keystone: Invalid mnemonic`). Keystone does not say which
statement it refused, so the line is found by assembling ever longer
prefixes of the program (only when it fails).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import keystone

from arch.base import Arch
from emu import abi
from guest import calls

PROGRAMS = Path(__file__).parent / "programs"


class AsmError(ValueError):
    pass


# A program whose exit status is the result of what it did (the `hypercall`
# program exits with the call's return value), not a verdict on the run, says
# so in its header; its non-zero exits are then not failures.
RESULT_STATUS = re.compile(r"^\s*[#!@]\s*exit-status:\s*result\b", re.M)


@dataclass(frozen=True)
class Program:
    name: str
    base: int
    code: bytes
    source: str
    exit_is_result: bool = False  # the exit status is a result, not a verdict


def program_path(arch: Arch, name: str) -> Path:
    return PROGRAMS / arch.name.replace("-", "_") / f"{name}.S"


def list_programs(arch: Arch) -> list[str]:
    d = PROGRAMS / arch.name.replace("-", "_")
    return sorted(p.stem for p in d.glob("*.S")) if d.is_dir() else []


def constants(arch: Arch) -> dict[str, int]:
    consts = {f"SYS_{name}": nr for name, nr in abi.by_name().items()}
    consts["PAGE_SIZE"] = arch.page_size
    consts["PMD_SIZE"] = arch.pmd_size
    consts.update(calls.constants(arch.word_size))
    return consts


def substitute(arch: Arch, text: str) -> str:
    consts = constants(arch)

    def repl(m: re.Match[str]) -> str:
        name = m.group(0)
        return str(consts[name]) if name in consts else name

    return re.sub(r"\b(SYS_\w+|CALL_\w+|PAGE_SIZE|PMD_SIZE)\b", repl, text)


# kept from the lines after a prefix, so that branches to later labels and
# uses of later equates still resolve: a label definition, an equate
_LABEL = re.compile(r"^\s*([A-Za-z_.$0-9][\w.$]*\s*:)")
_EQUATE = re.compile(r"^\s*\.(?:equ|set|equiv)\b")


def _keystone(arch: Arch, text: str, base: int) -> bytes:
    text = arch.prepare_guest_asm(arch.guest_asm_prelude() + text, base)
    ks = keystone.Ks(arch.ks_arch, arch.ks_mode)
    enc, _ = ks.asm(text, base)
    return bytes(enc or b"")


def _failing_line(arch: Arch, text: str, base: int) -> int | None:
    """The 1-based line of `text` Keystone refuses: the shortest failing prefix."""
    lines = text.splitlines()

    def fails(k: int) -> bool:  # the first k lines, plus the labels of the rest
        rest = []
        for line in lines[k:]:
            if _EQUATE.match(line):
                rest.append(line)
            elif m := _LABEL.match(line):
                rest.append(m.group(1))
        try:
            _keystone(arch, "\n".join(lines[:k] + rest) + "\n", base)
        except keystone.KsError:
            return True
        return False

    lo, hi = 0, len(lines)  # fails(hi) is known; find the smallest failing k
    if not fails(hi) or fails(0):
        return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fails(mid):
            hi = mid
        else:
            lo = mid
    return hi


def assemble_text(arch: Arch, text: str, base: int, name: str = "<text>",
                  first_line: int = 1) -> bytes:
    """Assemble one guest program; errors read `name:line: reason`.

    `first_line` is the line of `name` on which `text` starts (inline asm in
    a scenario file starts below its `asm =` key).
    """
    source, text = text, substitute(arch, text)  # keeps the line structure
    try:
        arch.check_guest_asm(text, name)
    except ValueError as exc:
        raise AsmError(_relined(str(exc), name, first_line)) from None
    try:
        code = _keystone(arch, text, base)
    except keystone.KsError as exc:
        line = _failing_line(arch, text, base)
        where = f"{name}:{line + first_line - 1}" if line is not None else name
        stmt = f" `{source.splitlines()[line - 1].strip()}`" if line is not None else ""
        raise AsmError(f"{where}: keystone ({arch.name}): {exc}{stmt}") from None
    if not code:
        raise AsmError(f"{name}: guest program for {arch.name} assembled to nothing")
    return code


def _relined(message: str, name: str, first_line: int) -> str:
    """An arch check's "..., line N: why" as `name:line: why`."""
    m = re.search(r"line (\d+):? ", message)
    if not m:
        return f"{name}: {message}"
    return f"{name}:{int(m.group(1)) + first_line - 1}: {message}"


def load_program(arch: Arch, name: str, base: int) -> Program:
    """A built-in program, by name."""
    path = program_path(arch, name)
    if not path.is_file():
        known = ", ".join(list_programs(arch)) or "none"
        raise AsmError(f"no guest program {name!r} for {arch.name} (have: {known})")
    text = path.read_text()
    return Program(name, base, assemble_text(arch, text, base, f"{name}.S"), text,
                   bool(RESULT_STATUS.search(text)))


def load_program_file(arch: Arch, path: Path, base: int, shown: str | None = None) -> Program:
    """A user's own program from a `.S` file; `shown` is how errors name it."""
    shown = shown or str(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise AsmError(f"{shown}: cannot read: {exc}") from None
    return Program(path.stem, base, assemble_text(arch, text, base, shown), text,
                   bool(RESULT_STATUS.search(text)))


def inline_program(arch: Arch, text: str, base: int, shown: str, first_line: int = 1) -> Program:
    """A program written inline in a scenario (`asm = '''...'''`)."""
    return Program("asm", base, assemble_text(arch, text, base, shown, first_line), text,
                   bool(RESULT_STATUS.search(text)))
