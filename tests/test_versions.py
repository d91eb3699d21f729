"""`[kernel] version`: parsing, the default, and what each version boundary selects.

The x86-PAE primitives per version are tested in test_pae_versions.py and
s390's table layout in test_s390.py; here: the scenario key and its errors,
the kernel's comparable version, and the kernel-side boundaries (6.13's
pmd_same rechecks, 6.14's empty-table reclaim) on the shipped scenarios
that rely on them.
"""

from __future__ import annotations

import textwrap

import pytest

from emu import scenario
from emu.cli import main
from emu.explore import ExploreConfig, explore
from emu.kernel.version import MODELLED, NEWEST, parse_version
from emu.machine import Machine
from emu.testing import Interleaving

BASE = 0x1000_0000


def text(version: str | None, arch: str = "x86-pae", options: str = "") -> str:
    kernel = f'[kernel]\nversion = "{version}"\n' if version is not None else ""
    return textwrap.dedent(f"""
    [machine]
    arch = "{arch}"
    cpus = 2
    memory_mib = 32
    {options}
    {kernel}
    [[vma]]
    start = {BASE}
    size = "pmd_size"
    kind = "shmem"
    populate = 4

    [[cpu]]
    program = "touch"
    args = [{BASE}, 1, 4096]
    """)


def test_the_default_is_the_newest_modelled_and_the_kernel_carries_a_comparable_version():
    sc = scenario.parse(text(None))
    assert sc.version == NEWEST == MODELLED[-1] and not sc.version_given
    m = Machine(sc)
    assert m.kernel.version == NEWEST and m.arch.kernel_version == NEWEST
    m = Machine(scenario.parse(text("6.1")))
    assert m.kernel.version == (6, 1) < (6, 2) and m.arch.kernel_version == (6, 1)
    assert parse_version("6.12") == (6, 12)


@pytest.mark.parametrize("bad", ["6.0", "5.15", "6.15", "7.1", "six", "6", "6.2.1", ""])
def test_an_unmodelled_version_is_a_one_line_error_listing_the_modelled_ones(bad, tmp_path, capsys):
    f = tmp_path / "s.toml"
    f.write_text(text(bad))
    assert main(["run", str(f)]) == 2
    err = capsys.readouterr().err
    assert "kernel.version" in err and "6.1, 6.2" in err and "6.14" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_version_that_is_not_a_string_is_refused():
    with pytest.raises(scenario.ScenarioError, match="kernel.version: expected str"):
        scenario.parse(text(None).replace("[[vma]]", "[kernel]\nversion = 6.14\n[[vma]]", 1))


def test_an_s390_layout_contradicting_the_version_is_a_clean_error(tmp_path, capsys):
    f = tmp_path / "s.toml"
    f.write_text(text("6.12", arch="s390", options='[arch_options]\npgtable = "halves"\n'))
    assert main(["run", str(f)]) == 2
    err = capsys.readouterr().err
    assert "arch_options" in err and "contradicts" in err and "Traceback" not in err
    ok = scenario.parse(text("6.7", arch="s390", options='[arch_options]\npgtable = "halves"\n'))
    assert Machine(ok).kernel.policy.name == "halves"
    assert Machine(scenario.parse(text("6.7", arch="s390"))).kernel.policy.name == "halves"
    assert Machine(scenario.parse(text("6.8", arch="s390"))).kernel.policy.name == "full-page"


@pytest.mark.parametrize("version,reclaims", [("6.13", False), ("6.14", True)])
def test_madvise_dontneed_reclaims_the_empty_table_only_from_6_14(version, reclaims):
    m = Machine(scenario.parse(text(version)))
    k = m.kernel
    pmd_pa = m.run_kernel_now(k.pmd_offset_alloc(m.mm, BASE, alloc=False), "pmd")
    assert k.read_entry_now(pmd_pa, 8) != 0
    il = Interleaving(m)
    il.start(0, k.madvise_dontneed(m.mm, BASE, BASE + m.arch.pmd_size))
    il.finish()
    assert il.tasks[0].result == 0
    assert (k.read_entry_now(pmd_pa, 8) == 0) == reclaims
    assert (m.mm.nr_ptes == 0) == reclaims


