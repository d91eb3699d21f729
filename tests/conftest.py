"""Shared fixtures: building machines from inline scenario text."""

from __future__ import annotations

import textwrap

import pytest

from emu import scenario
from emu.machine import Machine


def make_machine(toml: str, arch: str | None = None, **kw) -> Machine:
    sc = scenario.parse(textwrap.dedent(toml), "<test>")
    return Machine(sc, arch=arch, **kw)


@pytest.fixture
def machine_from():
    return make_machine


import sys  # noqa: E402
from pathlib import Path  # noqa: E402

# tools/ holds the differential oracles and benchmarks the tests reuse
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
