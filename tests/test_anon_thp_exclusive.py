"""An anon THP is born PageAnonExclusive (folio_add_new_anon_rmap with
RMAP_EXCLUSIVE, at the huge fault and at collapse), so fork gives the child a
copy of a page the parent has pinned and the parent keeps its pinned page.

Found by `ptemu fuzz --arch all --workloads 70 --schedules 50 --seed 2`
(workload 35, x86-pae): a THP split, pinned for write and forked reported
`gup-pin: pinned page lost` on the correct model, because the THP's folio
was never marked exclusive, so fork shared it and the parent's next write
copied it away from the pin.
"""

from __future__ import annotations

import pytest

from emu.explore import ExploreConfig, explore

SCENARIO = """
[machine]
arch = "{arch}"
cpus = 2
memory_mib = 64

[[vma]]
name = "thp"
start = "17 * pmd_size"
size = "pmd_size"
kind = "anon"
populate = 1
thp = true

[[cpu]]
calls = [
  {split}
  ["pin_user_pages", "17 * pmd_size + 40 * page_size", 4, 1],
  ["fork", 1],
  ["touch_write", "17 * pmd_size + 40 * page_size", 4, "page_size"],
]

[[cpu]]
child = "forked"
calls = [["touch_read", "17 * pmd_size", 4, "page_size"]]
"""


@pytest.mark.parametrize("split", [False, True], ids=["huge", "split"])
@pytest.mark.parametrize("arch", ["x86-pae", "s390"])
def test_fork_keeps_a_pinned_anon_thp_page_in_the_parent(tmp_path, arch, split):
    text = SCENARIO.format(arch=arch, split='["split_huge_pmd", "17 * pmd_size"],' if split else "")
    p = tmp_path / "pin_fork_thp.toml"
    p.write_text(text)
    res = explore(ExploreConfig(str(p), schedules=3, minimize=False))
    assert res.failure is None, res.failure.message
