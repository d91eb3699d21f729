"""The failure database (issue 12, section 4): keyed, deduplicated, replayed first.

Keys are the scenario's content + arch + variants + overrides; entries are
failure files with paths relative to themselves; the second explore of a
failing scenario replays the saved failure before generating anything.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from emu.cli import main
from emu.failure_db import FailureDb, key_for
from emu.report import Report
from emu.scenario import SCENARIOS, load

TORN = ["--variant", "plain_two_load_read", "--strategy", "exhaustive", "--quiet"]


def copy_torn(tmp_path: Path) -> Path:
    d = tmp_path / "project" / "scen"
    d.mkdir(parents=True)
    return Path(shutil.copy(SCENARIOS / "torn_pae.toml", d / "torn.toml"))


def test_the_second_explore_replays_the_saved_failure_first(tmp_path, capsys, monkeypatch):
    sc = copy_torn(tmp_path)
    monkeypatch.chdir(tmp_path / "project")
    assert main(["explore", str(sc), *TORN]) == 1
    out = capsys.readouterr().out
    assert "failure database: new entry" in out and "reuse:" not in out
    assert main(["explore", str(sc), *TORN, "--json", "second.json"]) == 1
    out = capsys.readouterr().out
    assert "reuse: replayed saved failure" in out and "still fails" in out
    assert "exploration" not in out  # nothing new was generated
    data = json.loads(Path("second.json").read_text())
    assert data["reused"] and data["report"]["kind"] == "torn-read"
    # --no-db explores again
    assert main(["explore", str(sc), *TORN, "--no-db"]) == 1
    assert "reuse:" not in capsys.readouterr().out


def test_entries_are_keyed_deduplicated_and_relative(tmp_path, capsys, monkeypatch):
    sc = copy_torn(tmp_path)
    monkeypatch.chdir(tmp_path / "project")
    assert main(["explore", str(sc), *TORN]) == 1
    assert main(["explore", str(sc), *TORN, "--no-db", "--seed", "1"]) == 1
    db = FailureDb()
    [info] = db.keys()
    assert info["scenario"] == "../../../scen/torn.toml" and info["variants"] == ["plain_two_load_read"]
    [(path, rep)] = info["entries"]
    raw = json.loads(path.read_text())
    assert raw["scenario"] == "../../../scen/torn.toml" and raw["db"]["version"] == 1
    # the same report saved again is the same entry
    key = key_for(load(str(sc)) | _with(["plain_two_load_read"]), "x86-pae")
    again, new = db.save(key, rep)
    assert again == path and not new
    # another arch, another variant set or other content is another key
    base = load(str(sc))
    assert key_for(base, "x86-pae").key != key.key
    sc.write_text(sc.read_text() + "\n# edited\n")
    assert key_for(load(str(sc)) | _with(["plain_two_load_read"]), "x86-pae").key != key.key
    # the entry replays from anywhere (its paths are relative to itself)
    sc.write_text(sc.read_text().replace("\n# edited\n", ""))
    entry = path.resolve()
    monkeypatch.chdir(tmp_path)
    assert main(["replay", str(entry), "--trace", "1"]) == 1
    capsys.readouterr()


class _with:
    """`scenario | _with(variants)`: the scenario with variants added, as explore does."""

    def __init__(self, variants: list[str]) -> None:
        self.variants = variants

    def __ror__(self, sc):
        sc.variants.extend(v for v in self.variants if v not in sc.variants)
        return sc


def test_an_entry_that_no_longer_fails_is_removed(tmp_path, capsys, monkeypatch):
    sc = copy_torn(tmp_path)
    monkeypatch.chdir(tmp_path / "project")
    assert main(["run", str(sc), "--json", "run.json"]) == 0
    schedule = json.loads(Path("run.json").read_text())["schedule"]
    # pretend this clean schedule once failed under the correct model's key
    fake = Report(kind="torn-read", message="m", scenario=str(sc), arch="x86-pae", variants=[],
                  schedule=schedule, title="torn-read: m")
    db = FailureDb()
    path, _ = db.save(key_for(load(str(sc)), "x86-pae"), fake)
    capsys.readouterr()
    assert main(["explore", str(sc), "--strategy", "exhaustive", "--schedules", "20",
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "no longer fails (removed from the database)" in out and not path.exists()


def test_failures_list_show_clear(tmp_path, capsys, monkeypatch):
    sc = copy_torn(tmp_path)
    monkeypatch.chdir(tmp_path / "project")
    assert main(["failures", "list"]) == 0
    assert "no saved failures" in capsys.readouterr().out
    assert main(["explore", str(sc), *TORN]) == 1
    capsys.readouterr()
    assert main(["failures", "list"]) == 0
    out = capsys.readouterr().out
    assert "torn.toml on x86-pae, variants plain_two_load_read" in out
    entry = out.splitlines()[1].split()[0]
    assert main(["failures", "show", entry[:6]]) == 0
    out = capsys.readouterr().out
    assert out.startswith("torn-read:") and "ptemu replay" in out
    assert main(["failures", "show", "zzzz"]) == 2
    assert main(["failures", "clear"]) == 0
    assert "removed 1 saved failure" in capsys.readouterr().out
    assert FailureDb().keys() == []
