"""A user's own guest programs (a .S next to the scenario, inline asm) and overrides.

Issue 12, section 1: `program = "prog.S"` is relative to the scenario file,
`asm = '''...'''` is a program in the scenario itself, assembler errors name
file:line, built-in names keep working; `--override FILE:CLASS` on
run/explore/replay, several overrides per scenario, and every report
records them with a digest of the file.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from emu import scenario
from emu.cli import main
from emu.report import Report

REPO = Path(__file__).resolve().parent.parent
PORTER = REPO / "guest" / "porter" / "flush_then_free.py"

# x86-pae: store `count` words, then exit(0)
PROG = """\
# my own program: fill(start, count)
    mov esi, ebx
fill:
    mov dword ptr [esi], ecx
    add esi, 4096
    dec ecx
    jnz fill
    mov eax, SYS_exit
    xor ebx, ebx
    int 0x80
"""

HEAD = """\
[machine]
arch = "x86-pae"
cpus = 2

[[vma]]
start = 0x10000000
size = "pmd_size"
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    f = tmp_path / name
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(text)
    return f


def test_a_program_file_next_to_the_scenario_runs(tmp_path, capsys, monkeypatch):
    write(tmp_path, "progs/fill.S", PROG)
    sc = write(tmp_path, "s.toml", HEAD + '[[cpu]]\nprogram = "progs/fill.S"\nargs = [0x10000000, 8]\n'
               '[[cpu]]\nprogram = "touch"\nargs = [0x10100000, 4, "page_size"]\n')
    monkeypatch.chdir(REPO)  # relative to the scenario, not to the current directory
    assert main(["run", str(sc)]) == 0
    out = capsys.readouterr().out
    assert out.count("exit(0)") == 2


def test_inline_asm_runs_and_its_errors_name_the_scenario_line(tmp_path, capsys):
    good = HEAD + "[[cpu]]\nargs = [0x10000000, 3]\nasm = '''\n" + PROG + "'''\n"
    sc = write(tmp_path, "s.toml", good)
    assert main(["run", str(sc)]) == 0
    capsys.readouterr()
    bad = good.replace("dec ecx", "decx ecx")
    write(tmp_path, "s.toml", bad)
    assert main(["run", str(sc)]) == 2
    err = capsys.readouterr().err.strip()
    line = bad.splitlines().index("    decx ecx") + 1
    assert f"{sc}:{line}: keystone" in err and "decx ecx" in err and len(err.splitlines()) == 1


def test_an_assembler_error_in_a_program_file_names_file_and_line(tmp_path, capsys):
    write(tmp_path, "fill.S", PROG.replace("add esi, 4096", "addd esi, 4096"))
    sc = write(tmp_path, "s.toml", HEAD + '[[cpu]]\nprogram = "fill.S"\nargs = [0x10000000, 8]\n')
    assert main(["run", str(sc)]) == 2
    err = capsys.readouterr().err
    assert "fill.S:5: keystone (x86-pae)" in err and "Traceback" not in err


@pytest.mark.parametrize("cpu,key", [
    ('[[cpu]]\nprogram = "nope.S"\n', "cpu[0].program: no such file"),
    ('[[cpu]]\nprogram = "touch"\nasm = "nop"\n', "exactly one of program"),
    ('[[cpu]]\nasm = "  "\n', "cpu[0].asm: empty"),
    ('[[cpu]]\nprogram = "nope"\n', "no guest program 'nope'"),
])
def test_bad_programs_are_one_line(cpu, key, tmp_path, capsys):
    sc = write(tmp_path, "s.toml", HEAD + cpu)
    assert main(["run", str(sc)]) == 2
    err = capsys.readouterr().err
    assert key in err and len(err.strip().splitlines()) == 1


