"""Accounting truth: recount everything from the page tables themselves.

`audit()` walks the live tables from every process's root (Linux's view,
through the arch) and compares what it finds with the kernel model's books:
each mm's nr_ptes and rss per kind, every folio's mapcount and refcount
(page cache reference + mappings in every mm + pins), and the state of
every page-table frame. Used by tests and
by the accounting checker at quiescence.
"""

from __future__ import annotations

import struct
from collections import Counter
from typing import TYPE_CHECKING

from arch.base import Level
from emu.kernel.huge_memory import deposited_tables
from emu.physmem import FrameState, PhysMemError

if TYPE_CHECKING:
    from emu.kernel import Kernel
    from emu.kernel.mm import MM


def table_entries(k: Kernel, table: int, lv: Level) -> tuple[int, ...]:
    """Every entry of one table, read in one go (audits run outside the schedule)."""
    raw = k.mem.read(table, lv.table_bytes)
    fmt = {2: "H", 4: "I", 8: "Q"}.get(lv.entry_size)
    if fmt is None:
        n = lv.entry_size
        return tuple(int.from_bytes(raw[i:i + n], k.arch.byteorder) for i in range(0, len(raw), n))
    order = "<" if k.arch.byteorder == "little" else ">"
    return struct.unpack(f"{order}{lv.entries}{fmt}", raw)


def used_entries(k: Kernel, table: int, lv: Level) -> list[int]:
    """The entries of one table that are not the arch's empty entry (which is none)."""
    empty = k.arch.empty_entry(lv.name)
    if empty == 0:
        return list(filter(None, table_entries(k, table, lv)))  # the same, at C speed
    return [v for v in table_entries(k, table, lv) if v != empty]


def reachable_tables(k: Kernel, mm: MM | None = None) -> dict[str, list[int]]:
    """Physical addresses of every live table of `mm` (None: of every mm), by level
    (roots included)."""
    a = k.arch
    out: dict[str, list[int]] = {lv.name: [] for lv in a.levels}

    def visit(depth: int, table: int) -> None:
        lv = a.levels[depth]
        out[lv.name].append(table)
        if lv.name == "pte":
            return
        for val in used_entries(k, table, lv):
            if a.entry_none(lv.name, val) or not a.entry_present(lv.name, val):
                continue
            if lv.name == "pmd" and a.pmd_trans_huge(val):
                continue
            visit(depth + 1, a.table_pa(lv.name, val))

    for each in k.mms if mm is None else [mm]:
        if not each.dead:  # a freed mm has no tables left to walk
            visit(0, each.root)
    return out


def count_mappings(k: Kernel, mm: MM | None = None,
                   tables: dict[str, list[int]] | None = None) -> tuple[Counter, Counter]:
    """(mappings per folio, pages mapped per rss kind) found in the tables of `mm`
    (None: of every mm); `tables`: `reachable_tables(k, mm)`, if the caller has it."""
    a = k.arch
    maps: Counter = Counter()
    rss: Counter = Counter()
    if tables is None:
        tables = reachable_tables(k, mm)
    lv = a.level("pmd")
    for t in tables["pmd"]:
        for val in used_entries(k, t, lv):
            if a.pmd_trans_huge(val):
                folio = k.folio_of(a.pmd_huge_pa(val))
                maps[id(folio)] += 1
                if folio is not None:
                    rss[k.mm_counter_kind(folio)] += folio.nr_pages
            elif k.is_pmd_migration_entry(val):
                # a migration entry is no mapping, but its pages still count in rss
                folio = k.folio_of(a.swap_pmd_entry(val)[1] * a.page_size)
                if folio is not None:
                    rss[k.mm_counter_kind(folio)] += folio.nr_pages
    pl = a.level("pte")
    for t in tables["pte"]:
        for val in used_entries(k, t, pl):
            if a.pte_present(val) and not a.pte_none(val):
                folio = k.folio_of(a.pte_pa(val))
                maps[id(folio)] += 1
                if folio is not None:
                    rss[k.mm_counter_kind(folio)] += 1
            elif a.is_swap_pte(val):
                swp_type, offset = a.swap_pte_entry(val)
                if swp_type == 0:
                    rss["swap"] += 1  # MM_SWAPENTS
                    rss[("slot", offset)] += 1
                else:
                    folio = k.folio_of(offset * a.page_size)
                    if folio is not None and k.migration_pte_pfn(val) is not None:
                        rss[k.mm_counter_kind(folio)] += 1
    return maps, rss