@pytest.mark.parametrize("version,rechecks", [("6.12", False), ("6.13", True)])
def test_rw_nolock_callers_recheck_pmd_same_from_6_13(version, rechecks):
    """collapse_pte_mapped_thp() step 2 rereads the pmd under the ptl only from
    6.13 (pte_offset_map_rw_nolock); before, pte_offset_map_nolock() callers
    made no recheck."""
    m = Machine(scenario.parse(text(version).replace('populate = 4', 'populate = 2\nthp = true\n'
                                                     'pmd_mapping = false')))
    k = m.kernel
    il = Interleaving(m)
    il.start(0, k.collapse_pte_mapped_thp(m.mm, BASE, False))
    il.finish()
    assert il.tasks[0].result == 1  # SCAN_SUCCEED
    # one pmdp_get_lockless() ends with the re-read of the low half: the
    # lookups (twice), pte_offset_map_lock (map + recheck) and step 2's map;
    # from 6.13 also the pmd_same rereads of steps 2 and 4
    reads = [line for line in il.log if "pmdp_get_lockless re-read low" in line]
    assert len(reads) == 5 + (2 if rechecks else 0), il.log


@pytest.mark.parametrize("version,found", [("6.13", False), ("6.14", True)])
def test_collapse_dontneed_needs_the_reclaim_of_6_14(version, found):
    """The shipped collapse_dontneed scenario names 6.14: its variant is a race
    with the empty-table reclaim, which older versions do not have."""
    sc = scenario.load("collapse_dontneed")
    assert sc.version == (6, 14) and sc.version_given
    path = scenario.SCENARIOS / "collapse_dontneed.toml"
    alt = path.read_text().replace('version = "6.14"', f'version = "{version}"')
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        f = f"{d}/collapse_dontneed.toml"
        open(f, "w").write(alt)
        res = explore(ExploreConfig(f, variants=("no_pmd_same_recheck",), strategy="pct",
                                    schedules=60, seed=0, minimize=False))
    assert (res.report is not None) == found


def test_list_versions_names_every_modelled_release_and_its_changes(capsys):
    assert main(["list", "versions"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == [f"{a}.{b}" for a, b in MODELLED]
    assert "(default)" in out[-1] and "exchange" in out[1] and "reclaims" in out[-1]


@pytest.mark.parametrize("version", ["6.1", "6.14"])
def test_torn_pae_tears_on_both_sides_of_the_6_2_boundary(version, tmp_path):
    """The shipped torn_pae scenario at either version: the plain two-load
    read is found torn, pmdp_get_lockless() stays clean (PCT, same seeds)."""
    path = scenario.SCENARIOS / "torn_pae.toml"
    f = tmp_path / "torn_pae.toml"
    f.write_text(path.read_text().replace("[machine]", f'[kernel]\nversion = "{version}"\n\n[machine]'))
    # the exhaustive search the torn-pae demo runs (PCT needs ~600 schedules here)
    bug = explore(ExploreConfig(str(f), variants=("plain_two_load_read",), strategy="exhaustive",
                                schedules=400, minimize=False))
    assert bug.report is not None and bug.report.kind == "torn-read"
    ok = explore(ExploreConfig(str(f), strategy="pct", schedules=100, seed=0, minimize=False))
    assert ok.report is None


def test_fuzz_covers_both_s390_layouts_whatever_the_default_version():
    from arch import get_arch
    from emu.fuzz_gen import targets_for
    layouts = [get_arch(t.arch, **dict(t.options)).pgtable_policy for t in targets_for("s390")]
    assert layouts == ["halves", "full-page"]


@pytest.mark.parametrize("version,mapped", [("6.12", False), ("6.13", True)])
def test_collapse_keeps_the_table_mapped_until_step_4_from_6_13(version, mapped):
    """Seed 001 v4 moved collapse_pte_mapped_thp()'s pte_unmap() from the end of
    step 2 to the end of step 4: from 6.13 the RCU read lock of the map covers
    step 4's spin_lock_nested() of the table's ptl; 6.12 had already dropped it."""
    from emu.kernel import steps as s
    m = Machine(scenario.parse(text(version).replace('populate = 4', 'populate = 2\nthp = true\n'
                                                     'pmd_mapping = false')))
    k = m.kernel
    il = Interleaving(m)
    il.start(0, k.collapse_pte_mapped_thp(m.mm, BASE, False))
    il.run_until(0, lambda op: isinstance(op, s.SpinLock) and op.nested)
    assert k.cpus[0].rcu_nesting == (1 if mapped else 0)
    il.finish()
    assert il.tasks[0].result == 1  # SCAN_SUCCEED
    assert k.cpus[0].rcu_nesting == 0 and not k.cpus[0].held
