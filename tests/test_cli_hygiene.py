"""CLI input hygiene (issue 12, section 5): every bad input is one line, exit 2, no traceback.

Each case was reproduced on the code before the fix (a traceback after the
run, exit 1, or half a gigabyte for a repeat count).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc

import pytest

from emu.cli import main
from emu.sched import ScheduleError, decode

FAILURE = {"format": "ptemu-failure/1", "kind": "torn-read", "message": "m",
           "scenario": "torn_pae", "arch": "x86-pae", "variants": [], "schedule": "pt1:a"}


def one_line_error(capsys, *needles: str) -> str:
    cap = capsys.readouterr()
    err = cap.err.strip()
    assert "Traceback" not in err and "Traceback" not in cap.out
    assert len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, err
    return err


# ---- output paths: checked before the run ---------------------------------------------


@pytest.mark.parametrize("argv,flag", [
    (["explore", "torn_pae", "--variant", "plain_two_load_read", "--strategy", "exhaustive",
      "--svg", "/no/such/dir/t.svg"], "--svg"),
    (["explore", "torn_pae", "--json", "/no/such/dir/o.json"], "--json"),
    (["run", "torn_pae", "--json", "/no/such/dir/o.json"], "--json"),
    (["demo", "torn-pae", "--svg-dir", "/no/such/dir"], "--svg-dir"),
    (["replay", "torn_pae", "--schedule", "pt1:a", "--svg", "/no/such/dir/t.svg"], "--svg"),
])
def test_a_bad_output_path_is_refused_before_the_run(argv, flag, capsys, monkeypatch):
    import emu.explore
    import emu.machine

    def no_run(*a, **k):  # the check must come first: running at all is the bug
        raise AssertionError("ran before checking the output path")
    monkeypatch.setattr(emu.explore, "explore", no_run)
    monkeypatch.setattr(emu.machine.Machine, "run", no_run)
    assert main(argv) == 2
    one_line_error(capsys, flag)


def test_an_output_path_naming_a_directory_is_refused(tmp_path, capsys):
    assert main(["replay", "torn_pae", "--schedule", "pt1:a", "--svg", str(tmp_path)]) == 2
    one_line_error(capsys, "is a directory")


def test_json_dash_is_stdout_and_the_report_goes_to_stderr(capsys):
    assert main(["run", "torn_pae", "--json", "-"]) == 0
    cap = capsys.readouterr()
    data = json.loads(cap.out)
    assert data["format"] == "ptemu-run/1" and data["steps"] > 0
    assert "trace hash" in cap.err


# ---- replay of malformed failure files ---------------------------------------------------


@pytest.mark.parametrize("patch,needle", [
    ({"schedule": 7}, "schedule"),
    ({"scenario": 3}, "scenario"),
    ({"variants": None}, "variants"),
    ({"variants": [1]}, "variants"),
    ({"frame_history": [1]}, "frame_history"),
])
def test_replay_of_a_malformed_failure_file_is_one_line(patch, needle, tmp_path, capsys):
    f = tmp_path / "f.json"
    f.write_text(json.dumps(FAILURE | patch))
    assert main(["replay", str(f)]) == 2
    one_line_error(capsys, needle)


def test_replay_of_deeply_nested_json_is_one_line(tmp_path, capsys):
    f = tmp_path / "deep.json"
    f.write_text("[" * 100_000 + "]" * 100_000)
    assert main(["replay", str(f)]) == 2
    one_line_error(capsys, "nested too deeply")


# ---- schedules ------------------------------------------------------------------------


def test_repeat_counts_are_decoded_lazily():
    tracemalloc.start()
    try:
        c = decode("pt1:a30000000b")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000  # was 514 MB
    assert len(c) == 30_000_001 and c[29_999_999] == 0 and c[30_000_000] == 1
    assert decode("pt1:a2b3a") == [0, 0, 1, 1, 1, 0]
    with pytest.raises(ScheduleError, match="cap"):
        decode("pt1:a99999999999999999999")


def test_a_schedule_that_does_not_match_its_run_is_an_error(capsys):
    assert main(["run", "torn_pae", "--json", "-"]) == 0
    full = json.loads(capsys.readouterr().out)["schedule"]
    assert main(["replay", "torn_pae", "--schedule", full, "--trace", "1"]) == 0
    capsys.readouterr()
    assert main(["replay", "torn_pae", "--schedule", "pt1:b2a"]) == 2
    one_line_error(capsys, "--allow-prefix")
    assert main(["replay", "torn_pae", "--schedule", "pt1:b2a", "--allow-prefix",
                 "--trace", "1"]) == 0
    capsys.readouterr()
    assert main(["replay", "torn_pae", "--schedule", full + "b5000"]) == 2
    one_line_error(capsys, "the run ended after")


@pytest.mark.parametrize("argv", [
    ["run", "torn_pae", "--max-steps", "0"],
    ["replay", "torn_pae", "--schedule", "pt1:a", "--max-steps", "-1"],
    ["explore", "torn_pae", "--max-steps", "0"],
    ["pgtable", "dump", "touch", "--max-steps", "0"],
])
def test_max_steps_must_be_positive(argv, capsys):
    assert main(argv) == 2
    one_line_error(capsys, "--max-steps")


def test_run_prints_the_whole_schedule(capsys):
    assert main(["run", "touch"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("schedule: "))
    assert len(line) > 200 and "..." not in line
    decode(line.split(": ", 1)[1])


# ---- demo, version, piped output -----------------------------------------------------------


@pytest.mark.parametrize("argv,flag", [
    (["demo", "torn-pae", "--arch", "arm"], "--arch"),
    (["demo", "torn-pae", "--seed", "3"], "--seed"),
    (["demo", "touch", "--svg-dir", "."], "--svg-dir"),
])
def test_demo_refuses_options_it_does_not_use(argv, flag, capsys):
    assert main(argv) == 2
    one_line_error(capsys, flag, "does not use")


# the ptemu console script, as a subprocess (stdout a pipe, not a terminal)
PTEMU = [sys.executable, "-c", "import sys; from emu.cli import main; sys.exit(main())"]


def test_version():
    out = subprocess.run([*PTEMU, "--version"], capture_output=True,
                         text=True, check=True).stdout
    assert out.startswith("ptemu ")


def test_piped_output_has_no_borders_and_no_hard_wrap():
    out = subprocess.run([*PTEMU, "run", "touch"], capture_output=True,
                         text=True, check=True).stdout
    assert not any(ch in out for ch in "│┃━─╭╰")
    sched = next(x for x in out.splitlines() if x.startswith("schedule: "))
    assert len(sched) > 160


def test_package_metadata_has_license_authors_and_classifiers():
    from importlib.metadata import metadata
    md = metadata("ptemu")
    # an SPDX expression (core metadata 2.4's License-Expression)
    assert (md["License-Expression"] or md["License"]) and md["Author"]
    assert md.get_all("Classifier")