def audit(k: Kernel, pins: int = 0) -> list[str]:
    """Every discrepancy between the books and the tables (empty: all exact)."""
    problems: list[str] = []
    several = len(k.mms) > 1
    maps: Counter = Counter()  # mappings of each folio, over every mm
    slots: Counter = Counter()  # swap ptes naming each swap slot, over every mm
    tables: dict[str, list[int]] = {}  # every mm's, for the frame checks below
    for mm in k.mms:
        # "mm" alone in a single-process machine, as the reports always said
        who = f"mm[{mm.name}]" if several else "mm"
        mm_tables = reachable_tables(k, mm)
        for level, lst in mm_tables.items():
            tables.setdefault(level, []).extend(lst)
        deposits = deposited_tables(mm)
        nr_ptes = len(set(mm_tables["pte"])) + len(deposits)
        if nr_ptes != mm.nr_ptes:
            problems.append(f"{who}.nr_ptes is {mm.nr_ptes} but {nr_ptes} PTE tables are reachable"
                            + (f" or deposited ({len(deposits)})" if deposits else ""))
        problems.extend(deposit_problems(k, mm, mm_tables, deposits, who))
        tables.setdefault("pte", []).extend(t for _home, t in deposits)
        mm_maps, rss = count_mappings(k, mm, mm_tables)
        maps.update(mm_maps)
        slots.update({key: n for key, n in rss.items() if isinstance(key, tuple)})
        if mm.swapents != rss.get("swap", 0):
            problems.append(f"{who}.swapents (MM_SWAPENTS) is {mm.swapents} but "
                            f"{rss.get('swap', 0)} swap ptes are in its tables")
        for kind in sorted(mm.rss):
            if mm.rss[kind] != rss.get(kind, 0):
                problems.append(f"{who + ' ' if several else ''}rss[{kind}] is {mm.rss[kind]} "
                                f"but {rss.get(kind, 0)} pages are mapped")
    if maps.get(id(None)):
        problems.append(f"{maps[id(None)]} entries map pages that belong to no folio")
    seen: set[int] = set()
    for pa in sorted(k.folios):
        folio = k.folios[pa]
        if id(folio) in seen:
            continue
        seen.add(id(folio))
        mapped = maps.get(id(folio), 0)
        if folio.mapcount != mapped:
            problems.append(f"{folio!r}: mapcount {folio.mapcount} but mapped {mapped} times")
        want = mapped + (1 if folio.in_cache else 0) + (folio.swap is not None)
        if pins == 0 and folio.refcount != want:
            problems.append(f"{folio!r}: refcount {folio.refcount}, expected {want} "
                            f"(mappings {mapped} + page cache {int(folio.in_cache)}"
                            f"{' + swap cache 1' if folio.swap is not None else ''})")
        if k.frames.info(folio.pa).state is not FrameState.DATA:
            problems.append(f"{folio!r} lives in a frame that is {k.frames.info(folio.pa).state.value}")
    problems += audit_swap(k, {key[1]: n for key, n in slots.items()})
    fs = k.frames.frame_size
    live = set()
    for name, lst in tables.items():
        nbytes = k.arch.level(name).table_bytes
        for t in lst:
            live.update(range(k.frames.frame_base(t), t + nbytes, fs))
    # what alloc_root allocated beside each top table (sparc64's TSBs)
    for mm in k.mms:
        if not mm.dead:
            live.update(range(k.frames.frame_base(mm.root), mm.root + k.arch.root_block_bytes(), fs))
    # Frame by frame in frame order; only table frames and reachable ones can be
    # wrong, so the loop over every frame does no more than compare a state.
    pgtable = FrameState.PGTABLE
    wrong: list[tuple[int, str]] = []
    for fi in k.frames.frames:
        if fi.state is not pgtable:
            continue
        pa = fi.pfn * fs
        # A frame shared by sub-tables may be held by its allocator with no live
        # table in it (powerpc's current pte_frag page): only whole-frame tables
        # and frames whose every sub-table is live must be reachable.
        managed = fi.subtables and any(st != "live" for st in fi.subtables.values())
        if pa not in live and not managed:
            wrong.append((fi.pfn, f"frame {pa:#x} is a {fi.level} table but unreachable and "
                                  "not RCU-pending"))
    for pa in live:
        try:
            fi = k.frames.info(pa)
        except PhysMemError:
            continue  # outside RAM: the walk and wild-pointer checkers say so
        if fi.state is not pgtable:
            wrong.append((fi.pfn, f"frame {pa:#x} is reachable as a table but is "
                                  f"{fi.state.value}"))
    problems.extend(msg for _pfn, msg in sorted(wrong))
    if k.mms and all(mm.dead for mm in k.mms):
        problems += leftovers(k)
    return problems


