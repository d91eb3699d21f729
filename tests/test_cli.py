"""The CLI: exit statuses and one-line errors for bad input."""

from __future__ import annotations

import re

import pytest

from emu.cli import main

BAD = {
    "not toml": ("[machine\narch=", "<toml>"),
    "missing arch": ("[machine]\ncpus = 1\n[[cpu]]\nprogram='touch'\n", "machine.arch"),
    "bad cpus": ("[machine]\narch='x86-pae'\ncpus = 0\n[[cpu]]\nprogram='touch'\n", "machine.cpus"),
    "unknown key": ("[machine]\narch='x86-pae'\ncpus=1\ncolour=1\n[[cpu]]\nprogram='touch'\n",
                    "machine.colour"),
    "bad vma kind": ("[machine]\narch='x86-pae'\ncpus=1\n[[vma]]\nstart=0x1000\nsize=0x1000\n"
                     "kind='weird'\n[[cpu]]\nprogram='touch'\n", "vma[0].kind"),
    "unknown program": ("[machine]\narch='x86-pae'\ncpus=1\n[[cpu]]\nprogram='nope'\n",
                        "cpu[0].program"),
    "bad expression": ("[machine]\narch='x86-pae'\ncpus=1\n[[vma]]\nstart='0x1000 +'\nsize=4096\n"
                       "[[cpu]]\nprogram='touch'\n", "vma[0].start"),
    "overlap": ("[machine]\narch='x86-pae'\ncpus=1\n[[vma]]\nstart=0x10000000\nsize=0x2000\n"
                "[[vma]]\nstart=0x10001000\nsize=0x1000\n[[cpu]]\nprogram='touch'\n", "vma[1]"),
    "unknown arch": ("[machine]\narch='vax'\ncpus=1\n[[cpu]]\nprogram='touch'\n", "unknown arch"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_malformed_scenarios_are_one_line_exit_2(name, tmp_path, capsys):
    text, key = BAD[name]
    f = tmp_path / "s.toml"
    f.write_text(text)
    assert main(["run", str(f)]) == 2
    err = capsys.readouterr().err
    assert key in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_demo_touch_exits_0(capsys):
    assert main(["demo", "touch", "--trace", "3"]) == 0
    out = capsys.readouterr().out
    assert "exit(0)" in out and "pt1:" in out


def test_unknown_demo_and_arch_override(capsys):
    assert main(["demo", "nope"]) == 2
    assert main(["run", "touch", "--arch", "mips"]) == 2


def test_pgtable_dump_shows_each_level(capsys):
    assert main(["pgtable", "dump", "touch", "--start", "0x10000000", "--end", "0x10003000"]) == 0
    out = capsys.readouterr().out
    for level in ("pgd", "pmd", "pte"):  # piped: plain columns, no borders
        assert re.search(rf"^ *{level} +0x", out, re.M)
    assert "│" not in out


def test_a_scenario_too_big_for_its_memory_is_a_one_line_error(tmp_path, capsys):
    f = tmp_path / "s.toml"
    f.write_text("[machine]\narch='x86-pae'\ncpus=1\nmemory_mib=1\n[[vma]]\nstart=0x10000000\n"
                 "size=0x400000\npopulate=true\n[[cpu]]\nprogram='touch'\nargs=[0x10000000,1,4096]\n")
    assert main(["run", str(f)]) == 2
    err = capsys.readouterr().err
    assert "memory_mib" in err and "Traceback" not in err


@pytest.mark.slow
def test_demo_torn_pae_shows_all_three_acts(tmp_path, capsys):
    assert main(["demo", "torn-pae", "--svg-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "torn-read" in out and "clean over all" in out and "lockless-sync" in out
    assert (tmp_path / "torn-pae.svg").read_text().startswith("<svg")
