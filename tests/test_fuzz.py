"""ptemu fuzz: the call-list program on every arch, the generator, the driver and the CLI."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from emu import scenario
from emu.cli import main
from emu.explore import failure_of
from emu.fuzz import FuzzConfig, fuzz, scenario_text, workload
from emu.fuzz_gen import TARGETS, generate, targets_for, workload_seed
from emu.machine import Machine
from emu.scenario import ScenarioError
from emu.sched import RandomStrategy, RoundRobin
from emu.services import user_page_pa

ARCHES = ["x86-pae", "arm", "powerpc", "s390", "sparc64"]



def build(text: str, arch: str | None = None) -> Machine:
    return Machine(scenario.parse(textwrap.dedent(text), "<test>"), arch=arch)


# ---- the calls program ------------------------------------------------------------------


CALLS = """
[machine]
arch = "x86-pae"
cpus = 2
memory_mib = 32
[[vma]]
start = "8 * pmd_size"
size = "pmd_size"
kind = "shmem"
[[cpu]]
calls = [["mmap", "16 * pmd_size", "pmd_size", 0],
         ["touch_write", "16 * pmd_size", 4, "page_size"],
         ["touch_read", "16 * pmd_size", 4, "page_size"],
         ["munmap", "16 * pmd_size", "pmd_size"],
         ["mmap", "20 * pmd_size", "pmd_size", 0],
         ["touch_write", "20 * pmd_size + page_size", 3, "2 * page_size"],
         [99, 1, 2, 3, 4, 5],
         ["log", 0x5a5a],
         ["exit", 3],
         ["touch_write", "16 * pmd_size", 1, "page_size"]]
[[cpu]]
calls = [["touch_read", "8 * pmd_size", 5, "page_size"],
         ["madvise", "8 * pmd_size", "page_size", 4]]
