"""Which Linux release the model follows: `[kernel] version = "6.x"`.

Owns the list of modelled releases, parsing a version string, and the
boundaries where Linux changed something ptemu can observe. Each boundary
is named here once and tested by the routine (or arch) that differs:

- 6.2: x86-PAE writes whole 64-bit entries with one exchange in
  `ptep_get_and_clear`, `pmdp_get_and_clear` and `set_pmd` (Peter
  Zijlstra's "x86/mm/pae: Be consistent with pXXp_get_and_clear()", "Use
  WRITE_ONCE()", "Don't (ab)use atomic64"); before, get-and-clear was an
  xchg of the low word then a load and a store of the high word, and
  set_pmd a cmpxchg8b loop (set_64bit) (arch/x86_pae.py).
- 6.8: s390 gives each 2 KiB PTE table a whole 4 KiB page (d08d4e7cd6bf
  "s390/mm: use full 4KB page for 2KB PTE"); up to 6.7 two tables share a
  page (arch/s390.py).
- 6.12: mremap's `move_normal_pmd()` rechecks, under the pmd locks, that the
  old pmd still points to a table (6fa1066fc5d0, Jann Horn, "mm/mremap: fix
  move_normal_pmd/retract_page_tables race"); before, a table retracted
  between move_page_tables()' look and the locks left a new pmd made from
  an empty one (emu/kernel/mremap.py).
- 6.13: `pte_offset_map_ro_nolock()` / `_rw_nolock()` replace
  `pte_offset_map_nolock()` (seed 001); with them `collapse_pte_mapped_thp()`
  rechecks `pmd_same()` in steps 2 and 4 and arm's `adjust_pte()` rechecks
  it too. Before 6.13 those callers take the ptl and make no recheck.
- 6.14: MADV_DONTNEED reclaims empty PTE tables (mm/pt_reclaim.c,
  CONFIG_PT_RECLAIM). Linux selects it only on x86-64; ptemu models it on
  every arch as x86-64 has it, from 6.14 on, and not before.

The mm algorithms themselves are the seed series' (6.5/6.6 on): ptemu
models no mm before it, so an older version selects only the primitives
listed above (6.1 is "6.6's mm with 6.1's PAE entry writes").
"""

from __future__ import annotations

Version = tuple[int, int]

OLDEST: Version = (6, 1)
NEWEST: Version = (6, 14)
MODELLED: tuple[Version, ...] = tuple((6, n) for n in range(OLDEST[1], NEWEST[1] + 1))

# The arch boundaries (6.2, 6.8) are named in arch/x86_pae.py and arch/s390.py.
RW_NOLOCK = (6, 13)  # pte_offset_map_{ro,rw}_nolock and their pmd_same rechecks
PT_RECLAIM = (6, 14)  # empty PTE table reclaim after MADV_DONTNEED
MOVE_PMD_RECHECK = (6, 12)  # move_normal_pmd rechecks the old pmd under its locks (6fa1066fc5d0)


# What each boundary changes, for `ptemu list versions` (the code that acts
# on it names the boundary where it lives).
CHANGES: dict[Version, str] = {
    (6, 2): "x86-PAE get-and-clear and set_pmd: one 64-bit exchange (before: xchg low, then high)",
    (6, 8): "s390: one 2 KiB PTE table per 4 KiB page (before: two tables share a page)",
    MOVE_PMD_RECHECK: "mremap's move_normal_pmd rechecks the old pmd under its locks (6fa1066fc5d0)",
    RW_NOLOCK: "pte_offset_map_ro/rw_nolock: collapse and arm adjust_pte recheck pmd_same",
    PT_RECLAIM: "MADV_DONTNEED reclaims empty PTE tables (modelled on every arch)",
}


def fmt(v: Version) -> str:
    return f"{v[0]}.{v[1]}"


def modelled_names() -> str:
    return ", ".join(fmt(v) for v in MODELLED)


def parse_version(text: str) -> Version:
    """"6.12" -> (6, 12); ValueError naming the modelled versions otherwise."""
    parts = text.strip().split(".")
    try:
        v = (int(parts[0]), int(parts[1])) if len(parts) == 2 else None
    except ValueError:
        v = None
    if v not in MODELLED:
        raise ValueError(f"unknown Linux version {text!r}; modelled: {modelled_names()}")
    return v
