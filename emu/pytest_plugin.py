"""The pytest plugin (entry point `pytest11`): race tests in a few lines.

    from my_policy import MyPteFreeDefer

    def test_my_pte_free_defer(ptemu_explore):
        ptemu_explore("my.toml", override=MyPteFreeDefer, schedules=500).assert_clean()

`ptemu_explore` is `emu.api.explore` with a scenario path relative to the
test file (a built-in name works too) and the failure database kept in
pytest's rootdir (`.ptemu/db/`), so a failure found once is replayed first
on the next run. A failing `assert_clean()` fails the test with the report
(what broke, where, the frame's life, every CPU's last steps) and the
`ptemu replay` line, without a Python traceback into ptemu. `ptemu_replay`
is `emu.api.replay`, relative to the test file the same way; both return
an `emu.api.Outcome` (`.clean`, `.report`, `.replay_command`, `.text()`).
`--ptemu-no-db` runs without the database.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# emu.api (and with it Unicorn) is imported by the fixtures, not here: the
# plugin is loaded into every pytest session of an environment with ptemu


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ptemu")
    group.addoption("--ptemu-no-db", action="store_true",
                    help="ptemu_explore: neither replay nor record failures in .ptemu/db")


def _wrap(out: Any) -> Any:
    def assert_clean() -> Any:
        if not out.clean:
            pytest.fail(f"ptemu found a failure\n{out.text()}", pytrace=False)
        return out
    out.assert_clean = assert_clean  # type: ignore[method-assign]
    return out


def _near(request: pytest.FixtureRequest, scenario: str | os.PathLike[str]) -> str:
    p = Path(scenario)
    if not p.is_absolute():
        here = Path(request.path).parent / p
        if here.is_file():
            return str(here)
    return str(scenario)


@pytest.fixture
def ptemu_explore(request: pytest.FixtureRequest) -> Callable[..., Any]:
    from emu.api import explore
    root = Path(request.config.rootpath)
    no_db = request.config.getoption("--ptemu-no-db")

    def run(scenario: str | os.PathLike[str], **kw: Any) -> Any:
        kw.setdefault("db", False if no_db else root / ".ptemu" / "db")
        return _wrap(explore(_near(request, scenario), **kw))
    return run


@pytest.fixture
def ptemu_replay(request: pytest.FixtureRequest) -> Callable[..., Any]:
    from emu.api import replay

    def run(target: str | os.PathLike[str], schedule: str | None = None, **kw: Any) -> Any:
        return _wrap(replay(_near(request, target), schedule, **kw))
    return run


__all__ = ["ptemu_explore", "ptemu_replay"]
