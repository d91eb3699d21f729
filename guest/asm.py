"""Assembling guest programs with Keystone.

Owns where program sources live (`guest/programs/<arch>/<name>.S`), the
textual constants every program may use (`SYS_<name>` hypercall numbers,
`PAGE_SIZE`, `PMD_SIZE`, the call-list format's `CALL_*` from guest/calls.py),
and turning Keystone's failures into one clear error naming the program.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import keystone

from arch.base import Arch
from emu import hypercall
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
    import emu.services  # noqa: F401 - registers the mm services' numbers
    consts = {f"SYS_{name}": nr for name, nr in hypercall.by_name().items()}
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


def assemble_text(arch: Arch, text: str, base: int, name: str = "<text>") -> bytes:
    text = arch.guest_asm_prelude() + substitute(arch, text)
    arch.check_guest_asm(text, name)
    text = arch.prepare_guest_asm(text, base)
    try:
        ks = keystone.Ks(arch.ks_arch, arch.ks_mode)
        enc, _ = ks.asm(text, base)
    except keystone.KsError as exc:
        raise AsmError(f"guest program {name} for {arch.name}: keystone: {exc}") from None
    if not enc:
        raise AsmError(f"guest program {name} for {arch.name} assembled to nothing")
    return bytes(enc)


def load_program(arch: Arch, name: str, base: int) -> Program:
    path = program_path(arch, name)
    if not path.is_file():
        known = ", ".join(list_programs(arch)) or "none"
        raise AsmError(f"no guest program {name!r} for {arch.name} (have: {known})")
    text = path.read_text()
    return Program(name, base, assemble_text(arch, text, base, f"{name}.S"), text,
                   bool(RESULT_STATUS.search(text)))
