"""Page-table fragments: several tables share one page (powerpc's pgtable-frag.c).

Owns Linux's fragment allocator as arch/powerpc/mm/pgtable-frag.c (PTE
tables) and arch/powerpc/mm/book3s64/pgtable.c (PMD tables, the same
algorithm) have it since v6.6 (32cc0b7c9d50 "powerpc: add pte_free_defer()
for pgtables sharing page"), the algorithm unchanged to v6.14 (ptdesc
renames aside); every routine here follows that:

- `mm.context["pte_frag"]` / `["pmd_frag"]` point to the next unused
  fragment of the mm's current page; fragments are handed out under
  `mm.page_table_lock`. A freshly allocated page gets `pt_frag_refcount` =
  NR, unless another CPU refilled the cache meanwhile: then the page keeps
  a count of one and the rest of it is never used.
- A freed fragment is never handed out again; the page is freed when its
  count reaches 0 (`pte_fragment_free`, which BUGs on a count <= 0).
- `pte_free_defer()` sets PG_active on the page, then frees the fragment as
  usual; whoever drops the last reference test-and-clears PG_active and, if
  it was set, frees the page after a grace period (one rcu_head per page).
- mmu_gather (`tlb_remove_table`, MMU_GATHER_RCU_TABLE_FREE) frees each
  table after a grace period: `__tlb_remove_table` -> `pte_fragment_free`.
- `pte_frag_destroy()` / `pmd_frag_destroy()` drop the references of the
  fragments never handed out when the mm goes away.

Which levels are fragmented: PTE and PMD tables, as in Linux (PMD fragments
are 4 KiB with radix, 16 KiB with hash). PUD and PGD tables stay whole
frames: Linux takes them from kmem caches, which ptemu does not model.
The fragment size comes from `Arch.table_alloc_bytes`.

Per-fragment state lives in `FrameInfo.subtables` (offset -> "live",
"pending": freed but possibly still walked until a grace period, "freed"),
which is what checkers and `ptemu pgtable dump` read; the page's own
counters (the ptdesc fields) live in `FragPage`s kept by the policy. A
frame stays PGTABLE while it holds references, and is RCU-pending while its
deferred free waits for the grace period.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from emu.kernel import steps as s
from emu.kernel.core import BadPageState, KernelBug
from emu.kernel.table_policy import TablePolicy, register_policy
from emu.physmem import FrameState, PhysMemError

if TYPE_CHECKING:
    from emu.kernel import Kernel
    from emu.kernel.mm import MM

FRAGMENTED_LEVELS = ("pte", "pmd")

LIVE = "live"
PENDING = "pending"
FREED = "freed"


@dataclass
class FragPage:
    """The ptdesc fields of one page of fragments."""

    level: str
    frag_size: int
    nr: int  # PTE_FRAG_NR / PMD_FRAG_NR
    refcount: int  # pt_frag_refcount
    active: bool = False  # PG_active: a fragment's free was deferred
    # offsets whose mmu_gather free waits for its grace period (still counted)
    gather: list[int] = field(default_factory=list)


def frag_key(level: str) -> str:
    return f"{level}_frag"


@register_policy
class FragmentPolicy(TablePolicy):
    """Linux's pte_fragment_alloc / pte_fragment_free / pte_free_defer."""

    name = "fragments"

    def __init__(self) -> None:
        self.pages: dict[int, FragPage] = {}  # frame pa -> its ptdesc counters

    # ---- geometry -------------------------------------------------------------
    def frag_size(self, k: Kernel, level: str) -> int:
        return min(k.arch.table_alloc_bytes(level), k.frames.frame_size)

    def frag_nr(self, k: Kernel, level: str) -> int:
        return k.frames.frame_size // self.frag_size(k, level)

    def ptlock_key(self, k: Kernel, table_pa: int) -> int:
        # The split ptlock lives in the page's ptdesc: fragments of one page
        # share it (pte_lockptr() -> ptlock_ptr(page_ptdesc(pmd_page(*pmd)))).
        return k.frames.frame_base(table_pa)

    # ---- allocation -----------------------------------------------------------
    def alloc(self, k: Kernel, mm: MM, level: str) -> s.KernelGen:
        if level not in FRAGMENTED_LEVELS:
            return (yield from super().alloc(k, mm, level))
        pa = yield from self._get_from_cache(k, mm, level)
        if pa is None:
            pa = yield from self._alloc_for_cache(k, mm, level)
        k.frames.info(pa).subtables[pa - k.frames.frame_base(pa)] = LIVE
        k.init_table(pa, level)
        return pa

    def _get_from_cache(self, k: Kernel, mm: MM, level: str) -> s.KernelGen:
        """get_pte_from_cache(): take the next fragment of the mm's current page."""
        if self.frag_nr(k, level) == 1:
            return None
        key = frag_key(level)
        yield s.SpinLock(mm.page_table_lock)
        ret = mm.context.get(key)
        if ret is not None:
            nxt = ret + self.frag_size(k, level)
            # the last fragment taken: the mm has no current page any more
            mm.context[key] = None if nxt % k.frames.frame_size == 0 else nxt
        yield s.SpinUnlock(mm.page_table_lock)
        return ret

    def _alloc_for_cache(self, k: Kernel, mm: MM, level: str) -> s.KernelGen:
        """__alloc_for_ptecache(): a new zeroed page; its first fragment is ours."""
        size, nr = self.frag_size(k, level), self.frag_nr(k, level)
        frame = k.frames.alloc(f"{level} table fragments", k.cpu, FrameState.PGTABLE, level=level)
        page = self.pages[frame] = FragPage(level, size, nr, refcount=1)
        if nr == 1:
            return frame
        key = frag_key(level)
        yield s.SpinLock(mm.page_table_lock)
        if mm.context.get(key) is None:
            page.refcount = nr
            mm.context[key] = frame + size
        else:
            # Another CPU refilled the cache while we allocated: this page
            # serves one table only, the rest of it stays unused.
            yield s.Note(f"{level} fragment cache refilled meanwhile: page {frame:#x} holds one table")
        yield s.SpinUnlock(mm.page_table_lock)
        return frame

    # ---- freeing --------------------------------------------------------------
    def free(self, k: Kernel, mm: MM, pa: int, level: str) -> s.KernelGen:
        """pte_free() / pmd_free(): pte_fragment_free(table, 0)."""
        if level not in FRAGMENTED_LEVELS:
            yield from super().free(k, mm, pa, level)
            return
        self._release_fragment(k, pa, level, LIVE, FREED)
        yield from self._fragment_put(k, pa, level)

    def free_defer(self, k: Kernel, mm: MM, pa: int, level: str) -> s.KernelGen:
        """pte_free_defer(): folio_set_active(), then pte_fragment_free()."""
        if level not in FRAGMENTED_LEVELS:
            yield from super().free_defer(k, mm, pa, level)
            return
        page = self.pages.get(k.frames.frame_base(pa))
        if page is not None:
            page.active = True
        # Deferred: the fragment's memory stays valid until the page goes,
        # which now waits for a grace period.
        self._release_fragment(k, pa, level, LIVE, PENDING)
        yield from self._fragment_put(k, pa, level)

    def tlb_remove_table(self, k: Kernel, mm: MM, pa: int, level: str) -> s.KernelGen:
        """pgtable_free_tlb(): the table's reference is dropped after a grace period."""
        if level not in FRAGMENTED_LEVELS:
            yield from super().tlb_remove_table(k, mm, pa, level)
            return
        frame = k.frames.frame_base(pa)
        self._check_state(k, pa, level, LIVE)
        self._set_state(k, pa, PENDING)
        page = self.pages.get(frame)
        if page is not None:
            page.gather.append(pa - frame)
        yield s.CallRcu(lambda: k.policy.tlb_remove_table_rcu(k, pa, level),
                        f"__tlb_remove_table: pte_fragment_free {level} table {pa:#x}")

    def tlb_remove_table_rcu(self, k: Kernel, pa: int, level: str) -> None:
        """The RCU callback of a gathered table: __tlb_remove_table -> *_fragment_free."""
        frame = k.frames.frame_base(pa)
        page = self.pages.get(frame)
        if page is not None and pa - frame in page.gather:
            page.gather.remove(pa - frame)
        self._release_fragment(k, pa, level, PENDING, FREED)
        if self._drop_ref(k, pa, level):
            if self._test_clear_active(frame):
                k.perform(k.cpu, self._call_rcu_free(k, frame))
            else:
                self.pte_free_now(k, frame, deferred=True)

    def _fragment_put(self, k: Kernel, pa: int, level: str) -> s.KernelGen:
        """The counting half of pte_fragment_free()."""
        if not self._drop_ref(k, pa, level):
            return
        frame = k.frames.frame_base(pa)
        if self._test_clear_active(frame):
            yield self._call_rcu_free(k, frame)
        else:
            self.pte_free_now(k, frame, deferred=False)

    def _call_rcu_free(self, k: Kernel, frame: int) -> s.CallRcu:
        k.frames.set_state(frame, FrameState.RCU_PENDING, k.cpu, "fragment page: call_rcu(pte_free_now)")
        # The page's one pt_rcu_head. Look the policy up when the callback
        # runs: snapshots copy it.
        return s.CallRcu(lambda: k.policy.pte_free_now(k, frame, deferred=True),
                         f"pte_free_now: free fragment page {frame:#x}", head=frame)

    def _test_clear_active(self, frame: int) -> bool:
        page = self.pages[frame]
        was, page.active = page.active, False
        return was

    def _drop_ref(self, k: Kernel, pa: int, level: str) -> bool:
        """BUG_ON(refcount <= 0); atomic_dec_and_test(). True: the page must go."""
        page = self.pages.get(k.frames.frame_base(pa))
        count = 0 if page is None else page.refcount
        if count <= 0:
            raise KernelBug(f"pte_fragment_free: pt_frag_refcount of the page of {level} "
                            f"table {pa:#x} is {count} (BUG_ON <= 0)")
        page.refcount -= 1
        return page.refcount == 0

    def pte_free_now(self, k: Kernel, frame: int, deferred: bool) -> None:
        """pagetable_dtor() + pagetable_free() of a whole fragment page.

        free_pages_prepare()'s check: a page freed with PG_active still set
        (PAGE_FLAGS_CHECK_AT_FREE), references left or fragments whose
        mmu_gather free is still queued is a "Bad page state".
        """
        page = self.pages[frame]
        wrong = ([f"pt_frag_refcount {page.refcount}"] if page.refcount else []) \
            + (["PG_active set"] if page.active else []) \
            + ([f"fragments {page.gather} still queued for an RCU free"] if page.gather else [])
        if wrong:
            raise BadPageState(f"BUG: Bad page state: {page.level} fragment page {frame:#x} "
                               f"freed with {', '.join(wrong)}")
        del self.pages[frame]
        fi = k.frames.info(frame)
        for off in list(fi.subtables):
            fi.subtables[off] = FREED
        k.release_table_frame(frame, page.level, deferred)

    # ---- fragment states ----------------------------------------------------------
    def _check_state(self, k: Kernel, pa: int, level: str, want: str) -> None:
        fi = k.frames.info(pa)
        off = pa - k.frames.frame_base(pa)
        have = fi.subtables.get(off)
        if have != want and fi.subtables:
            # Linux would only notice once the count went <= 0; the model
            # reports the double free at once, as KASAN would.
            raise PhysMemError(f"double free of {level} fragment {pa:#x}: it is "
                               f"{have or 'not a table'}, expected {want}")

    def _set_state(self, k: Kernel, pa: int, state: str) -> None:
        k.frames.info(pa).subtables[pa - k.frames.frame_base(pa)] = state

    def _release_fragment(self, k: Kernel, pa: int, level: str, want: str, new: str) -> None:
        self._check_state(k, pa, level, want)
        if k.frames.frame_base(pa) in self.pages:
            self._set_state(k, pa, new)

    # ---- mm teardown ------------------------------------------------------------------
    def exit_mmap(self, k: Kernel, mm: MM) -> s.KernelGen:
        """arch_exit_mmap() (book3s64, v6.6-v6.14): destroy_pagetable_cache(), one atomic
        sub per cache."""
        yield s.KernelAtomic(lambda: destroy_pagetable_cache(k, mm),
                             f"arch_exit_mmap: destroy_pagetable_cache({mm.name})")

    # ---- queries for checkers and tests ---------------------------------------------
    def unissued(self, k: Kernel, mm: MM, frame: int) -> int:
        """Fragments of `frame` the mm's cache still holds references for."""
        page = self.pages.get(frame)
        if page is None:
            return 0
        ptr = mm.context.get(frag_key(page.level))
        if ptr is None or k.frames.frame_base(ptr) != frame:
            return 0
        return page.nr - (ptr - frame) // page.frag_size


def frag_destroy(k: Kernel, mm: MM, level: str) -> None:
    """pte_frag_destroy() / pmd_frag_destroy(): drop the cache's unissued references.

    Called at mm teardown (destroy_pagetable_cache()); a page whose count
    reaches 0 here is freed at once, without a grace period, as in Linux.
    """
    policy = k.policy
    key = frag_key(level)
    ptr = mm.context.get(key)
    if ptr is None or not isinstance(policy, FragmentPolicy):
        return
    mm.context[key] = None
    frame = k.frames.frame_base(ptr)
    page = policy.pages[frame]
    issued = (ptr - frame) // page.frag_size
    page.refcount -= page.nr - issued
    if page.refcount == 0:
        policy.pte_free_now(k, frame, deferred=False)


def pte_frag_destroy(k: Kernel, mm: MM) -> None:
    frag_destroy(k, mm, "pte")


def pmd_frag_destroy(k: Kernel, mm: MM) -> None:
    frag_destroy(k, mm, "pmd")


def destroy_pagetable_cache(k: Kernel, mm: MM) -> None:
    """destroy_context()'s cache teardown: both fragment caches."""
    pte_frag_destroy(k, mm)
    pmd_frag_destroy(k, mm)
