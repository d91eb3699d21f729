"""mremap's variants (emu.kernel.mremap_variants): each caught on its shipped
scenario by PCT, the same scenario clean with the correct model; the
6fa1066fc5d0 version boundary; and zap's flush covering only what it cleared.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from emu import scenario
from emu.explore import explore
from emu.explore_config import ExploreConfig
from emu.machine import Machine

SCEN = Path(__file__).resolve().parent.parent / "guest" / "scenarios"
COLLAPSE, TRUNCATE = str(SCEN / "mremap_collapse.toml"), str(SCEN / "mremap_truncate.toml")


def found(path: str, arch: str | None = None, variants: tuple[str, ...] = (),
          schedules: int = 400) -> str | None:
    res = explore(ExploreConfig(path, arch=arch, variants=variants, strategy="pct",
                                schedules=schedules, minimize=False))
    return None if res.failure is None else f"{res.failure.kind}: {res.failure.message}"


@pytest.mark.parametrize("arch", ["x86-pae", "powerpc"])
def test_move_normal_pmd_no_recheck_makes_a_table_pointer_to_page_0(arch):
    got = found(COLLAPSE, arch, ("move_normal_pmd_no_recheck",))
    assert got is not None and got.startswith("wild-pointer") and "read 0x0" in got
    assert found(COLLAPSE, arch, schedules=60) is None


def test_before_6_12_the_correct_model_has_the_race(tmp_path):
    text = Path(COLLAPSE).read_text().replace("[machine]", '[kernel]\nversion = "6.11"\n\n[machine]')
    old = tmp_path / "mremap_collapse_6_11.toml"
    old.write_text(text)
    got = found(str(old))
    assert got is not None and got.startswith("wild-pointer")


def test_move_normal_pmd_no_recheck_does_not_apply_without_move_pmd():
    from arch import get_arch
    from emu.kernel.variants import known_variants
    v = known_variants()["move_normal_pmd_no_recheck"]
    assert v.not_applicable(get_arch("s390")) and v.not_applicable(get_arch("powerpc", mmu="hash"))
    assert v.not_applicable(get_arch("x86-pae")) is None


@pytest.mark.parametrize("arch", ["x86-pae", "s390"])
def test_move_ptes_flush_after_unlock_lets_truncate_free_a_page_still_in_a_tlb(arch):
    got = found(TRUNCATE, arch, ("move_ptes_flush_after_unlock",))
    assert got is not None and got.startswith("stale-tlb") and "freed" in got
    assert found(TRUNCATE, arch, schedules=60) is None


def test_zap_flushes_only_the_ptes_it_cleared():
    text = """
    [machine]
    arch = "x86-pae"
    cpus = 1
    [[vma]]
    start = 0x10000000
    size = "8 * page_size"
    populate = 2
    [[cpu]]
    program = "touch"
    args = [0x10000000, 1, 4096]
    """
    m = Machine(scenario.parse(textwrap.dedent(text), "<t>"))
    flushes: list[tuple[int, int]] = []
    real = m.kernel.tlb_flush
    m.kernel.tlb_flush = lambda s, e, mm=None: (flushes.append((s, e)), real(s, e, mm))
    k, ps, vma = m.kernel, 4096, m.mm.find_vma(0x10000000)
    m.run_kernel_now(k.zap_page_range(m.mm, vma, 0x10000000 + 4 * ps, 0x10000000 + 8 * ps), "z")
    assert flushes == []  # nothing was mapped there: an empty gather flushes nothing
    m.run_kernel_now(k.zap_page_range(m.mm, vma, 0x10000000, 0x10000000 + 8 * ps), "z")
    assert flushes == [(0x10000000, 0x10000000 + 2 * ps)]