def test_override_as_a_list_and_a_string():
    one = scenario.parse(HEAD + '[kernel]\noverride = "a.py:A"\n[[cpu]]\nprogram = "touch"\n')
    two = scenario.parse(HEAD + '[kernel]\noverride = ["a.py:A", "b.py:B"]\n'
                         '[[cpu]]\nprogram = "touch"\n')
    assert one.overrides == ["a.py:A"] and two.overrides == ["a.py:A", "b.py:B"]
    with pytest.raises(scenario.ScenarioError, match=r"kernel.override\[1\]"):
        scenario.parse(HEAD + '[kernel]\noverride = ["a.py:A", 3]\n[[cpu]]\nprogram = "touch"\n')


def test_two_overrides_mix_in_and_two_policies_are_refused(tmp_path):
    from emu.kernel.variants import VariantError, build_kernel_class
    write(tmp_path, "m.py", "class Quiet:\n    pass\n")
    shutil.copy(PORTER, tmp_path / "p.py")
    k = build_kernel_class([], ["m.py:Quiet", "p.py:FlushThenFree"], tmp_path)
    names = [c.__name__ for c in k.__mro__]
    assert "Quiet" in names and "PolicyOverride[FlushThenFree]" in names
    with pytest.raises(VariantError, match="both replace the table policy"):
        build_kernel_class([], ["p.py:FlushThenFree", "p.py:FlushThenFree"], tmp_path)


def porter_scenario(tmp_path: Path) -> Path:
    """porter_example without its [kernel] override, in a directory of its own."""
    text = (REPO / "guest" / "scenarios" / "porter_example.toml").read_text()
    text = text.replace('override = "../porter/flush_then_free.py:FlushThenFree"', "")
    return write(tmp_path, "porter.toml", text)


def test_override_on_the_command_line_is_found_recorded_and_replayed(tmp_path, capsys,
                                                                      monkeypatch):
    sc = porter_scenario(tmp_path / "sc")
    shutil.copy(PORTER, tmp_path / "mypolicy.py")
    monkeypatch.chdir(tmp_path)
    assert main(["explore", str(sc), "--schedules", "20", "--quiet"]) == 0  # clean without it
    capsys.readouterr()
    assert main(["explore", str(sc), "--override", "mypolicy.py:FlushThenFree",
                 "--schedules", "1000", "--quiet", "--json", "out.json"]) == 1
    out = capsys.readouterr().out
    assert "override" in out and "FlushThenFree" in out
    data = json.loads((tmp_path / "out.json").read_text())
    rec = data["report"]["overrides"][0]
    assert rec["class"] == "FlushThenFree" and rec["file"] == "../mypolicy.py"
    assert len(rec["sha256"]) == 64 and data["overrides"] == data["report"]["overrides"]
    saved = next((tmp_path / ".ptemu" / "failures").glob("*.json"))
    assert Report.from_json(saved.read_text()).overrides[0]["sha256"] == rec["sha256"]
    # the saved failure replays with the override, from anywhere
    monkeypatch.chdir(REPO)
    assert main(["replay", str(saved), "--trace", "1"]) == 1
    capsys.readouterr()
    # an edited policy is said to have changed
    (tmp_path / "mypolicy.py").write_text(PORTER.read_text() + "\n# edited\n")
    main(["replay", str(saved), "--trace", "1"])
    assert "changed since the failure was saved" in capsys.readouterr().err
    # and replay / run take --override too
    rep = Report.from_json(saved.read_text())
    assert main(["replay", str(sc), "--schedule", rep.schedule, "--override",
                 f"{tmp_path}/mypolicy.py:FlushThenFree", "--trace", "1"]) == 1
    assert main(["run", str(sc), "--override", f"{tmp_path}/mypolicy.py:FlushThenFree"]) in (0, 1)
    capsys.readouterr()


def test_a_bad_override_is_one_line(tmp_path, capsys):
    assert main(["run", "touch", "--override", "nope.py:X"]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["explore", "touch", "--override", "nocolon"]) == 2
    assert "FILE.py:CLASS" in capsys.readouterr().err
