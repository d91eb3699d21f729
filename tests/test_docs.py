"""docs/ names every scenario key, variant, built-in program and JSON format (issue 12, s6)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from emu.kernel.variants import VARIANTS, build_kernel_class

DOCS = Path(__file__).resolve().parent.parent / "docs"
SRC = Path(__file__).resolve().parent.parent


def scenario_keys() -> set[str]:
    """Every key the scenario parser accepts (the sets passed to _check_keys)."""
    tree = ast.parse((SRC / "emu" / "scenario.py").read_text())
    keys: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "_check_keys":
            keys |= {c.value for c in node.args[1].elts}
    return keys


def test_every_scenario_key_is_documented():
    doc = (DOCS / "scenario-format.md").read_text()
    keys = scenario_keys()
    assert {"populate", "thp", "pmd_mapping", "name", "share", "asm", "override"} <= keys
    missing = sorted(k for k in keys if f"`{k}`" not in doc and f"[{k}]" not in doc
                     and f"[[{k}]]" not in doc)
    assert not missing, f"undocumented scenario keys: {missing}"


def test_every_variant_is_documented():
    build_kernel_class([])
    doc = (DOCS / "variants.md").read_text()
    for v in VARIANTS.values():
        assert f"`{v.name}`" in doc and v.doc in doc, v.name


def test_every_builtin_program_is_documented():
    doc = (DOCS / "guest-programs.md").read_text()
    names = {p.stem for p in (SRC / "guest" / "programs").glob("*/*.S")}
    missing = sorted(n for n in names if f"`{n}`" not in doc)
    assert not missing, f"undocumented programs: {missing}"


def test_every_json_format_is_documented():
    doc = (DOCS / "json-formats.md").read_text() + (DOCS / "failure-db.md").read_text()
    formats = set()
    for f in (SRC / "emu").glob("*.py"):
        formats |= set(re.findall(r'"(ptemu-[a-z-]+/\d+)"', f.read_text()))
    assert formats and all(fmt in doc for fmt in formats), formats