"""


@pytest.mark.parametrize("arch", ARCHES)
def test_calls_program_performs_its_records(arch):
    m = build(CALLS, arch)
    r = m.run(RoundRobin(7))
    a = m.arch
    # cpu0 exits with the `exit` record's code, before the record after it
    assert r.exit_codes == {0: 3, 1: 0} and not r.crashes and r.violation is None
    # the first mapping is gone, the second holds the three pages its guest stored to
    assert m.mm.find_vma(16 * a.pmd_size) is None
    vma = m.mm.find_vma(20 * a.pmd_size)
    assert vma is not None and vma.kind == "anon"
    stack = 2 if arch == "x86-pae" else 0  # x86's calls program keeps its count on the stack
    assert m.mm.rss["anon"] - stack == 3
    for k in range(3):
        va = 20 * a.pmd_size + (1 + 2 * k) * a.page_size
        pa = user_page_pa(m, m.cpus[0], va)
        assert pa is not None and m.mem.read_int(pa, a.word_size, a.byteorder) == va
    assert user_page_pa(m, m.cpus[0], 20 * a.pmd_size) is None  # never touched
    # cpu1's loads faulted five shmem pages in, then it zapped the first one
    assert m.mm.rss["shmem"] == 4
    notes = "\n".join(m.trace_lines())
    assert "hypercall 99: unknown, -ENOSYS" in notes and "guest log 0x5a5a" in notes


BAD_CALLS = {
    "unknown op": ('calls = [["nope", 1]]', "cpu[0].calls[0][0]"),
    "too many args": ('calls = [["log", 1, 2, 3, 4, 5, 6]]', "cpu[0].calls[0]"),
    "bool arg": ('calls = [["log", true]]', "cpu[0].calls[0][1]"),
    "not a list": ('calls = ["log"]', "cpu[0].calls[0]"),
    "with args": ('calls = [["log", 1]]\nargs = [1]', "cpu[0].args"),
    "other program": ('calls = [["log", 1]]\nprogram = "touch"', "cpu[0].program"),
    "negative op": ('calls = [[-1]]', "cpu[0].calls[0][0]"),
}


@pytest.mark.parametrize("name", sorted(BAD_CALLS))
def test_bad_call_lists_name_the_key(name):
    body, key = BAD_CALLS[name]
    text = f"[machine]\narch = 'x86-pae'\ncpus = 1\n[[cpu]]\n{body}\n"
    with pytest.raises(ScenarioError) as exc:
        scenario.parse(text, "f.toml")
    assert str(exc.value).startswith(f"f.toml: {key}: ")


def test_bad_call_expression_is_reported_at_build():
    text = "[machine]\narch = 'x86-pae'\ncpus = 1\n[[cpu]]\ncalls = [['log', 'page_size +']]\n"
    with pytest.raises(ScenarioError, match=r"cpu\[0\]\.calls\[0\]\[1\]"):
        build(text)


# ---- the generator -------------------------------------------------------------------------


def test_generator_is_deterministic_and_seeds_differ():
    for t in TARGETS:
        a = generate(t, workload_seed(5, 3))
        assert a == generate(t, workload_seed(5, 3))
        assert a != generate(t, workload_seed(5, 4))
    assert workload(FuzzConfig(seed=5), 3) == workload(FuzzConfig(seed=5), 3)


def test_targets_cover_every_arch_and_option():
    labels = [t.label for t in targets_for("all")]
    assert labels == ["x86-pae", "arm", "powerpc", "powerpc-hash", "s390", "s390-full-page",
                      "sparc64"]
    assert [t.label for t in targets_for("s390")] == ["s390", "s390-full-page"]
    assert [t.label for t in targets_for("powerpc-hash")] == ["powerpc-hash"]
    from arch import get_arch
    assert [get_arch(t.arch, **dict(t.options)).pgtable_policy for t in targets_for("s390")] \
        == ["halves", "full-page"]
    with pytest.raises(ValueError, match="unknown fuzz arch"):
        targets_for("vax")


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.label)
def test_generated_scenarios_parse_and_run(target):
    """Every generated workload builds, and its guests never crash (the generator keeps
    guest loads and stores to what nobody unmaps); each hypercall kind shows up."""
    seen = set()
    for i in range(5):
        text = generate(target, workload_seed(11, i))
        sc = scenario.parse(text, f"w{i}.toml")
        assert sc.arch == target.arch and sc.options == dict(target.options)
        assert 2 <= sc.cpus <= 4 and all(p.program == "calls" for p in sc.programs)
        seen |= {rec[0] for p in sc.programs for rec in p.calls}
        m = Machine(sc)
        r = m.run(RandomStrategy(i), max_steps=400_000)
        assert not r.crashes and not r.step_limit
        assert failure_of(r) is None, failure_of(r)
    assert {"touch_read", "madvise", "gup_fast"} <= seen


def test_workload_scenarios_are_plain_toml_with_the_variant():
    cfg = FuzzConfig(arch="x86-pae", variants=("pte_free_immediate",))
    text = scenario_text(cfg, workload(cfg, 0))
    sc = scenario.parse(text, "w.toml")
    assert sc.variants == ["pte_free_immediate"]


# ---- the driver and the CLI ------------------------------------------------------------------


def test_results_do_not_depend_on_jobs(tmp_path):
    cfg = FuzzConfig(arch="all", workloads=3, schedules=2, seed=4)
    one = fuzz(cfg)
    two = fuzz(FuzzConfig(arch="all", workloads=3, schedules=2, seed=4, jobs=2))
    assert len(one.outcomes) == 3
    key = [(o.index, o.label, o.scenario, o.schedules, o.steps, o.kind) for o in one.outcomes]
    assert key == [(o.index, o.label, o.scenario, o.schedules, o.steps, o.kind)
                   for o in two.outcomes]
    assert [o.label for o in one.outcomes] == ["x86-pae", "arm", "powerpc"]


def test_a_variant_is_found_saved_and_replays(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    summary = tmp_path / "s.json"
    assert main(["fuzz", "--arch", "x86-pae", "--workloads", "3", "--schedules", "3",
                 "--variant", "missing_pte_unmap", "--seed", "1", "--quiet",
                 "--json", str(summary)]) == 1
    out = capsys.readouterr().out
    data = json.loads(summary.read_text())
    assert data["targets"]["x86-pae"]["first_hit"] == [1, 1]
    fail = data["failures"][0]
    assert fail["kind"] == "imbalance"
    toml, saved = Path(fail["scenario"]), Path(fail["failure"])
    assert toml.suffix == ".toml" and saved.with_suffix(".toml") == toml
    assert f"replay with: ptemu replay {saved}" in out
    # a plain scenario: explore finds the same failure, replay reproduces it
    assert scenario.load(toml).variants == ["missing_pte_unmap"]
    assert main(["replay", str(saved), "--trace", "1"]) == 1
    rep = capsys.readouterr()
    assert "imbalance" in rep.out and "warning" not in rep.err
    assert main(["explore", str(toml), "--schedules", "2", "--quiet", "--no-minimize"]) == 1


def test_a_variant_that_cannot_apply_says_so(capsys):
    assert main(["fuzz", "--arch", "x86-pae", "--workloads", "2", "--schedules", "1",
                 "--variant", "frag_shared_rcu_head", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "does not apply" in out and "fragments" in out


@pytest.mark.parametrize("argv", [["--arch", "vax"], ["--workloads", "0"], ["--schedules", "0"],
                                  ["--jobs", "0"], ["--variant", "nope"],
                                  ["--override", "missing.py:X"], ["--override", "nocolon"]])
def test_bad_fuzz_input_is_one_line_exit_2(argv, capsys):
    assert main(["fuzz", "--quiet", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ptemu: error:") and len(err.strip().splitlines()) == 1


def test_ci_smoke_every_arch(tmp_path, monkeypatch, capsys):
    """The bounded CI run: every arch and option, and the correct model clean."""
    monkeypatch.chdir(tmp_path)
    summary = tmp_path / "s.json"
    rc = main(["fuzz", "--arch", "all", "--workloads", "7", "--schedules", "5", "--seed", "1",
               "--quiet", "--json", str(summary)])
    data = json.loads(summary.read_text())
    assert set(data["targets"]) == {t.label for t in TARGETS}
    assert all(t["workloads"] == 1 and t["schedules"] >= 1 for t in data["targets"].values())
    assert data["failures"] == [] and data["clean"] and rc == 0


def _touches_stay_legal(text: str, target) -> None:
    """Every guest load/store of a workload goes where no call unmaps, truncates, moves
    or write-protects, within the file a mapping shares, or into the vCPU's own live
    mmap; unless its [[cpu]] says it may die of SIGSEGV."""
    from arch import get_arch
    from emu.scenario import eval_int
    a = get_arch(target.arch, **dict(target.options))
    names = {"page_size": a.page_size, "pmd_size": a.pmd_size, "cpus": 4}
    sc = scenario.parse(text, "w.toml")

    def ev(x):
        return eval_int(x, names, "w", "k")

    vmas = {v.name: (ev(v.start), ev(v.size), v) for v in sc.vmas}
    hit = set()  # VMAs (and the files they share) some call unmaps or truncates
    for p in sc.programs:
        for rec in p.calls:
            if rec[0] == "truncate" and (ev(rec[2]) < 0 or ev(rec[2]) % a.page_size):
                continue  # -EINVAL: truncates nothing
            if rec[0] == "mprotect" and rec[3] != 1:
                continue  # still writable, or -EINVAL: touches stay legal
            if rec[0] == "mremap":
                old, old_len, new_len, flags, new = (ev(x) for x in rec[1:6])
                if flags != 3 or old % a.page_size or new % a.page_size or not new_len \
                        or (old < new + new_len and new < old + old_len):
                    continue  # -EINVAL: nothing moves
            if rec[0] in ("munmap", "truncate", "mremap", "mprotect") and rec[1] != "text":
                addr = ev(rec[1])
                hit |= {n for n, (s, z, v) in vmas.items()
                        if (rec[0] == "truncate" and v.kind != "anon" and s <= addr < s + z)
                        or (rec[0] != "truncate" and addr < s + z and s < addr + ev(rec[2]))}
    hit |= {n for n, (_, _, v) in vmas.items() if v.share in hit}
    hit |= {vmas[n][2].share for n in hit if vmas[n][2].share}
    for p in sc.programs:
        if p.signal:
            continue  # it may die of SIGSEGV, as Linux would kill it
        own = None
        for rec in p.calls:
            if rec[0] == "mmap" and rec[3] in (0, 1, 2):
                own = (ev(rec[1]), ev(rec[2]))
            elif rec[0] == "munmap" and own and ev(rec[1]) == own[0]:
                own = None
            elif rec[0] in ("touch_read", "touch_write"):
                addr, count, stride = ev(rec[1]), rec[2], ev(rec[3])
                for va in range(addr, addr + count * stride, stride):
                    if own and own[0] <= va < own[0] + own[1]:
                        continue
                    home = [n for n, (s, z, _) in vmas.items() if s <= va < s + z]
                    assert home and home[0] not in hit, (rec, home)
                    s, z, v = vmas[home[0]]
                    end = min(z, vmas[v.share][1]) if v.share else z
                    assert va < s + end, (rec, "past the shared file's end")
                    assert rec[0] == "touch_read" or v.prot == "rw", rec


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.label)
def test_generated_touches_stay_where_linux_would_not_signal(target):
    for i in range(40):
        _touches_stay_legal(generate(target, workload_seed(3, i)), target)


def test_where_each_variant_can_show():
    """Each variant applies where the routine it changes runs (from the arch's own
    facts), so fuzz says 'does not apply' instead of reporting it clean."""
    from emu.fuzz import not_applicable
    where = {v: sorted(t.label for t in TARGETS
                       if not not_applicable(FuzzConfig(variants=(v,)), t))
             for v in ("no_lockless_sync", "plain_two_load_read", "frag_shared_rcu_head",
                       "s390_free_page_early", "free_before_flush", "pte_free_immediate",
                       "collapse_no_clear", "no_pmd_same_recheck")}
    everywhere = sorted(t.label for t in TARGETS)
    assert where == {
        "no_lockless_sync": ["x86-pae"], "plain_two_load_read": ["x86-pae"],
        "frag_shared_rcu_head": ["powerpc", "powerpc-hash"], "s390_free_page_early": ["s390"],
        "free_before_flush": ["arm"],
        "pte_free_immediate": [t for t in everywhere if t != "arm"],
        "collapse_no_clear": [t for t in everywhere if t != "arm"],
        # arm: no collapse, and adjust_pte holds the fault's own ptl (no split locks)
        "no_pmd_same_recheck": [t for t in everywhere if t != "arm"]}


def test_override_is_repeatable_and_lands_in_the_reproducer(tmp_path):
    """--override FILE:CLASS may be given more than once (issue 12 s1); the
    generated scenario names every one in [kernel] override, so the saved
    reproducer runs with the same overrides."""
    porter = Path(__file__).resolve().parent.parent / "guest" / "porter" / "flush_then_free.py"
    mixin = tmp_path / "mixin.py"
    mixin.write_text("class Quiet:\n    pass\n")
    specs = (f"{porter}:FlushThenFree", f"{mixin}:Quiet")
    cfg = FuzzConfig(arch="x86-pae", workloads=1, schedules=1, seed=3, overrides=specs)
    text = scenario_text(cfg, workload(cfg, 0))
    sc = scenario.parse(text, "w.toml")
    assert list(sc.override) == list(specs)
    Machine(sc)  # both load: the policy and the mixin
