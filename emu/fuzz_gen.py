"""The `ptemu fuzz` workload generator: random multi-vCPU scenarios as TOML text.

Owns the fuzz targets (every arch and arch option: x86-pae, arm, powerpc radix
and hash, s390 halves and full-page, sparc64) and turning one seeded RNG into
one shipped-format scenario: 2-4 vCPUs, a few VMAs of every kind and size
(anon, shmem, file; unpopulated, partly or fully populated, PMD-mapped THP,
`pmd_mapping = false`, a second mapping of another VMA's file), and on each
vCPU a call list (guest/calls.py) over every hypercall with arguments that
are mostly valid and sometimes hostile (misaligned, out of range, unmapped,
huge counts, unknown numbers and advice). Some file mappings are MAP_PRIVATE,
some workloads fork a parked child and some pin pages (`_fork_and_pin_calls`).

What the generator keeps legal, because Linux would kill the guest the same
way (a SIGSEGV or SIGBUS is the program's bug, not the kernel's): guest loads
and stores (`touch_read` / `touch_write`) only go to VMAs nobody unmaps or
truncates ("stable" VMAs, and a vCPU's own mmap between its mmap and its
munmap); munmap, truncate, mremap and mprotect to read-only only go to the
others ("volatile" VMAs); no range a hostile call names covers a stack or a
program's text. Everything else is fair game for every vCPU at once. The
exceptions die as Linux kills them, with `signal = "SIGSEGV"` on their
[[cpu]]: a vCPU that munmaps its own text, and the workloads built around
one range another vCPU moves with mremap (every vCPU of those).

Determinism: `generate(target, seed)` uses only its own `random.Random`; the
text depends on nothing else (no hash order, no clock).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

from arch import get_arch
from emu import abi
from emu.explore import sub_seed
from emu.services import GUP_MAX_PAGES, MADV_COLLAPSE, MADV_DONTNEED


@dataclass(frozen=True)
class Target:
    """One arch with one set of arch options: a column of the fuzz summary."""

    label: str
    arch: str
    options: tuple[tuple[str, str], ...] = ()


TARGETS: tuple[Target, ...] = (
    Target("x86-pae", "x86-pae"),
    Target("arm", "arm"),
    Target("powerpc", "powerpc"),
    Target("powerpc-hash", "powerpc", (("mmu", "hash"),)),
    # halves said explicitly: the default layout follows the newest version (6.8+: full page)
    Target("s390", "s390", (("pgtable", "halves"),)),
    Target("s390-full-page", "s390", (("pgtable", "full-page"),)),
    Target("sparc64", "sparc64"),
)


def targets_for(name: str) -> list[Target]:
    """`all`, an arch name (all of its options), or one target label."""
    if name == "all":
        return list(TARGETS)
    picked = [t for t in TARGETS if t.arch == name] or [t for t in TARGETS if t.label == name]
    if not picked:
        known = ", ".join(["all", *dict.fromkeys([t.arch for t in TARGETS] + [t.label for t in TARGETS])])
        raise ValueError(f"unknown fuzz arch {name!r} (known: {known})")
    return picked


def workload_seed(seed: int, index: int) -> int:
    """The seed of workload `index`: a hash of (seed, index), as explore's schedules."""
    return sub_seed(seed, index)


# ---- the address-space plan ------------------------------------------------------------

SLOT_PMDS = 3  # each VMA (and each vCPU's mmap area) owns 3 PMD ranges
FIRST_SLOT = 8  # in PMDs: above every arch's text, below every arch's stacks
OUT_PMD = 4  # the GUP-fast output buffer


@dataclass
class Vma:
    name: str
    kind: str
    start_pages: int  # offset of the start from the slot base, in pages
    size_pages: int
    slot: int
    prot: str = "rw"
    populate: bool | int = False
    thp: bool = False
    pmd_mapping: bool = True
    share: str = ""
    stable: bool = True  # touched by guests; never unmapped or truncated
    private: bool = False  # shmem/file MAP_PRIVATE (see _fork_and_private)


@dataclass
class Region:
    """A range the calls may name: a VMA of the scenario, or a vCPU's mmap area."""

    start: str  # expression
    start_b: int  # in bytes, for arithmetic
    size_b: int
    kind: str
    writable: bool
    stable: bool
    vma: Vma | None = None
    touch_b: int = -1  # how far guest loads and stores may go (the file's end); -1: size_b

    def __post_init__(self) -> None:
        if self.touch_b < 0:
            self.touch_b = self.size_b


@dataclass
class Plan:
    target: Target
    page: int
    pmd: int
    va_bits: int
    word: int
    cpus: int
    vmas: list[Vma] = field(default_factory=list)
    out_pages: int = 1
    thp: bool = True  # the arch has PMD-sized pages (arm 2-level has none)
    # vCPUs whose program may die of SIGSEGV ([[cpu]] signal): it munmaps its own
    # text, or touches a range another vCPU moves away (_remap_calls, mremap focus)
    signalled: set[int] = field(default_factory=set)
    child: list[list] | None = None  # a forked child's call list (its vCPU comes last)

    def slot_base(self, slot: int) -> int:
        return (FIRST_SLOT + SLOT_PMDS * slot) * self.pmd

    def expr(self, nbytes: int) -> str | int:
        """Bytes as an expression over pmd_size and page_size (one scenario, any arch)."""
        if nbytes == 0:
            return 0
        pmds, rest = divmod(nbytes, self.pmd)
        pages, tail = divmod(rest, self.page)
        parts = []
        if pmds:
            parts.append("pmd_size" if pmds == 1 else f"{pmds} * pmd_size")
        if pages:
            parts.append("page_size" if pages == 1 else f"{pages} * page_size")
        if tail:
            parts.append(str(tail))
        return " + ".join(parts)


# ---- generation ------------------------------------------------------------------------