def audit_swap(k: Kernel, refs: dict[int, int]) -> list[str]:
    """The swap device's books against the tables: each slot's count is the number of
    swap ptes naming it (a slot no pte names leaked; a pte naming a free slot will
    read someone else's page), and the swap cache and SWAP_HAS_CACHE agree."""
    from emu.kernel.swap import SWAP_HAS_CACHE
    dev = getattr(k, "swap_device", None)
    if dev is None:
        return [f"{n} swap ptes name slot {off}, but there is no swap device"
                for off, n in sorted(refs.items())]
    out = []
    for off in sorted(set(refs) | set(dev.swap_map)):
        have, want = dev.count(off), refs.get(off, 0)
        if have != want:
            out.append(f"swap slot {off}: swap count {have} but {want} swap ptes name it"
                       + (" (a swap entry lost: the page it held is gone)" if want < have else
                          " (ptes name a freed slot)"))
        cached = bool(dev.swap_map.get(off, 0) & SWAP_HAS_CACHE)
        if cached != (off in dev.cache):
            out.append(f"swap slot {off}: SWAP_HAS_CACHE is {cached} but the swap cache "
                       f"{'holds' if off in dev.cache else 'has'} {dev.cache.get(off, 'no folio')}")
    for off, folio in sorted(dev.cache.items()):
        if folio.swap != off:
            out.append(f"swap cache slot {off} holds {folio!r}, whose swap slot is {folio.swap}")
    return out


def deposit_problems(k: Kernel, mm: MM, mm_tables: dict[str, list[int]],
                     deposits: list[tuple[int, int]], who: str) -> list[str]:
    """Every anon huge pmd (every huge pmd where arch_needs_pgtable_deposit) has one
    deposited PTE table and every deposit belongs to one (v6.12
    pgtable_trans_huge_deposit's pairing): counted per pmd_huge_pte home."""
    a = k.arch
    if not a.supports_huge_pmd():
        return []
    want: Counter = Counter()
    lv = a.level("pmd")
    for t in mm_tables["pmd"]:
        for i, val in enumerate(table_entries(k, t, lv)):
            if val == a.empty_entry("pmd") or not a.pmd_trans_huge(val):
                continue
            folio = k.folio_of(a.pmd_huge_pa(val))
            if k.thp_deposits_for(folio):
                pmd_pa = t + i * lv.entry_size
                want[k.thp_deposit_home(mm, pmd_pa, i << lv.shift)] += 1
    have = Counter(home for home, _t in deposits)
    out = []
    for home in sorted(set(want) | set(have)):
        if want[home] != have[home]:
            where = "mm->pmd_huge_pte" if home < 0 else f"the pmd_huge_pte of {home:#x}"
            out.append(f"{who}: {have[home]} PTE tables deposited at {where} for "
                       f"{want[home]} anon huge pmds (a deposit leaked or lost)")
    return out


def leftovers(k: Kernel) -> list[str]:
    """Once every process has exited: what the allocator still has out beyond the page
    cache's folios (each file keeps its pages after its last mapping goes)."""
    cached = set()
    for folio in k.folios.values():
        if folio.in_cache:
            cached.update(range(k.frames.pfn_of(folio.pa), k.frames.pfn_of(folio.pa) + folio.nr_pages))
    out = []
    for fi in k.frames.frames:
        if fi.state in (FrameState.FREE, FrameState.RESERVED) or fi.pfn in cached:
            continue
        out.append(f"frame {fi.pfn * k.frames.frame_size:#x} ({fi.purpose}) is still "
                   f"{fi.state.value} after every process exited")
    dev = getattr(k, "swap_device", None)
    if dev is not None and dev.swap_map:
        out.append(f"swap slots {sorted(dev.swap_map)} still in use after every process exited")
    return out


def safe_audit(k: Kernel) -> list[str]:
    try:
        return audit(k)
    except PhysMemError as exc:
        return [f"tables point outside RAM: {exc}"]
