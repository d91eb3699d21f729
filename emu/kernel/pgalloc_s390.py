"""s390 page-table allocation: 16 KiB crst tables, and 2 KiB page tables two per page or one.

Owns Linux's arch/s390/mm/pgalloc.c algorithms, in two versions selected by
the arch (`S390.pgtable_policy`, which `[kernel] version` picks: halves up
to 6.7, full page from 6.8). Every routine of a policy class follows the
version its class names:

"halves" (v6.6-v6.7; the bit protocol since v5.x, pte_free_defer from 6.6
"s390: add pte_free_defer() for pgtables sharing page"): a 4 KiB page holds
two 2 KiB page tables. The top byte of the page's _refcount carries two AA
bits (0x01, 0x02: half allocated) and two PP bits (0x10, 0x20: half's free
pending). Pages with a free half sit on `mm->context.pgtable_list`, under
`mm->context.lock`:

- page_table_alloc: take the first listed page unless both halves are
  allocated or pending ((AA | PP >> 4) == 3), mark the half allocated and
  unlist the page; else a fresh page (both halves INVALID), first half
  allocated, listed.
- page_table_free: under the lock xor 0x11 << half (AA off, PP on); if the
  other half is allocated and the page is not PG_active, list it at the
  head (immediate reuse), else unlist it; unlock; xor 0x10 << half (PP
  off); whoever reaches 0 frees the page: after a grace period if it was
  PG_active (TestClearPageActive), else at once.
- page_table_free_rcu (mmu_gather): the same under the lock, but the page
  goes to the list's tail and the PP bit stays set until the grace period
  is over (__tlb_remove_table clears it, freeing the page at 0).
- pte_free_defer: SetPageActive, then page_table_free. An Active page is
  never relisted, so neither half is reused; its one rcu_head is used once,
  by whoever frees the last half.

"full-page" (v6.8+, d08d4e7cd6bf "s390/mm: use full 4KB page for 2KB PTE"):
one page per 2 KiB table (the upper 2 KiB unused), pte_free_defer is a
plain call_rcu.

In both, region and segment tables are crst tables: four contiguous frames
(CRST_ALLOC_ORDER 2) filled with empty entries, freed whole; mmu_gather
frees them after a grace period (__tlb_remove_table, tag 0).

The atomic ops on _refcount and the page flags are `KernelAtomic` steps, so
the scheduler can put another CPU between the unlock and the PP clear, as
real hardware can. Per-half state for checkers and `ptemu pgtable dump`
lives in `FrameInfo.subtables` (offset 0 / 0x800 -> "live", "pending": freed
but walkable until a grace period, "free"); the _refcount byte and PG_active
live in the policy's `HalfPage`s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from emu.kernel import steps as s
from emu.kernel.core import BadPageState, KernelBug
from emu.kernel.sync import Spinlock
from emu.kernel.table_policy import TablePolicy, register_policy
from emu.physmem import FrameState

if TYPE_CHECKING:
    from emu.kernel import Kernel
    from emu.kernel.mm import MM

LIVE = "live"
PENDING = "pending"
FREE = "free"

AA = 0x03  # both allocated bits
PP = 0x30  # both pending bits


class S390Policy(TablePolicy):
    """What both s390 versions share: crst tables of four frames."""

    name = "s390-crst"  # not registered: only its subclasses are selectable

    def nframes(self, k: Kernel, level: str) -> int:
        return max(1, -(-k.arch.table_alloc_bytes(level) // k.frames.frame_size))

    def frames_of(self, k: Kernel, pa: int, level: str) -> list[int]:
        fs = k.frames.frame_size
        return [pa + i * fs for i in range(self.nframes(k, level))]

    # ---- crst tables (region and segment) -------------------------------------
    def alloc(self, k: Kernel, mm: MM, level: str) -> s.KernelGen:
        if level == "pte":
            return (yield from self.pte_alloc(k, mm))
        # crst_table_alloc() (order 2) + crst_table_init() with empty entries
        pa = k.frames.alloc(f"{level} table", k.cpu, FrameState.PGTABLE, level=level,
                            nframes=self.nframes(k, level))
        k.init_table(pa, level)
        return pa

    def free(self, k: Kernel, mm: MM, pa: int, level: str) -> s.KernelGen:
        if level == "pte":
            yield from self.pte_free(k, mm, pa)
            return
        for f in self.frames_of(k, pa, level):  # crst_table_free()
            k.check_table_frame(f, level)
        for f in self.frames_of(k, pa, level):
            k.release_table_frame(f, level, deferred=False)

    def free_defer(self, k: Kernel, mm: MM, pa: int, level: str) -> s.KernelGen:
        if level == "pte":
            yield from self.pte_free_defer(k, mm, pa)
            return
        yield from self._crst_after_gp(k, pa, level, head=pa)

    def tlb_remove_table(self, k: Kernel, mm: MM, pa: int, level: str) -> s.KernelGen:
        if level == "pte":
            yield from self.pte_free_tlb(k, mm, pa)
            return
        # pmd_free_tlb()/pud_free_tlb(): tlb_remove_table(table) with tag 0;
        # the batch, not the page, carries the RCU head.
        yield from self._crst_after_gp(k, pa, level, head=None)

    def _crst_after_gp(self, k: Kernel, pa: int, level: str, head: int | None) -> s.KernelGen:
        frames = self.frames_of(k, pa, level)
        for f in frames:
            k.check_table_frame(f, level)
        for f in frames:
            k.frames.set_state(f, FrameState.RCU_PENDING, k.cpu, f"{level} table freed after RCU")

        def release() -> None:
            for f in frames:
                k.release_table_frame(f, level, deferred=True)

        yield s.CallRcu(release, f"__tlb_remove_table: free {level} table {pa:#x}", head=head)

    # ---- page tables: per version ------------------------------------------------
    def pte_alloc(self, k: Kernel, mm: MM) -> s.KernelGen:
        raise NotImplementedError

    def pte_free(self, k: Kernel, mm: MM, pa: int) -> s.KernelGen:
        raise NotImplementedError

    def pte_free_defer(self, k: Kernel, mm: MM, pa: int) -> s.KernelGen:
        raise NotImplementedError

    def pte_free_tlb(self, k: Kernel, mm: MM, pa: int) -> s.KernelGen:
        raise NotImplementedError


@register_policy
class FullPagePolicy(S390Policy):
    """v6.8+: one 4 KiB page per 2 KiB page table."""

    name = "full-page"

    def pte_alloc(self, k: Kernel, mm: MM) -> s.KernelGen:
        # page_table_alloc(): the table INVALID, the upper half zero (unused
        # without PGSTEs)
        pa = k.frames.alloc("pte table (full page)", k.cpu, FrameState.PGTABLE, level="pte")
        k.init_table(pa, "pte")
        return pa
        yield

    def pte_free(self, k: Kernel, mm: MM, pa: int) -> s.KernelGen:
        k.check_table_frame(pa, "pte")
        k.release_table_frame(k.frames.frame_base(pa), "pte", deferred=False)
        return
        yield

    def pte_free_defer(self, k: Kernel, mm: MM, pa: int) -> s.KernelGen:
        """call_rcu(&ptdesc->pt_rcu_head, pte_free_now)."""
        k.check_table_frame(pa, "pte")
        frame = k.frames.frame_base(pa)
        k.frames.set_state(frame, FrameState.RCU_PENDING, k.cpu, "pte table pte_free_defer")
        yield s.CallRcu(lambda: k.release_table_frame(frame, "pte", deferred=True),
                        f"pte_free_now: free pte table {frame:#x}", head=frame)

    def pte_free_tlb(self, k: Kernel, mm: MM, pa: int) -> s.KernelGen:
        """tlb_remove_ptdesc(): __tlb_remove_table frees the page after a grace period."""
        k.check_table_frame(pa, "pte")
        frame = k.frames.frame_base(pa)
        k.frames.set_state(frame, FrameState.RCU_PENDING, k.cpu, "pte table tlb_remove_table")
        yield s.CallRcu(lambda: k.release_table_frame(frame, "pte", deferred=True),
                        f"__tlb_remove_table: free pte table {frame:#x}")


@dataclass
class HalfPage:
    """The ptdesc fields of a page holding two 2 KiB tables."""

    bits: int  # the top byte of _refcount: AA (0x01, 0x02) | PP (0x10, 0x20)
    active: bool = False  # PG_active: a half's free was deferred (pte_free_defer)


@register_policy
class HalvesPolicy(S390Policy):
    """v6.6-v6.7: two 2 KiB page tables per page, AA/PP bits, pgtable_list."""

    name = "halves"

    def __init__(self) -> None:
        self.pages: dict[int, HalfPage] = {}  # frame -> its _refcount byte and PG_active

    # ---- geometry and mm state ----------------------------------------------------
    @staticmethod
    def half_size(k: Kernel) -> int:
        return k.arch.table_alloc_bytes("pte")

    def half_of(self, k: Kernel, pa: int) -> tuple[int, int]:
        """(frame, bit): bit 0 is the lower 2 KiB, bit 1 the upper."""
        frame = k.frames.frame_base(pa)
        off = pa - frame
        if off % self.half_size(k):
            raise KernelBug(f"pte table pointer {pa:#x} is not 2 KiB aligned")
        return frame, off // self.half_size(k)

    @staticmethod
    def context(mm: MM) -> tuple[Spinlock, list[int]]:
        """(mm->context.lock, mm->context.pgtable_list); the list holds frames, head first."""
        lock = mm.context.setdefault("lock", Spinlock("mm->context.lock"))
        lst = mm.context.setdefault("pgtable_list", [])
        return lock, lst  # type: ignore[return-value]

    def ptlock_key(self, k: Kernel, table_pa: int) -> int:
        # The split ptlock is in the page's ptdesc: both halves share it.
        return k.frames.frame_base(table_pa)

    def _sub(self, k: Kernel, frame: int, bit: int, state: str) -> None:
        k.frames.info(frame).subtables[bit * self.half_size(k)] = state

    # ---- atomics on the page (run as KernelAtomic steps) -----------------------------
    # Each looks the page up when it runs: a machine snapshot copies the policy.
    def _page(self, frame: int, who: str) -> HalfPage:
        page = self.pages.get(frame)
        if page is None:
            raise KernelBug(f"{who}: page {frame:#x} holds no s390 page tables")
        return page

    def atomic_read(self, frame: int) -> int:
        return self._page(frame, "atomic_read(&_refcount)").bits

    def atomic_xor(self, k: Kernel, frame: int, bits: int, who: str, need_set: int = 0,
                   need_clear: int = 0) -> int:
        """atomic_xor_bits(&_refcount, bits << 24) >> 24.

        `need_set` / `need_clear`: bits that must be set / clear before the
        xor. Linux would only notice a violation later, if at all
        (page_table_release_check); the model reports it as a double free
        (or a corrupt page) at once, as KASAN would.
        """
        page = self._page(frame, who)
        if page.bits & need_set != need_set or page.bits & need_clear:
            half = 0 if (need_set | need_clear) & 0x11 else 1
            raise KernelBug(f"{who}: pte table {frame + half * self.half_size(k):#x} has "
                            f"_refcount bits {page.bits:#04x}: "
                            + ("double free" if need_set else "allocating a half in use"))
        page.bits ^= bits
        return page.bits

    def set_active(self, frame: int) -> None:
        self._page(frame, "SetPageActive").active = True

    def test_clear_active(self, frame: int) -> bool:
        page = self._page(frame, "TestClearPageActive")
        was, page.active = page.active, False
        return was

    # ---- pgtable_list ------------------------------------------------------------------
    @staticmethod
    def list_add(lst: list[int], frame: int, tail: bool) -> None:
        if frame in lst:
            raise KernelBug(f"list_add of page {frame:#x}, already on pgtable_list: list corruption")
        if tail:
            lst.append(frame)
        else:
            lst.insert(0, frame)

    @staticmethod
    def list_del_init(lst: list[int], frame: int) -> None:
        if frame in lst:
            lst.remove(frame)

    # ---- page_table_alloc ----------------------------------------------------------------
    def pte_alloc(self, k: Kernel, mm: MM) -> s.KernelGen:
        lock, lst = self.context(mm)
        table = None
        yield s.SpinLock(lock)
        if lst:
            frame = lst[0]
            mask = yield s.KernelAtomic(lambda: k.policy.atomic_read(frame),
                                        f"page_table_alloc: atomic_read(_refcount) of {frame:#x}")
            # A pending half is not free yet: reusing it before its grace
            # period would hand a walked table to a new owner.
            mask = (mask | (mask >> 4)) & AA
            if mask != AA:
                bit = mask & 1  # the lower half is taken: use the upper
                table = frame + bit * self.half_size(k)
                yield s.KernelAtomic(
                    lambda: k.policy.atomic_xor(k, frame, 0x01 << bit, "page_table_alloc",
                                                need_clear=0x11 << bit),
                    f"page_table_alloc: atomic_xor_bits(AA {0x01 << bit:#x}) of {frame:#x}")
                self.list_del_init(lst, frame)
                self._sub(k, frame, bit, LIVE)
        yield s.SpinUnlock(lock)
        if table is not None:
            return table
        frame = k.frames.alloc("pte tables (2K halves)", k.cpu, FrameState.PGTABLE, level="pte")
        # memset64(table, _PAGE_INVALID, 2 * PTRS_PER_PTE): both halves empty
        init = k.arch.table_init("pte")
        k.mem.write(frame, init)
        k.mem.write(frame + self.half_size(k), init)
        self.pages[frame] = HalfPage(bits=0x01)
        self._sub(k, frame, 0, LIVE)
        self._sub(k, frame, 1, FREE)
        yield s.SpinLock(lock)
        self.list_add(lst, frame, tail=False)
        yield s.SpinUnlock(lock)
        return frame

    # ---- page_table_free / pte_free_defer ---------------------------------------------------
    def pte_free(self, k: Kernel, mm: MM, pa: int) -> s.KernelGen:
        yield from self.page_table_free(k, mm, pa, deferred=False)

    def pte_free_defer(self, k: Kernel, mm: MM, pa: int) -> s.KernelGen:
        """SetPageActive(), then page_table_free(): the page waits for a grace period."""
        frame, _bit = self.half_of(k, pa)
        yield s.KernelAtomic(lambda: k.policy.set_active(frame), f"pte_free_defer: SetPageActive({frame:#x})")
        yield from self.page_table_free(k, mm, pa, deferred=True)

    def page_table_free(self, k: Kernel, mm: MM, pa: int, deferred: bool) -> s.KernelGen:
        lock, lst = self.context(mm)
        frame, bit = self.half_of(k, pa)
        yield s.SpinLock(lock)
        mask = yield s.KernelAtomic(
            lambda: k.policy.atomic_xor(k, frame, 0x11 << bit, "page_table_free",
                                        need_set=0x01 << bit, need_clear=0x10 << bit),
            f"page_table_free: atomic_xor_bits(0x11 << {bit}) of {frame:#x}")
        if mask & AA and not self.pages[frame].active:
            # the other half is in use and no free of this page was deferred:
            # the freed half is reused first
            self.list_add(lst, frame, tail=False)
        else:
            self.list_del_init(lst, frame)
        self._sub(k, frame, bit, PENDING)
        yield s.SpinUnlock(lock)
        mask = yield s.KernelAtomic(
            lambda: k.policy.pp_clear(k, frame, bit, PENDING if deferred else FREE),
            f"page_table_free: atomic_xor_bits(0x10 << {bit}) of {frame:#x}")
        if mask:
            return
        was_active = yield s.KernelAtomic(lambda: k.policy.test_clear_active(frame),
                                          f"page_table_free: TestClearPageActive({frame:#x})")
        if was_active:
            yield self.call_rcu_free(k, frame)
        else:
            self.pte_free_now(k, frame, deferred=False)

    def pp_clear(self, k: Kernel, frame: int, bit: int, state: str) -> int:
        """The PP half of a free: xor 0x10 << half; the half is now `state`."""
        mask = self.atomic_xor(k, frame, 0x10 << bit, "page_table_free", need_set=0x10 << bit)
        self._sub(k, frame, bit, state)
        return mask

    def call_rcu_free(self, k: Kernel, frame: int) -> s.CallRcu:
        k.frames.set_state(frame, FrameState.RCU_PENDING, k.cpu, "pte table page: call_rcu(pte_free_now)")
        return s.CallRcu(lambda: k.policy.pte_free_now(k, frame, deferred=True),
                         f"pte_free_now: free pte table page {frame:#x}", head=frame)

    def pte_free_now(self, k: Kernel, frame: int, deferred: bool) -> None:
        """pagetable_pte_dtor() + pagetable_free() of the whole page."""
        page = self.pages.pop(frame, None)
        if page is None:
            raise KernelBug(f"pte_free_now: page {frame:#x} freed twice")
        # free_pages_prepare(): halves still allocated or pending, or PG_active
        wrong = ([f"_refcount bits {page.bits:#x}"] if page.bits else []) \
            + (["PG_active set"] if page.active else [])
        if wrong:
            raise BadPageState(f"BUG: Bad page state: pte table page {frame:#x} freed with "
                               f"{', '.join(wrong)}")
        fi = k.frames.info(frame)
        for off in sorted(fi.subtables):
            fi.subtables[off] = FREE
        k.release_table_frame(frame, "pte", deferred)

    # ---- page_table_free_rcu / __tlb_remove_table ----------------------------------------------
    def pte_free_tlb(self, k: Kernel, mm: MM, pa: int) -> s.KernelGen:
        """page_table_free_rcu(): AA off and PP on now, PP off after a grace period."""
        lock, lst = self.context(mm)
        frame, bit = self.half_of(k, pa)
        yield s.SpinLock(lock)
        mask = yield s.KernelAtomic(
            lambda: k.policy.atomic_xor(k, frame, 0x11 << bit, "page_table_free_rcu",
                                        need_set=0x01 << bit, need_clear=0x10 << bit),
            f"page_table_free_rcu: atomic_xor_bits(0x11 << {bit}) of {frame:#x}")
        if mask & AA and not self.pages[frame].active:
            # listed at the tail: reusable once __tlb_remove_table clears PP
            self.list_add(lst, frame, tail=True)
        else:
            self.list_del_init(lst, frame)
        self._sub(k, frame, bit, PENDING)
        yield s.SpinUnlock(lock)
        yield s.CallRcu(lambda: k.policy.tlb_remove_table_rcu(k, frame, bit),
                        f"__tlb_remove_table: pte table {frame + bit * self.half_size(k):#x}")

    def tlb_remove_table_rcu(self, k: Kernel, frame: int, bit: int) -> None:
        """__tlb_remove_table() for half `bit`, after its grace period."""
        mask = self.atomic_xor(k, frame, 0x10 << bit, "__tlb_remove_table", need_set=0x10 << bit)
        self._sub(k, frame, bit, FREE)
        if mask:
            return
        if self.test_clear_active(frame):
            k.perform(k.cpu, self.call_rcu_free(k, frame))
        else:
            self.pte_free_now(k, frame, deferred=True)

    # ---- checks for tests and checkers ------------------------------------------------------------
    def invariants(self, k: Kernel, mm: MM) -> list[str]:
        """Every way the pages, the list and the half states disagree (empty: consistent)."""
        problems: list[str] = []
        _lock, lst = self.context(mm)
        if len(set(lst)) != len(lst):
            problems.append(f"pgtable_list holds a page twice: {[hex(f) for f in lst]}")
        for frame in sorted(self.pages):
            page = self.pages[frame]
            fi = k.frames.info(frame)
            if page.bits & ~(AA | PP):
                problems.append(f"page {frame:#x}: stray _refcount bits {page.bits:#04x}")
            waiting = fi.state is FrameState.RCU_PENDING and not page.bits and not page.active
            if fi.state is not FrameState.PGTABLE and not waiting:
                # an emptied page waits for pte_free_now, else it is a table page
                problems.append(f"page {frame:#x} holds tables but is {fi.state.value}")
            for bit in (0, 1):
                state = fi.subtables.get(bit * self.half_size(k))
                if page.bits & (0x01 << bit) and state != LIVE:
                    problems.append(f"page {frame:#x} half {bit}: allocated but {state}")
                if not page.bits & (0x01 << bit) and state == LIVE:
                    problems.append(f"page {frame:#x} half {bit}: live but not allocated")
                if page.bits & (0x10 << bit) and state != PENDING:
                    problems.append(f"page {frame:#x} half {bit}: PP set but {state}")
                if page.bits & (0x01 << bit) and page.bits & (0x10 << bit):
                    problems.append(f"page {frame:#x} half {bit}: both AA and PP")
            if frame in lst:
                if page.active:
                    problems.append(f"page {frame:#x} is PG_active but listed")
                if page.bits & AA not in (0x01, 0x02):
                    problems.append(f"page {frame:#x} is listed with AA {page.bits & AA:#x}")
            elif page.bits & AA in (0x01, 0x02) and not page.active and not page.bits & PP:
                # one half in use, the other free, and nothing deferred: it
                # must be reusable (else the free half leaks)
                problems.append(f"page {frame:#x} has a free half but is not listed")
        for frame in lst:
            if frame not in self.pages:
                problems.append(f"pgtable_list holds {frame:#x}, which holds no tables")
        return problems