def generate(target: Target, seed: int) -> str:
    """One random workload for `target` as scenario TOML (the same text for the same seed)."""
    rng = random.Random(seed)
    a = get_arch(target.arch, **dict(target.options))
    contended = rng.random() < CONTENDED
    cpus = rng.randint(2, 3) if contended else rng.randint(2, 4)
    plan = Plan(target, a.page_size, a.pmd_size, a.va_bits, a.word_size, cpus)
    plan.thp = a.supports_huge_pmd()
    _plan_vmas(rng, plan, contended)
    # fork and private mappings, and anon THP, draw from RNGs of their own: the
    # rest of a workload is what it was before they existed
    extra = random.Random(sub_seed(seed, 0xF02C))
    _private_vmas(extra, plan)
    thp_rng = random.Random(f"anon-thp:{seed}")
    _anon_thp_vmas(thp_rng, plan)
    regions = _regions(plan)
    lists = None
    if contended:
        lists = _anon_thp_contended(thp_rng, plan, regions)
        if lists is None:
            lists = _contended_calls(rng, plan, regions)
    else:
        lists = [_calls(rng, plan, regions, cpu) + _anon_thp_calls(thp_rng, plan, regions)
                 for cpu in range(plan.cpus)]
    _fork_and_pin_calls(extra, plan, regions, lists)
    return _toml(plan, lists, seed)


# A share of the workloads is built around one contended PMD range: one vCPU
# frees, retracts, collapses, zaps, truncates or unmaps what it maps while the
# others walk it (faults and the hardware walker, GUP-fast, fault-around, the
# ptl takers of a one-page zap, a second khugepaged pass). A race needs both
# sides in the same range at once, and PCT places its few priority changes
# uniformly over a run's steps: random lists over several VMAs rarely meet, and
# long ones make every window a small share of the run. So these lists are short.
CONTENDED = 0.5


CANDIDATES = 2  # the first VMAs: collapse candidates the calls favour (see _calls)


def _plan_vmas(rng: random.Random, plan: Plan, contended: bool = False) -> None:
    """2-4 VMAs. The first two are collapse candidates, PMD-aligned shmem/file
    ranges of whole PMDs (what khugepaged, MADV_COLLAPSE and retract act on; the
    second is one guests may not touch but calls may truncate or unmap); the
    others are of any kind, size and alignment. In a contended workload the
    candidates are populated and more often hold a PTE-mapped large folio (what
    collapse_pte_mapped_thp removes a table under)."""
    ppmd = plan.pmd // plan.page
    nvma = rng.randint(2, 4)
    for i in range(nvma):
        candidate = i < CANDIDATES
        kind = rng.choice(["shmem", "file"]) if candidate else \
            rng.choices(["anon", "shmem", "file"], [2, 3, 3])[0]
        if not candidate and contended and rng.random() < 0.7:
            # a few pages alone in their PMD range: a short zap, and munmap frees the table
            off, size = rng.choice([0, rng.randint(1, 8)]), rng.randint(1, 8)
        elif candidate or rng.random() < 0.5:
            off, size = 0, ppmd * rng.choice([1, 1, 1, 2])
        else:
            off = rng.choice([0, 0, rng.randint(1, 8)])
            size = rng.choice([rng.randint(1, 8), ppmd, ppmd - rng.randint(1, 4),
                               ppmd + rng.randint(1, 8), 2 * ppmd])
        v = Vma(f"v{i}", kind, off, size, i)
        # contended: more volatile VMAs, for munmap and truncate to race the walkers
        p_stable = (0.5 if contended else 0.6) if i > 1 else (0.2 if contended else 0.3)
        v.stable = i == 0 or rng.random() < p_stable
        if not candidate and rng.random() < 0.15 and kind != "anon":
            v.prot = "r"
        pop = rng.random()
        if pop < (0.2 if candidate else 0.35) and not (candidate and contended):
            v.populate = False
        elif pop < 0.5 and size <= 64:
            v.populate = True
        else:
            v.populate = rng.randint(1, min(size, 16))
        if kind != "anon":
            p_thp = (0.8 if contended else 0.6) if candidate else 0.3
            v.thp = off == 0 and size >= ppmd and rng.random() < p_thp \
                and plan.thp  # no THP on arm 2-level: thp = true is refused
            # PTE-mapped (what collapse_pte_mapped_thp and retract act on) more often
            v.pmd_mapping = rng.random() < ((0.25 if contended else 0.4) if candidate else 0.6)
            earlier = [w for w in plan.vmas if w.kind == kind and not w.share]
            if not candidate and earlier and rng.random() < 0.3:
                w = rng.choice(earlier)
                v.share = w.name
                v.thp = False
                v.stable = w.stable  # one file: truncating it reaches both mappings
        plan.vmas.append(v)


def _private_vmas(rng: random.Random, plan: Plan) -> None:
    """Some second mappings of a file become MAP_PRIVATE: reads share the page cache
    with the other mapping, writes copy (an anon_vma, which retract_page_tables and
    fork's vma_needs_copy look at)."""
    for i, v in enumerate(plan.vmas):
        if v.kind != "anon" and i >= CANDIDATES and rng.random() < (0.5 if v.share else 0.3):
            v.private = True


