"""The pytest plugin: a porter's race test in a few lines, run by plain pytest (pytester).

Acceptance (issue 12, section 4): the deliberately wrong policy of
guest/porter/flush_then_free.py fails the test with the report and the
replay command; the same test without it passes; the second run replays
the saved failure first.
"""

from __future__ import annotations

import shutil
from pathlib import Path

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parent.parent
SCENARIO = (REPO / "guest" / "scenarios" / "porter_example.toml").read_text().replace(
    'override = "../porter/flush_then_free.py:FlushThenFree"', "")

RACE_TEST = '''
from flush_then_free import FlushThenFree


def test_my_pte_free_defer(ptemu_explore):
    ptemu_explore("porter.toml", override=FlushThenFree, schedules=1000).assert_clean()


def test_without_my_policy(ptemu_explore):
    ptemu_explore("porter.toml", schedules=30).assert_clean()
'''


def setup(pytester):
    pytester.path.joinpath("porter.toml").write_text(SCENARIO)
    shutil.copy(REPO / "guest" / "porter" / "flush_then_free.py", pytester.path)
    pytester.makepyfile(test_race=RACE_TEST)


def test_a_wrong_policy_fails_with_the_report_and_the_replay_command(pytester):
    setup(pytester)
    res = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    res.assert_outcomes(passed=1, failed=1)
    out = res.stdout.str()
    assert "ptemu found a failure" in out and "use-after-free" in out
    assert "override flush_then_free.py:FlushThenFree" in out or "FlushThenFree" in out
    assert "replay with: ptemu replay " in out
    assert "emu/explore.py" not in out  # no traceback into ptemu
    # the second run replays the saved failure first, and says so
    res = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", "-k", "my_pte")
    res.assert_outcomes(failed=1)
    assert "reuse: replayed saved failure" in res.stdout.str()
    assert "still fails" in res.stdout.str()


def test_the_plugin_without_the_database(pytester):
    setup(pytester)
    res = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", "--ptemu-no-db",
                                        "-k", "without")
    res.assert_outcomes(passed=1)
    assert not (pytester.path / ".ptemu" / "db").exists()
