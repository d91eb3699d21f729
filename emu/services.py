"""The mm services guests call: mmap, munmap, truncate, fault-around, madvise,
GUP-fast, a khugepaged pass, rcu_barrier, and a few probes for experiments.

Owns argument validation (a bad argument is -EINVAL / -EFAULT / -EEXIST and
a trace line, never a host exception) and the glue from a hypercall to the
kernel routine that does the work. The routines themselves live in
emu/kernel/.
"""

from __future__ import annotations

from arch.base import Access, Prot
from emu.hypercall import (
    EEXIST,
    EFAULT,
    EINVAL,
    ENOMEM,
    Caller,
    HypercallError,
    ServiceHost,
    check_user_range,
    service,
)
from emu.kernel import steps as s
from emu.kernel.filemap import PageCache
from emu.kernel.mm import MM, VMA
from emu.kernel.mprotect import PROT_EXEC, PROT_READ, PROT_WRITE, prot_of
from emu.kernel.mremap import MREMAP_DONTUNMAP, MREMAP_FIXED, MREMAP_MAYMOVE

MAP_KINDS = {0: "anon", 1: "shmem", 2: "file"}
MAP_PRIVATE_KINDS = {3: "shmem", 4: "file"}  # MAP_PRIVATE of a new shmem / file object
MADV_DONTNEED = 4  # include/uapi/asm-generic/mman-common.h
MADV_PAGEOUT = 21
MADV_COLLAPSE = 25
MADV_HUGEPAGE, MADV_NOHUGEPAGE = 14, 15
GUP_MAX_PAGES = 4096


def user_page_pa(m: ServiceHost, cpu: Caller, va: int, write: bool = True) -> int | None:
    """Where a user write (or read) of `va` lands, by Linux's view of the tables
    (pte_write, not the hardware's dirty-tracking bits), or None if it would not be
    allowed."""
    a, k = m.arch, m.kernel
    mm = m.mm_of(cpu)
    vma = mm.find_vma(va)
    if vma is None or (write and not vma.prot.write):
        return None
    table = mm.root
    names = [lv.name for lv in a.levels]
    for name in names[: names.index("pmd")]:
        val = k.read_entry_now(k.entry_addr(name, table, va), a.level(name).entry_size)
        if a.entry_none(name, val) or not a.entry_present(name, val):
            return None
        table = a.table_pa(name, val)
    pmd = k.read_entry_now(k.entry_addr("pmd", table, va), a.level("pmd").entry_size)
    if a.entry_none("pmd", pmd):
        return None
    if a.pmd_trans_huge(pmd):
        return a.pmd_huge_pa(pmd) + va % a.pmd_size
    pte = k.read_entry_now(k.entry_addr("pte", a.table_pa("pmd", pmd), va), a.level("pte").entry_size)
    if not a.pte_present(pte) or a.pte_none(pte) or (write and not a.pte_write(pte)):
        return None
    return a.pte_pa(pte) + va % a.page_size


def copy_to_user(m: ServiceHost, cpu: Caller, addr: int, values: list[int], width: int) -> None:
    """Write words to guest memory through the guest's own mapping, or -EFAULT."""
    a = m.arch
    data = b"".join(v.to_bytes(width, a.byteorder) for v in values)
    check_user_range(m, addr, max(len(data), 1))
    off = 0
    while off < len(data):
        va = addr + off
        pa = user_page_pa(m, cpu, va)
        if pa is None or not m.mem.contains(pa, min(len(data) - off, a.page_size)):
            raise HypercallError(EFAULT, f"output buffer {va:#x} not mapped writable")
        chunk = min(len(data) - off, a.page_size - va % a.page_size)
        m.mem.write(pa, data[off: off + chunk])
        off += chunk