def _fork_and_pin_calls(rng: random.Random, plan: Plan, regions: list[Region],
                        lists: list[list[list]]) -> None:
    """fork and FOLL_PIN pins, added to lists already made: a vCPU (there is room for
    one more) forks a parked child at a random point of its list, the child walking
    and writing the stable regions (COW of what fork shared) and now and then
    scanning a candidate (retract reaches the child's VMAs through i_mmap); a vCPU
    pins a few pages of a writable stable region, writes them and unpins."""
    page = plan.page
    # what fork copies and COW shares: anon memory and private file mappings
    writable = [r for r in regions if r.stable and r.writable
                and (r.kind == "anon" or (r.vma is not None and r.vma.private))]
    if not writable:  # the GUP output buffer: anon, populated, nobody unmaps it
        out = OUT_PMD * plan.pmd
        writable = [Region(plan.expr(out), out, _out_pages(plan) * page, "anon", True, True)]
    pinner = rng.randrange(len(lists))
    pin_at = None  # where the pinner's pin ends in its list
    if rng.random() < 0.3 and writable:
        r = rng.choice(writable)
        n = max(1, min(4, r.touch_b // page))
        first = rng.randrange(0, r.touch_b // page - n + 1)
        addr = r.start_b + first * page
        calls = lists[pinner]
        at = rng.randint(0, len(calls))
        # written first, as a DMA buffer is: FOLL_PIN | FOLL_WRITE of the fast path
        # needs present writable ptes (the rest is slow GUP's, not modelled)
        calls[at:at] = [["touch_write", _at(plan, addr), n, plan.expr(page)],
                        ["pin_user_pages", _at(plan, addr), n, 1],
                        ["touch_write", _at(plan, addr), n, plan.expr(page)],
                        ["pin_user_pages", 0, 0, 0]]
        pin_at = at + 2
    _uffd_private_and_retract(rng, plan, regions, lists)
    if plan.cpus >= 4 or rng.random() >= 0.35:
        return
    if pin_at is not None and rng.random() < 0.5:
        # the pinner forks with its pages pinned (a DMA user calling fork): fork must
        # copy them for the child, or the write after it copies them away from the pins
        lists[pinner].insert(pin_at, ["fork", plan.cpus])
    else:
        # another vCPU than the pinner's, where there is one: fork racing the pin
        forker = rng.choice([i for i in range(len(lists)) if i != pinner] or [pinner])
        parent = lists[forker]
        parent.insert(rng.randint(0, len(parent)), ["fork", plan.cpus])
    stable = [r for r in regions if r.stable]
    child: list[list] = []
    for _ in range(rng.randint(1, 3)):
        r = rng.choice(stable)
        op = rng.choice(["touch_read", "touch_write", "gup_fast", "madvise_dontneed",
                         "khugepaged_scan"] if plan.thp else
                        ["touch_read", "touch_write", "gup_fast", "madvise_dontneed"])
        if op == "touch_write" and not r.writable:
            op = "touch_read"
        pages = max(1, min(r.touch_b, 4 * page) // page)
        if op.startswith("touch"):
            child.append([op, _at(plan, r.start_b), pages, plan.expr(page)])
        elif op == "gup_fast":
            child.append([op, _at(plan, r.start_b), pages, plan.expr(OUT_PMD * plan.pmd), 0])
        elif op == "madvise_dontneed":
            child.append(["madvise", _at(plan, r.start_b), plan.expr(pages * page), MADV_DONTNEED])
        else:
            child.append([op, _at(plan, _focus_pmd(plan, r)[0])])
    plan.child = child


def _uffd_private_and_retract(rng: random.Random, plan: Plan, regions: list[Region],
                              lists: list[list[list]]) -> None:
    """Now and then UFFDIO_COPY into a private mapping of a candidate's file while
    another vCPU runs khugepaged over the candidate: mfill_atomic() gives the VMA an
    anon_vma and maps an anon page, which retract_page_tables() must see under its
    ptl."""
    if not plan.thp or len(lists) < 2 or rng.random() >= 0.25:
        return
    by_name = {r.vma.name: r for r in regions if r.vma is not None}
    privs = [r for r in regions if r.vma is not None and r.vma.private and r.vma.share
             and int(by_name[r.vma.share].vma.name[1:]) < CANDIDATES]
    if not privs:
        return
    r = rng.choice(privs)
    cand = by_name[r.vma.share]
    dst = r.start_b + rng.randrange(0, max(1, r.touch_b // plan.page)) * plan.page
    a, b = rng.sample(range(len(lists)), 2)
    lists[a] += [["uffdio_register", _at(plan, r.start_b), plan.expr(r.size_b), 1],
                 ["uffdio_copy", _at(plan, dst), plan.expr(OUT_PMD * plan.pmd),
                  plan.expr(plan.page)]]
    lists[b].insert(rng.randint(0, len(lists[b])), ["khugepaged_scan",
                                                     _at(plan, _focus_pmd(plan, cand)[0])])


def _regions(plan: Plan) -> list[Region]:
    out = []
    by_name = {v.name: v for v in plan.vmas}
    for v in plan.vmas:
        start = plan.slot_base(v.slot) + v.start_pages * plan.page
        size = v.size_pages * plan.page
        # a second mapping maps the file from page 0: past the file's end a
        # guest access is SIGBUS in Linux (SIGSEGV here), so touches stop there
        touch = min(size, by_name[v.share].size_pages * plan.page) if v.share else size
        out.append(Region(plan.expr(start), start, size, v.kind, v.prot == "rw", v.stable, v,
                          touch))
    return out


HOSTILE = 0.12  # share of calls with a hostile argument
NR_UNKNOWN = (11, 37, 0x1000, 0xFFFF)


def _pick(rng: random.Random, regions: list[Region]) -> Region:
    """A region for a call: the collapse candidates more often than the rest, so
    calls on different vCPUs meet on the same PMD ranges."""
    cands = [r for r in regions if r.vma is not None and int(r.vma.name[1:]) < CANDIDATES]
    if cands and rng.random() < 0.6:
        return rng.choice(cands)
    return rng.choice(regions)


def _calls(rng: random.Random, plan: Plan, regions: list[Region], cpu: int) -> list[list]:
    """One vCPU's call list: a random sequence over every hypercall."""
    page, pmd = plan.page, plan.pmd
    own_slot = len(plan.vmas) + cpu
    own_base = plan.slot_base(own_slot)
    own: Region | None = None  # this vCPU's mmap, while it is mapped
    out_addr = plan.expr(OUT_PMD * pmd)
    calls: list[list] = []
    # weights: the kernel paths that free tables and their racing walkers first
    ops = ["touch_read", "touch_write", "khugepaged_scan", "madvise_collapse",
           "madvise_dontneed", "gup_fast", "fault_around", "truncate", "munmap", "mmap",
           "rcu_barrier", "getcpu", "log", "unknown"]
    weights = [8, 6, 6, 5, 6, 6, 3, 3, 2, 3, 2, 0.5, 0.5, 0.5]
    # short lists too: the fewer steps, the likelier a PCT change lands in a window
    n = rng.randint(1, 3) if rng.random() < 0.3 else rng.randint(2, 8)
    while len(calls) < n:
        op = rng.choices(ops, weights)[0]
        hostile = rng.random() < HOSTILE
        live = regions + ([own] if own is not None else [])
        if op in ("touch_read", "touch_write"):
            cands = [r for r in live if r.stable and (op == "touch_read" or r.writable)]
            if not cands:
                continue
            r = _pick(rng, cands)
            addr, length = _subrange(rng, plan, replace(r, size_b=r.touch_b))
            count = rng.randint(1, 8)
            stride = max(page, (length // count) // page * page)
            count = min(count, max(1, length // stride))
            calls.append([op, _at(plan, addr), count, plan.expr(stride)])
        elif op == "khugepaged_scan":
            r = _pick(rng, live)
            addr = r.start_b + rng.randrange(0, r.size_b, page)
            if not hostile:
                addr -= addr % pmd if addr - addr % pmd >= r.start_b else 0
            calls.append([op, _hostile_addr(rng, plan, addr) if hostile else _at(plan, addr)])
        elif op in ("madvise_collapse", "madvise_dontneed"):
            r = _pick(rng, live)
            # DONTNEED over whole PMD ranges half the time: that is when the
            # emptied table is reclaimed (and races collapse and walkers)
            addr, length = _subrange(rng, plan, r, pmd_aligned=op == "madvise_collapse"
                                     or rng.random() < 0.5)
            advice = MADV_COLLAPSE if op == "madvise_collapse" else MADV_DONTNEED
            if hostile:
                which = rng.randrange(4)
                if which == 0:
                    advice = rng.choice([0, 1, 14, 100])
                elif which == 1:
                    calls.append(["madvise", _hostile_addr(rng, plan, addr), plan.expr(length),
                                  advice])
                    continue
                elif which == 2:
                    length = (1 << plan.va_bits) - page
                else:
                    length += 1
            calls.append(["madvise", _at(plan, addr), _len(plan, length), advice])
        elif op == "gup_fast":
            r = _pick(rng, live)
            addr, length = _subrange(rng, plan, r)
            nr = max(1, length // page)
            write = int(r.writable and rng.random() < 0.5)
            out: str | int = out_addr
            if hostile:
                which = rng.randrange(4)
                if which == 0:
                    nr = rng.choice([0, GUP_MAX_PAGES + 1, 1 << 20])
                elif which == 1:
                    out = plan.expr(plan.slot_base(own_slot) + 2 * pmd)  # never mapped
                elif which == 2:
                    write = 1
                else:
                    calls.append([op, _hostile_addr(rng, plan, addr), nr, out, write])
                    continue
            calls.append([op, _at(plan, addr), nr, out, write])
        elif op == "fault_around":
            r = _pick(rng, live)
            addr = r.start_b + rng.randrange(0, r.size_b, page)
            calls.append([op, _hostile_addr(rng, plan, addr) if hostile else _at(plan, addr)])
        elif op == "truncate":
            cands = [r for r in regions if not r.stable and r.kind != "anon"]
            if hostile:
                # -EINVAL whatever it names: a size off the page grain, a negative
                # size, or an address with no file behind it
                r = rng.choice(live)
                which = rng.randrange(3)
                if which == 0:
                    calls.append([op, _at(plan, r.start_b), plan.expr(page + 1)])
                elif which == 1:
                    calls.append([op, _at(plan, r.start_b), -page])
                else:
                    anon = [x for x in live if x.kind == "anon"]
                    where = anon[0].start_b if anon else own_base + 2 * pmd
                    calls.append([op, _at(plan, where), 0])
                continue
            if not cands:
                continue
            r = _pick(rng, cands)
            size = rng.choice([0, page, r.size_b // 2 // page * page, r.size_b, r.size_b + pmd])
            calls.append([op, _at(plan, r.start_b), _len(plan, size)])
        elif op == "munmap":
            cands = [r for r in regions if not r.stable]
            if own is not None and rng.random() < 0.6:
                calls.append([op, _at(plan, own.start_b), plan.expr(own.size_b)])
                own = None
                continue
            if hostile or not cands:
                which = rng.randrange(3)
                if which == 0:  # a hole in this vCPU's own area: nothing to unmap
                    calls.append([op, _at(plan, own_base + 2 * pmd), plan.expr(page)])
                elif which == 1:
                    calls.append([op, _at(plan, own_base + 1), plan.expr(page)])
                else:
                    calls.append([op, _at(plan, (1 << plan.va_bits) - page), plan.expr(2 * page)])
                continue
            r = rng.choice(cands)
            length = r.size_b if rng.random() < 0.8 else max(page, r.size_b // 2 // page * page)
            calls.append([op, _at(plan, r.start_b), plan.expr(length)])
        elif op == "mmap":
            if own is not None or hostile:
                # over a live mapping: -EEXIST; or a bad kind / range: -EINVAL
                r = rng.choice([x for x in live if x.stable] or live)
                which = rng.randrange(3)
                if which == 0:
                    calls.append([op, _at(plan, r.start_b), plan.expr(r.size_b), 0])
                elif which == 1:
                    calls.append([op, _at(plan, own_base), plan.expr(page), 7])
                else:
                    calls.append([op, _at(plan, own_base + 1), plan.expr(page), 0])
                continue
            kind = rng.randrange(3)
            size = rng.choice([rng.randint(1, 8) * page, pmd, 2 * pmd])
            calls.append([op, _at(plan, own_base), plan.expr(size), kind])
            own = Region(plan.expr(own_base), own_base, size, ("anon", "shmem", "file")[kind],
                         True, True)
        elif op == "rcu_barrier":
            calls.append([op])
        elif op == "getcpu":
            calls.append([op])
        elif op == "log":
            calls.append([op, rng.randrange(1 << 16)])
        else:
            calls.append([rng.choice(NR_UNKNOWN), 1, 2, 3])
    calls.extend(_walker_and_notifier_calls(rng, plan, regions))
    calls.extend(_remap_calls(rng, plan, regions, cpu))
    if own is not None and rng.random() < 0.7:
        calls.append(["munmap", _at(plan, own.start_b), plan.expr(own.size_b)])
    if rng.random() < 0.05:
        calls.append(["exit", 0])
    elif rng.random() < OWN_TEXT:
        # munmap of its own text: the next fetch is SIGSEGV, and the process dies
        calls.append(["munmap", "text", plan.expr(plan.page)])
        plan.signalled.add(cpu)
    return calls


OWN_TEXT = 0.05  # share of vCPUs that end by unmapping their own text
MREMAP_MOVE = 3  # MREMAP_MAYMOVE | MREMAP_FIXED


def _remap_calls(rng: random.Random, plan: Plan, regions: list[Region], cpu: int) -> list[list]:
    """mprotect, mremap and munmap of part of a VMA: a few calls a vCPU makes after its
    others. What may change under the guests' own loads and stores stays legal:
    mprotect of a region guests touch only adds PROT_EXEC (a split, new ptes,
    then a merge back); read-only, a move or a partial unmap only hit the volatile
    regions nobody touches. A move goes to this vCPU's own slot, past its mmap
    (PMD-aligned, or a page off, so move_normal_pmd and move_ptes both run).
    Hostile ones get Linux's errors: misaligned, zero or overlapping lengths,
    unknown flags or prot bits, MREMAP_FIXED alone, a source nothing maps."""
    page, pmd = plan.page, plan.pmd
    dest = plan.slot_base(len(plan.vmas) + cpu) + 2 * pmd
    volatile = [r for r in regions if not r.stable]
    out: list[list] = []
    if rng.random() < 0.3:  # mprotect
        if rng.random() < HOSTILE:
            r = _pick(rng, regions)
            which = rng.randrange(4)
            if which == 0:
                out.append(["mprotect", f"{_at(plan, r.start_b)} + 1", plan.expr(page), 3])
            elif which == 1:
                out.append(["mprotect", _at(plan, r.start_b), plan.expr(page), 8])
            elif which == 2:
                out.append(["mprotect", _at(plan, r.start_b), plan.expr(page), 0])
            else:  # running past the region: -ENOMEM (what is mapped becomes rwx)
                out.append(["mprotect", _at(plan, r.start_b), plan.expr(r.size_b + 3 * pmd), 7])
        else:
            r = _pick(rng, regions)
            addr, length = _subrange(rng, plan, r)
            ro = not r.stable and rng.random() < 0.5
            out.append(["mprotect", _at(plan, addr), plan.expr(length), 1 if ro else 7])
            if rng.random() < 0.6:
                out.append(["mprotect", _at(plan, addr), plan.expr(length), 3])
    if rng.random() < 0.3:  # mremap
        if rng.random() < HOSTILE or not volatile:
            r = _pick(rng, regions)
            which = rng.randrange(6)
            args = [_at(plan, r.start_b), plan.expr(page), plan.expr(page), MREMAP_MOVE,
                    plan.expr(dest)]
            if which == 0:
                args[0] = f"{args[0]} + 1"
            elif which == 1:
                args[3] = rng.choice([2, 8, 4])  # FIXED alone, unknown, DONTUNMAP
            elif which == 2:
                args[2] = 0
            elif which == 3:  # overlapping source and destination
                args[4] = args[0]
            elif which == 4:  # nothing mapped at the source
                args[0] = plan.expr(dest + pmd // 2 // page * page)
            else:
                args[4] = f"{plan.expr(dest)} + 1"
            out.append(["mremap", *args])
        else:
            r = rng.choice(volatile)
            addr, length = _subrange(rng, plan, r, pmd_aligned=rng.random() < 0.5)
            length = min(length, pmd)
            to = dest + (0 if rng.random() < 0.6 else page)
            new_len = rng.choice([length, length, max(page, length // 2 // page * page)])
            out.append(["mremap", _at(plan, addr), plan.expr(length), plan.expr(new_len),
                        MREMAP_MOVE, plan.expr(to)])
    if volatile and rng.random() < 0.2:  # munmap of part of a VMA: a split
        r = rng.choice(volatile)
        pages = r.size_b // page
        if pages > 2:
            first = rng.randrange(1, pages - 1)
            n = rng.randint(1, pages - 1 - first)
            out.append(["munmap", _at(plan, r.start_b + first * page), plan.expr(n * page)])
    return out


def _walker_and_notifier_calls(rng: random.Random, plan: Plan,
                               regions: list[Region]) -> list[list]:
    """mincore() (the page walker), the secondary MMU (mmu notifiers) and userfaultfd: a
    few calls a vCPU makes after its others, over the same regions. The vector goes to the GUP-fast
    output buffer (one byte a page, within its word a page); a hostile mincore is
    misaligned or writes to an unmapped vector."""
    page = plan.page
    out: list[list] = []
    if rng.random() < 0.35:
        addr, length = _subrange(rng, plan, _pick(rng, regions))
        vec: str | int = plan.expr(OUT_PMD * plan.pmd)
        if rng.random() < HOSTILE:
            if rng.random() < 0.5:
                addr += 1
            else:
                vec = plan.expr(plan.slot_base(len(plan.vmas)) + 2 * plan.pmd)  # never mapped
        out.append(["mincore", _at(plan, addr), _len(plan, length), vec])
    if rng.random() < 0.3:
        addr, length = _subrange(rng, plan, _pick(rng, regions))
        out.append(["secondary_attach"])
        out.append(["secondary_read", _at(plan, addr), max(1, min(8, length // page)),
                    rng.randint(1, 3)])
    if rng.random() < 0.25:  # userfaultfd: register a whole region, fill one of its pages
        r = _pick(rng, regions)
        out.append(["uffdio_register", _at(plan, r.start_b), plan.expr(r.size_b),
                    rng.choice([1, 1, 2, 3])])
        dst = r.start_b + rng.randrange(0, r.size_b, page)
        out.append(["uffdio_copy", _at(plan, dst), plan.expr(OUT_PMD * plan.pmd), plan.expr(page)])
    return out


def _anon_thp_vmas(rng: random.Random, plan: Plan) -> None:
    """VM_HUGEPAGE (`thp = true`) on some anon VMAs holding a whole PMD range: their faults
    map PMD folios with a deposited table, and khugepaged may collapse them. Where the arch
    has THP, most workloads also get one more anon VMA of one PMD range: a THP (one page
    faulted in: the whole folio) or PTE-mapped pages for a collapse."""
    ppmd = plan.pmd // plan.page
    if not plan.thp:
        return
    for v in plan.vmas:
        if v.kind == "anon" and v.start_pages == 0 and v.size_pages >= ppmd:
            v.thp = rng.random() < 0.5
    if rng.random() < 0.7:
        huge = rng.random() < 0.6
        v = Vma(f"v{len(plan.vmas)}", "anon", 0, ppmd, len(plan.vmas), thp=huge,
                populate=1 if huge else rng.randint(2, 16), stable=rng.random() < 0.5)
        plan.vmas.append(v)


def _thp_focus(plan: Plan, regions: list[Region]) -> list[Region]:
    """Anon regions with a whole PMD range (what a THP, a split or a collapse needs)."""
    return [r for r in regions if r.kind == "anon" and r.vma is not None
            and _focus_pmd(plan, r)[1] >= plan.pmd and r.start_b % plan.pmd == 0]


def _anon_thp_calls(rng: random.Random, plan: Plan, regions: list[Region]) -> list[list]:
    """Anon THP calls a vCPU makes after its others: MADV_HUGEPAGE (whole VMAs, else
    -EINVAL), a fault that may map a PMD folio, split_huge_pmd (-EINVAL where no huge
    pmd or no THP), MADV_COLLAPSE and a khugepaged pass of an anon range; now and then
    a hostile address or a partial range."""
    if rng.random() >= 0.3:
        return []
    focus = _thp_focus(plan, regions) or regions
    r = rng.choice(focus)
    start, length = _focus_pmd(plan, r)
    out: list[list] = []
    if rng.random() < 0.5:
        out.append(["madvise", _at(plan, r.start_b), plan.expr(r.size_b), 14])  # MADV_HUGEPAGE
    if r.stable and r.writable and rng.random() < 0.6:
        out.append(["touch_write", _at(plan, start), 1, plan.expr(plan.page)])
    for op in rng.sample(["split", "collapse", "khugepaged"], rng.randint(1, 3)):
        addr = start + rng.randrange(0, length, plan.page)
        where = _hostile_addr(rng, plan, addr) if rng.random() < HOSTILE else _at(plan, addr)
        if op == "split":
            out.append(["split_huge_pmd", where])
        elif op == "collapse":
            out.append(["madvise", _at(plan, start), _len(plan, length), MADV_COLLAPSE])
        else:
            out.append(["khugepaged_scan", where])
    return out


def _anon_thp_contended(rng: random.Random, plan: Plan,
                        regions: list[Region]) -> list[list] | None:
    """A share of the contended workloads races an anon THP's life on one PMD range:
    vCPU 0 splits it, collapses it (then unmaps it, when it may: the deposited table is
    freed then), zaps part of it or runs khugepaged; the others walk it: writes to its
    last pages (the split fills them last), GUP-fast from its start. None: not this
    time."""
    focus = _thp_focus(plan, regions)
    if not plan.thp or not focus or rng.random() >= 0.5:
        return None
    r = rng.choice(focus)
    start, _length = _focus_pmd(plan, r)
    page, pmd = plan.page, plan.pmd
    kinds = ["split", "split", "collapse", "collapse", "dontneed_page", "dontneed_pmd",
             "khugepaged"] + (["munmap", "mremap"] if not r.stable else [])
    kind = rng.choice(kinds)
    first: list[list] = []
    if kind == "split":
        first.append(["split_huge_pmd", _at(plan, start + rng.randrange(0, pmd, page))])
    elif kind == "collapse":
        first.append(["madvise", _at(plan, start), plan.expr(pmd), MADV_COLLAPSE])
        if not r.stable:  # the deposited old table is freed at once by the zap
            first.append(["munmap", _at(plan, r.start_b), plan.expr(r.size_b)])
    elif kind == "dontneed_page":  # part of a THP: zap_pmd_range splits it first
        first.append(["madvise", _at(plan, start + rng.randrange(0, pmd, page)),
                      plan.expr(page), MADV_DONTNEED])
    elif kind == "dontneed_pmd":  # zap_huge_pmd and its deposit
        first.append(["madvise", _at(plan, start), plan.expr(pmd), MADV_DONTNEED])
    elif kind == "munmap":
        first.append(["munmap", _at(plan, r.start_b), plan.expr(r.size_b)])
    elif kind == "mremap":
        # far enough for another pmd table (x86-pae: 1 GiB), then away with it
        far = 512 * pmd if 512 * pmd + start < (1 << (plan.va_bits - 1)) else 64 * pmd
        dest = start + far
        first.append(["mremap", _at(plan, start), plan.expr(pmd), plan.expr(pmd), 3,
                      _at(plan, dest)])
        first.append(["munmap", _at(plan, dest), plan.expr(pmd)])
    else:
        first.append(["khugepaged_scan", _at(plan, start)])
    lists = [first]
    for _cpu in range(1, plan.cpus):
        if r.stable and r.writable and rng.random() < 0.6:
            n = rng.randint(1, 8)
            lists.append([["touch_write", _at(plan, start + pmd - n * page), n, plan.expr(page)]])
        else:
            n = rng.randint(1, 16)
            lists.append([["gup_fast", _at(plan, start), n, plan.expr(OUT_PMD * pmd), 0]])
    return lists


def _contended_calls(rng: random.Random, plan: Plan, regions: list[Region]) -> list[list]:
    """Every vCPU's short call list aimed at one focus range. First a way to tear
    its tables down (khugepaged or MADV_COLLAPSE where the arch has PMD-sized
    pages, MADV_DONTNEED, munmap, truncate), then a focus that call may legally
    name; vCPU 0 makes it, each other vCPU either tears down too (by another
    call: two different paths racing over one table) or walks. Arguments are
    valid: the hostile ones are the other workloads' business."""
    kinds = (["khugepaged_scan", "madvise_collapse"] if plan.thp else []) + \
        ["madvise_dontneed", "munmap", "truncate"]
    kind = rng.choice(kinds + ["mremap"])
    if kind == "mremap":
        return _contended_mremap(rng, plan, regions, kinds)
    fits = [r for r in regions if _may_destroy(kind, r)]
    cands = [r for r in fits if r.vma is not None and int(r.vma.name[1:]) < CANDIDATES]
    if kind in ("khugepaged_scan", "madvise_collapse") and cands and rng.random() < 0.8:
        fits = cands  # what collapse acts on: PMD ranges of whole PMDs
    if not fits:
        kind, fits = "madvise_dontneed", regions
    focus = rng.choice(fits)
    lists: list[list] = []
    for cpu in range(plan.cpus):
        calls: list[list] = []
        others = [k for k in kinds if k != kind and _may_destroy(k, focus)]
        if cpu == 0 or (others and rng.random() < 0.35):
            calls.append(_destroy(rng, plan, focus, kind if cpu == 0 else rng.choice(others)))
            if rng.random() < 0.3:
                calls.append(_walk(rng, plan, focus))
        else:
            for _ in range(rng.randint(1, 3)):
                # now and then another region: two tables freed at once
                # (fragments of one page, halves of one page)
                calls.append(_walk(rng, plan, focus if rng.random() < 0.85 else rng.choice(regions)))
        lists.append(calls)
    return lists


def _contended_mremap(rng: random.Random, plan: Plan, regions: list[Region],
                      kinds: list[str]) -> list[list]:
    """vCPU 0 moves a file range (MREMAP_MAYMOVE|MREMAP_FIXED, its PMD ranges when it
    has whole ones) while the others walk it (their own loads and stores too),
    collapse or truncate it: a move racing retract_page_tables(), truncate and the
    walkers. A guest that touches the range once it has moved, or past a
    truncated end, dies of SIGSEGV as in Linux, so every vCPU may."""
    files = [r for r in regions if r.kind != "anon"] or regions
    cands = [r for r in files if r.vma is not None and int(r.vma.name[1:]) < CANDIDATES]
    focus = rng.choice(cands if cands and rng.random() < 0.8 else files)
    start, length = _focus_pmd(plan, focus)
    dest = plan.slot_base(len(plan.vmas)) + 2 * plan.pmd
    if rng.random() < 0.3:
        dest += plan.page  # misaligned: move_ptes
    lists: list[list] = [[["mremap", _at(plan, start), plan.expr(length), plan.expr(length),
                           MREMAP_MOVE, plan.expr(dest)]]]
    if rng.random() < 0.5:
        lists[0].append(["touch_read", _at(plan, dest), 1, plan.expr(plan.page)])
    others = [k for k in kinds if k != "munmap"]
    touchable = replace(focus, stable=True)
    for _ in range(1, plan.cpus):
        calls: list[list] = []
        if rng.random() < 0.4:
            calls.append(["touch_write" if focus.writable else "touch_read", _at(plan, start), 1,
                          plan.expr(plan.page)])
        if rng.random() < 0.5:
            calls.append(_destroy(rng, plan, focus, rng.choice(others)))
        calls.append(_walk(rng, plan, touchable))
        lists.append(calls)
    plan.signalled.update(range(plan.cpus + 1))  # a forked child's vCPU comes last
    return lists


def _may_destroy(kind: str, r: Region) -> bool:
    """Whether a contended workload's teardown call of `kind` may name region r."""
    if kind in ("khugepaged_scan", "madvise_collapse"):
        return r.kind != "anon"
    if kind == "munmap":
        return not r.stable
    if kind == "truncate":
        return not r.stable and r.kind != "anon"
    return True


def _focus_pmd(plan: Plan, r: Region) -> tuple[int, int]:
    """The whole PMD ranges of a region ((start, length), bytes), or all of it if none."""
    first = -(-r.start_b // plan.pmd) * plan.pmd
    n = (r.start_b + r.size_b - first) // plan.pmd
    return (first, n * plan.pmd) if n > 0 else (r.start_b, r.size_b)


def _destroy(rng: random.Random, plan: Plan, r: Region, op: str) -> list:
    """A call of kind `op` that empties, detaches or frees the region's page tables."""
    start, length = _focus_pmd(plan, r)
    if op == "khugepaged_scan":
        return [op, _at(plan, start)]
    if op == "madvise_collapse":
        return ["madvise", _at(plan, start), _len(plan, length), MADV_COLLAPSE]
    if op == "madvise_dontneed":
        return ["madvise", _at(plan, start), _len(plan, length), MADV_DONTNEED]
    if op == "munmap":
        return [op, _at(plan, r.start_b), plan.expr(r.size_b)]
    return [op, _at(plan, r.start_b), _len(plan, rng.choice([0, 0, plan.page]))]


def _walk(rng: random.Random, plan: Plan, r: Region) -> list:
    """A call that walks the region's page tables: a few pages from its start (the
    populated ones), through the hardware walker or one of the kernel's walkers."""
    page = plan.page
    ops = ["gup_fast", "gup_fast", "madvise_page"] + (["khugepaged_scan"] if plan.thp else [])
    if r.stable:
        ops += ["touch_read", "touch_read", "touch_read"]
        if r.writable:
            ops += ["touch_write", "touch_write"]
    if r.kind != "anon":
        ops.append("fault_around")
    op = rng.choice(ops)
    pages = max(1, min(r.touch_b if op.startswith("touch") else r.size_b, 4 * page) // page)
    first = rng.randrange(pages)
    addr = r.start_b + first * page
    count = rng.randint(1, pages - first)
    if op in ("touch_read", "touch_write"):
        return [op, _at(plan, addr), count, plan.expr(page)]
    if op == "gup_fast":
        return [op, _at(plan, addr), count, plan.expr(OUT_PMD * plan.pmd),
                int(r.writable and rng.random() < 0.5)]
    if op == "madvise_page":  # zap_pte_range: the table mapped and its ptl taken
        return ["madvise", _at(plan, addr), plan.expr(page), MADV_DONTNEED]
    if op == "khugepaged_scan":
        return [op, _at(plan, _focus_pmd(plan, r)[0])]
    return [op, _at(plan, addr)]


def _subrange(rng: random.Random, plan: Plan, r: Region,
              pmd_aligned: bool = False) -> tuple[int, int]:
    """A page-aligned (or PMD-range) piece of a region: (start, length) in bytes."""
    page, pmd = plan.page, plan.pmd
    if pmd_aligned:
        first = -(-r.start_b // pmd) * pmd
        if first + pmd <= r.start_b + r.size_b and rng.random() < 0.8:
            n = (r.start_b + r.size_b - first) // pmd
            k = rng.randrange(n)
            return first + k * pmd, pmd * rng.randint(1, n - k)
        return r.start_b, r.size_b
    pages = r.size_b // page
    choice = rng.random()
    if choice < 0.3:
        return r.start_b, r.size_b
    first = rng.randrange(pages)
    return r.start_b + first * page, page * rng.randint(1, min(pages - first, 16))


def _at(plan: Plan, addr: int) -> str | int:
    return plan.expr(addr)


def _len(plan: Plan, length: int) -> str | int:
    if length < 0:
        return length
    if length >= (1 << plan.va_bits) - plan.pmd:
        return length  # a raw number: not worth an expression
    return plan.expr(length)


def _hostile_addr(rng: random.Random, plan: Plan, addr: int) -> str | int:
    """Misaligned, outside the user address space, or an unmapped hole."""
    which = rng.randrange(3)
    if which == 0:
        return f"{plan.expr(addr)} + {rng.choice([1, 8, plan.page // 2])}"
    if which == 1:
        return (1 << plan.va_bits) + rng.choice([0, plan.page])
    return plan.expr(plan.slot_base(len(plan.vmas) + plan.cpus) + plan.pmd)  # above every slot


# ---- TOML ------------------------------------------------------------------------------


def _value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v) if -(1 << 16) < v < (1 << 16) else (hex(v) if v >= 0 else str(v))
    return f'"{v}"'


def _memory_mib(plan: Plan) -> int:
    """Room for every VMA populated, a PMD folio per PMD range of the files (collapse
    copies), each vCPU's mmap and the tables, with a margin."""
    total = 0
    for v in plan.vmas:
        nbytes = v.size_pages * plan.page
        # files: a PMD folio per range for collapse; anon THP: whole PMD folios, and one more
        # for a collapse
        total += nbytes + (-(-nbytes // plan.pmd) * plan.pmd
                           if v.kind != "anon" or v.size_pages * plan.page >= plan.pmd else 0)
    total += plan.cpus * 4 * plan.pmd + 8 * (1 << 20)
    mib = -(-total // (1 << 20))
    return max(16, 1 << (mib - 1).bit_length())


def _toml(plan: Plan, lists: list[list[list]], seed: int) -> str:
    t = plan.target
    lines = [f'description = "ptemu fuzz workload {seed:#x} for {t.label}"', "",
             "[machine]", f'arch = "{t.arch}"',
             f"cpus = {plan.cpus + (plan.child is not None)}",
             f"memory_mib = {_memory_mib(plan)}"]
    if t.options:
        lines += ["", "[arch_options]"] + [f'{k} = "{v}"' for k, v in t.options]
    for v in plan.vmas:
        start = plan.slot_base(v.slot) + v.start_pages * plan.page
        lines += ["", "[[vma]]", f'name = "{v.name}"', f"start = {_value(plan.expr(start))}",
                  f"size = {_value(plan.expr(v.size_pages * plan.page))}", f'kind = "{v.kind}"']
        if v.prot != "rw":
            lines.append(f'prot = "{v.prot}"')
        if v.populate is not False:
            lines.append(f"populate = {_value(v.populate)}")
        if v.thp:
            lines.append("thp = true")
        if v.kind != "anon" and not v.pmd_mapping:
            lines.append("pmd_mapping = false")
        if v.share:
            lines.append(f'share = "{v.share}"')
        if v.private:
            lines.append("private = true")
    lines += ["", "[[vma]]", 'name = "gup-out"', f"start = {_value(plan.expr(OUT_PMD * plan.pmd))}",
              f"size = {_value(plan.expr(_out_pages(plan) * plan.page))}", 'kind = "anon"',
              "populate = true"]
    for cpu, calls in enumerate(lists):
        lines += ["", "[[cpu]]"]
        if cpu in plan.signalled:
            lines.append('signal = "SIGSEGV"')
        lines.append("calls = [")
        lines += [f"  [{', '.join(_value(x) for x in rec)}]," for rec in calls]
        lines.append("]")
    if plan.child is not None:  # parked until a vCPU calls fork(plan.cpus)
        lines += ["", "[[cpu]]", 'child = "forked"']
        if plan.cpus in plan.signalled:
            lines.append('signal = "SIGSEGV"')
        lines.append("calls = [")
        lines += [f"  [{', '.join(_value(x) for x in rec)}]," for rec in plan.child]
        lines.append("]")
    return "\n".join(lines) + "\n"


def _out_pages(plan: Plan) -> int:
    """The GUP-fast output buffer: one word for each page of the largest valid range."""
    most = SLOT_PMDS * plan.pmd // plan.page
    return max(1, -(-most * plan.word // plan.page))


def hypercall_names() -> list[str]:
    """Every hypercall the generator exercises (every call of the ABI table)."""
    return sorted(c.name for c in abi.CALLS.values())