@service("mmap")
def sys_mmap(m: ServiceHost, cpu: Caller, addr: int, length: int, kind: int) -> s.KernelGen:
    """Validate and run `mmap` (the call itself is described in emu.abi)."""
    check_user_range(m, addr, length, m.arch.page_size)
    if kind not in MAP_KINDS and kind not in MAP_PRIVATE_KINDS:
        raise HypercallError(EINVAL, f"kind {kind} is not 0 (anon), 1 (shmem), 2 (file), "
                             "3 (private shmem) or 4 (private file)")
    private = kind in MAP_PRIVATE_KINDS
    return _mmap(m, m.mm_of(cpu), addr, length,
                 MAP_PRIVATE_KINDS[kind] if private else MAP_KINDS[kind], private)


def _mmap(m: ServiceHost, mm: MM, addr: int, length: int, kind: str,
          private: bool = False) -> s.KernelGen:
    yield s.DownWrite(mm.mmap_lock)
    if mm.overlaps(addr, addr + length):
        yield s.UpWrite(mm.mmap_lock)
        return -EEXIST
    vma = VMA(addr, addr + length, kind, Prot(), f"mmap@{addr:#x}", private=private)
    mm.insert_vma(vma)
    if kind != "anon":
        cache = PageCache(vma.name, kind, length // m.arch.page_size)
        vma.file = cache
        cache.vmas.append(vma)
    yield s.UpWrite(mm.mmap_lock)
    return 0


@service("munmap")
def sys_munmap(m: ServiceHost, cpu: Caller, addr: int, length: int) -> s.KernelGen:
    """Validate and run `munmap` (the call itself is described in emu.abi).

    As v6.12 do_vmi_munmap(): addr must be page-aligned, len is rounded up
    to a page, and an empty or out-of-range result is -EINVAL."""
    ps = m.arch.page_size
    check_user_range(m, addr, length)
    if addr % ps:
        raise HypercallError(EINVAL, f"addr {addr:#x} not page-aligned")
    length = -(-length // ps) * ps
    check_user_range(m, addr, length)
    return m.kernel.do_munmap(m.mm_of(cpu), addr, addr + length)


@service("truncate")
def sys_truncate(m: ServiceHost, cpu: Caller, addr: int, new_size: int) -> s.KernelGen:
    """Validate and run `truncate` (the call itself is described in emu.abi)."""
    cache = m.kernel.cache_of(m.mm_of(cpu), addr)
    if cache is None:
        raise HypercallError(EINVAL, f"{addr:#x} is not in a shmem or file mapping")
    if new_size < 0 or new_size % m.arch.page_size:
        raise HypercallError(EINVAL, f"size {new_size:#x} not a multiple of the page size")
    return m.kernel.truncate(cache, new_size // m.arch.page_size)


@service("fault_around")
def sys_fault_around(m: ServiceHost, cpu: Caller, addr: int) -> s.KernelGen:
    """Validate and run `fault_around` (the call itself is described in emu.abi)."""
    check_user_range(m, addr, 1)
    if m.kernel.cache_of(m.mm_of(cpu), addr) is None:
        raise HypercallError(EINVAL, f"{addr:#x} is not in a shmem or file mapping")
    return m.kernel.handle_mm_fault(addr, Access.READ, m.mm_of(cpu))


@service("madvise")
def sys_madvise(m: ServiceHost, cpu: Caller, addr: int, length: int, advice: int) -> s.KernelGen:
    """Validate and run `madvise` (the call itself is described in emu.abi)."""
    check_user_range(m, addr, length, m.arch.page_size)
    if advice == MADV_DONTNEED:
        return m.kernel.madvise_dontneed(m.mm_of(cpu), addr, addr + length)
    if advice in (MADV_HUGEPAGE, MADV_NOHUGEPAGE):
        require_thp(m, "MADV_HUGEPAGE")
        return m.kernel.madvise_hugepage(m.mm_of(cpu), addr, addr + length, advice)
    if advice == MADV_PAGEOUT:
        return m.kernel.madvise_pageout(m.mm_of(cpu), addr, addr + length)
    if advice != MADV_COLLAPSE:
        raise HypercallError(EINVAL, f"advice {advice} not modelled (MADV_DONTNEED=4, "
                             "MADV_HUGEPAGE=14, MADV_NOHUGEPAGE=15, MADV_PAGEOUT=21, "
                             "MADV_COLLAPSE=25)")
    require_thp(m, "MADV_COLLAPSE")
    return m.kernel.madvise_collapse(m.mm_of(cpu), addr, addr + length)


def require_thp(m: ServiceHost, what: str) -> None:
    """Where the arch has no PMD-sized pages Linux has no CONFIG_TRANSPARENT_HUGEPAGE:
    madvise_behavior_valid() refuses MADV_COLLAPSE with -EINVAL and there is no khugepaged."""
    if not m.arch.supports_huge_pmd():
        raise HypercallError(EINVAL, f"{what}: {m.arch.name} has no PMD-sized pages "
                             "(no CONFIG_TRANSPARENT_HUGEPAGE)")


@service("split_huge_pmd")
def sys_split_huge_pmd(m: ServiceHost, cpu: Caller, addr: int) -> s.KernelGen:
    """Validate and run `split_huge_pmd` (the call itself is described in emu.abi)."""
    check_user_range(m, addr, 1)
    require_thp(m, "split_huge_pmd")
    return _split_huge_pmd(m.kernel, m.mm_of(cpu), addr)


def _split_huge_pmd(k, mm: MM, addr: int) -> s.KernelGen:  # noqa: ANN001
    yield s.DownRead(mm.mmap_lock)
    ret = yield from k.split_huge_pmd_address(mm, addr)
    yield s.UpRead(mm.mmap_lock)
    return ret


@service("gup_fast")
def sys_gup_fast(m: ServiceHost, cpu: Caller, addr: int, nr_pages: int, out: int,
                 write: int) -> s.KernelGen:
    """Validate and run `gup_fast` (the call itself is described in emu.abi)."""
    check_user_range(m, addr, max(nr_pages, 1) * m.arch.page_size)
    if not 0 < nr_pages <= GUP_MAX_PAGES:
        raise HypercallError(EINVAL, f"nr_pages {nr_pages} not in 1..{GUP_MAX_PAGES}")
    check_user_range(m, out, nr_pages * m.arch.word_size)
    return _gup(m, cpu, addr, nr_pages, out, bool(write))


def _gup(m: ServiceHost, cpu: Caller, addr: int, nr: int, out: int, write: bool) -> s.KernelGen:
    pinned = yield from m.kernel.gup_fast(m.mm_of(cpu), addr, nr, write)
    try:
        if pinned:
            copy_to_user(m, cpu, out, [pa for pa, _ in pinned], m.arch.word_size)
    except HypercallError as exc:
        m.kernel.unpin_user_pages(pinned)
        yield s.Note(f"gup_fast: -{exc.errno} ({exc.why})")
        return -exc.errno
    m.kernel.unpin_user_pages(pinned)
    return len(pinned)


@service("khugepaged_scan")
def sys_khugepaged_scan(m: ServiceHost, cpu: Caller, addr: int) -> s.KernelGen:
    """Validate and run `khugepaged_scan` (the call itself is described in emu.abi)."""
    check_user_range(m, addr, 1)
    require_thp(m, "khugepaged")
    return m.kernel.khugepaged_scan_file(m.mm_of(cpu), addr)


@service("mincore")
def sys_mincore(m: ServiceHost, cpu: Caller, addr: int, length: int, vec: int) -> s.KernelGen:
    """Validate and run `mincore` (the call itself is described in emu.abi)."""
    ps = m.arch.page_size
    check_user_range(m, addr, length)
    pages = -(-length // ps)
    check_user_range(m, vec, pages)  # access_ok(vec, pages)

    def copy_out(offset: int, data: bytes) -> bool:
        try:
            copy_to_user(m, cpu, vec + offset, list(data), 1)
        except HypercallError:
            return False
        return True

    return m.kernel.mincore(m.mm_of(cpu), addr, length, copy_out)


@service("secondary_attach")
def sys_secondary_attach(m: ServiceHost, cpu: Caller) -> s.KernelGen:
    """Validate and run `secondary_attach` (the call itself is described in emu.abi)."""
    return m.kernel.secondary_attach(m.mm_of(cpu))


SECONDARY_MAX_READS = 4096


@service("secondary_read")
def sys_secondary_read(m: ServiceHost, cpu: Caller, addr: int, count: int,
                       rounds: int) -> s.KernelGen:
    """Validate and run `secondary_read` (the call itself is described in emu.abi)."""
    check_user_range(m, addr, max(count, 1) * m.arch.page_size)
    if not 0 < count * rounds <= SECONDARY_MAX_READS:
        raise HypercallError(EINVAL, f"count {count} x rounds {rounds} not in 1..{SECONDARY_MAX_READS}")
    if m.kernel.secondary_of(m.mm_of(cpu)) is None:
        raise HypercallError(EINVAL, "no secondary MMU attached (secondary_attach first)")
    return m.kernel.secondary_read(m.mm_of(cpu), addr, count, rounds)


UFFD_MODES = (1, 2, 3)  # UFFDIO_REGISTER_MODE_MISSING | _WP


@service("uffdio_register")
def sys_uffdio_register(m: ServiceHost, cpu: Caller, addr: int, length: int,
                        mode: int) -> s.KernelGen:
    """Validate and run `uffdio_register` (the call itself is described in emu.abi)."""
    check_user_range(m, addr, length, m.arch.page_size)
    if mode not in UFFD_MODES:
        raise HypercallError(EINVAL, f"mode {mode} is not 1 (MISSING), 2 (WP) or 3")
    return m.kernel.userfaultfd_register(m.mm_of(cpu), addr, addr + length, mode)


@service("uffdio_copy")
def sys_uffdio_copy(m: ServiceHost, cpu: Caller, dst: int, src: int, length: int) -> s.KernelGen:
    """Validate and run `uffdio_copy` (the call itself is described in emu.abi)."""
    ps = m.arch.page_size
    check_user_range(m, dst, length, ps)
    check_user_range(m, src, length, ps)

    def copy_from_user(offset: int) -> bytes | None:
        pa = user_page_pa(m, cpu, src + offset, write=False)
        if pa is None or pa + ps > m.mem.size:
            return None
        return m.mem.read(pa, ps)

    return m.kernel.mfill_atomic_copy(m.mm_of(cpu), dst, length, copy_from_user)


@service("rcu_barrier")
def sys_rcu_barrier(m: ServiceHost, cpu: Caller) -> s.KernelGen:
    """Validate and run `rcu_barrier` (the call itself is described in emu.abi)."""
    return _barrier()


def _barrier() -> s.KernelGen:
    yield s.RcuBarrier()
    return 0


@service("migrate")
def sys_migrate(m: ServiceHost, cpu: Caller, addr: int, length: int) -> s.KernelGen:
    """Validate and run `migrate` (the call itself is described in emu.abi)."""
    check_user_range(m, addr, length, m.arch.page_size)
    return m.kernel.migrate_range(m.mm_of(cpu), addr, addr + length)


@service("fork")
def sys_fork(m: ServiceHost, cpu: Caller, index: int) -> s.KernelGen:
    """Validate and run `fork` (the call itself is described in emu.abi)."""
    name = m.fork_child(cpu, index)
    if name is None:
        raise HypercallError(EINVAL, f"[[cpu]] {index} is no parked child (child = ...) of "
                             "the caller's process, or it was forked already")
    return _fork(m, cpu, index, name)


def _fork(m: ServiceHost, cpu: Caller, index: int, name: str) -> s.KernelGen:
    child = yield from m.kernel.dup_mm(m.mm_of(cpu), name)
    m.start_forked(index, child)
    return m.kernel.mms.index(child)  # the child's "pid": its process number, > 0


@service("pin_user_pages")
def sys_pin_user_pages(m: ServiceHost, cpu: Caller, addr: int, nr_pages: int,
                       write: int) -> s.KernelGen | int:
    """Validate and run `pin_user_pages` (the call itself is described in emu.abi)."""
    if nr_pages == 0:
        return m.kernel.release_pins(cpu.index)
    check_user_range(m, addr, max(nr_pages, 1) * m.arch.page_size)
    if not 0 < nr_pages <= GUP_MAX_PAGES:
        raise HypercallError(EINVAL, f"nr_pages {nr_pages} not in 0..{GUP_MAX_PAGES}")
    return _pin(m, cpu, addr, nr_pages, bool(write))


def _pin(m: ServiceHost, cpu: Caller, addr: int, nr: int, write: bool) -> s.KernelGen:
    mm = m.mm_of(cpu)
    pinned = yield from m.kernel.pin_user_pages_fast(mm, addr, nr, write)
    m.kernel.hold_pins(cpu.index, mm, addr, pinned)
    return len(pinned)
@service("mprotect")
def sys_mprotect(m: ServiceHost, cpu: Caller, addr: int, length: int, prot: int) -> s.KernelGen | int:
    """Validate and run `mprotect` (the call itself is described in emu.abi).

    As v6.12 do_mprotect_pkey(): addr must be page-aligned, len is rounded up
    to a page and 0 does nothing, unknown prot bits are -EINVAL."""
    ps = m.arch.page_size
    if addr % ps:
        raise HypercallError(EINVAL, f"addr {addr:#x} not page-aligned")
    if prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC):
        raise HypercallError(EINVAL, f"prot {prot:#x} has unknown bits")
    if prot == 0:
        raise HypercallError(EINVAL, "PROT_NONE is not modelled")
    if length == 0:
        return 0
    length = -(-length // ps) * ps
    limit = 1 << m.arch.va_bits
    if addr + length > limit:
        raise HypercallError(ENOMEM, f"range {addr:#x}+{length:#x} beyond the address space")
    return m.kernel.do_mprotect(m.mm_of(cpu), addr, addr + length, prot_of(prot))


@service("mremap")
def sys_mremap(m: ServiceHost, cpu: Caller, addr: int, old_len: int, new_len: int, flags: int,
               new_addr: int) -> s.KernelGen:
    """Validate and run `mremap` (the call itself is described in emu.abi).

    As v6.12 do_mremap() / mremap_to(): unknown flags, MREMAP_FIXED without
    MREMAP_MAYMOVE, an unaligned address, a zero new length or a destination
    outside the address space are -EINVAL; lengths are rounded up to a page."""
    ps, limit = m.arch.page_size, 1 << m.arch.va_bits
    if flags & ~(MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP):
        raise HypercallError(EINVAL, f"flags {flags:#x} has unknown bits")
    if flags & MREMAP_DONTUNMAP:
        raise HypercallError(EINVAL, "MREMAP_DONTUNMAP is not modelled")
    if flags & MREMAP_FIXED and not flags & MREMAP_MAYMOVE:
        raise HypercallError(EINVAL, "MREMAP_FIXED without MREMAP_MAYMOVE")
    if addr % ps:
        raise HypercallError(EINVAL, f"addr {addr:#x} not page-aligned")
    old_len, new_len = -(-old_len // ps) * ps, -(-new_len // ps) * ps
    if not new_len:
        raise HypercallError(EINVAL, "new_len is 0")
    if not old_len:
        raise HypercallError(EINVAL, "old_len 0 (a duplicate of a shared mapping) is not modelled")
    if addr + old_len > limit:
        raise HypercallError(EFAULT, f"range {addr:#x}+{old_len:#x} beyond the address space")
    if flags & MREMAP_FIXED and (new_addr % ps or new_len > limit or new_addr > limit - new_len):
        raise HypercallError(EINVAL, f"new_addr {new_addr:#x}+{new_len:#x} unaligned or outside")
    return m.kernel.do_mremap(m.mm_of(cpu), addr, old_len, new_len, flags, new_addr)


@service("uffdio_move")
def sys_uffdio_move(m: ServiceHost, cpu: Caller, dst: int, src: int, length: int) -> s.KernelGen:
    """Validate and run `uffdio_move` (the call itself is described in emu.abi)."""
    ps = m.arch.page_size
    check_user_range(m, dst, length, ps)
    check_user_range(m, src, length, ps)
    return m.kernel.move_pages(m.mm_of(cpu), dst, src, length)
