"""The hypercall table: every call's number, name, argument count and meaning.

One home for the ABI's facts. guest/asm reads it for the `SYS_<name>`
constants, the scenario format for call lists by name, `ptemu list
hypercalls` for its listing, and emu.hypercall's dispatcher for argument
counts; emu.services binds a handler to each name. How the number and
arguments travel (trap instruction, registers) is each arch's `callconv`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Call:
    nr: int
    name: str
    nargs: int
    doc: str


CALLS: dict[int, Call] = {c.nr: c for c in (
    Call(0, "exit", 1, "exit(code): this vCPU's program is finished."),
    Call(1, "log", 1, "log(value): put a value in the trace."),
    Call(2, "getcpu", 0, "getcpu(): the vCPU's index."),
    Call(3, "mmap", 3, "mmap(addr, len, kind): a fixed mapping; kind 0 anon, 1 shmem, 2 file, "
                       "3 shmem MAP_PRIVATE, 4 file MAP_PRIVATE (reads map the page cache's "
                       "page read-only, writes copy it: do_cow_fault, wp_page_copy)."),
    Call(4, "munmap", 2, "munmap(addr, len): unmap [addr, addr+len), splitting the VMAs at its "
                         "ends (len rounded up to a page), zap, free the page tables no VMA "
                         "still uses; the caller's own text and stack too."),
    Call(5, "truncate", 2, "truncate(addr, size): truncate the shmem/file object mapped at addr "
                           "to size bytes."),
    Call(6, "fault_around", 1, "fault_around(addr): map the page-cache pages around addr "
                               "(filemap_map_pages)."),
    Call(7, "madvise", 3, "madvise(addr, len, advice): MADV_DONTNEED (4, with empty-table "
                          "reclaim), MADV_HUGEPAGE / MADV_NOHUGEPAGE (14 / 15: VM_HUGEPAGE, VMAs split "
                          "at its ends), MADV_PAGEOUT (21: reclaim; anon pages to swap) or "
                          "MADV_COLLAPSE (25, shmem/file/anon)."),
    Call(8, "gup_fast", 4, "gup_fast(addr, nr, out, write): pin pages locklessly, write their "
                           "physical addresses (one word each) to out, unpin; returns the "
                           "number pinned."),
    Call(9, "khugepaged_scan", 1, "khugepaged_scan(addr): one khugepaged pass over the PMD range "
                                  "at addr (shmem/file: collapse_file and retract, no mmap_lock; "
                                  "anon, VM_HUGEPAGE VMAs only: collapse_huge_page)."),
    Call(10, "rcu_barrier", 0, "rcu_barrier(): wait until every queued RCU callback has run."),
    Call(11, "race_begin", 0, "race_begin(): the end of this vCPU's set-up. A program that calls "
                              "it runs free up to it when the machine is built, at Unicorn "
                              "speed and before any schedule; only what follows is "
                              "interleaved. Returns 0."),
    Call(12, "exit_group", 1, "exit_group(code): every vCPU of the caller's process exits "
                              "with code (the others at their next return to user mode); "
                              "the last one tears the mm down (exit_mmap)."),
    Call(13, "fork", 1, "fork(cpu): fork the caller's process; the child, a new process "
                        "named by the `child` key of the scenario's cpu entry number cpu, a "
                        "copy of the caller's address space (dup_mmap: anon pages shared copy-on-write, write-protected in "
                        "both; file VMAs without an anon_vma not copied; pinned anon pages "
                        "copied now), runs that parked vCPU's program. Returns the child's "
                        "process number (> 0), or -EINVAL."),
    Call(14, "pin_user_pages", 3, "pin_user_pages(addr, nr, write): pin_user_pages_fast "
                                  "(FOLL_PIN | FOLL_LONGTERM): pin up to nr pages from addr "
                                  "locklessly, backing off while a fork write-protects "
                                  "(mm->write_protect_seq), and keep the pins, as a driver does "
                                  "for DMA, until pin_user_pages(0, 0, 0) unpins them all or "
                                  "the vCPU exits. Returns the number pinned (unpinned). The "
                                  "GUP pin oracle reports a pinned page its process stops "
                                  "mapping."),
    Call(15, "mremap", 5, "mremap(addr, old_len, new_len, flags, new_addr): shrink, grow in "
                          "place, or with MREMAP_MAYMOVE|MREMAP_FIXED (1|2) move the mapping "
                          "and its page tables to new_addr (move_page_tables: whole PTE "
                          "tables by their pmd where the arch can, else pte by pte); the new "
                          "address, or -EINVAL / -EFAULT / -ENOMEM as Linux. MREMAP_DONTUNMAP "
                          "and a move to a kernel-chosen address are not modelled."),
    Call(16, "mprotect", 3, "mprotect(addr, len, prot): change the protection of [addr, "
                            "addr+len) (prot: PROT_READ 1 | PROT_WRITE 2 | PROT_EXEC 4), "
                            "splitting and merging VMAs; 0, -ENOMEM if the range is not all "
                            "mapped, -EINVAL for a bad addr or prot (PROT_NONE is not "
                            "modelled). A later write to a read-only VMA is SIGSEGV."),
    Call(20, "mincore", 3, "mincore(addr, len, vec): one byte per page of [addr, addr+len) "
                           "written to vec, 1 if resident (mapped, or in the page cache of a "
                           "shmem/file mapping), else 0; 0, or -ENOMEM if the range is not "
                           "all mapped."),
    Call(21, "secondary_attach", 0, "secondary_attach(): give the caller's mm a secondary MMU (a "
                                    "device-like shadow TLB and page-walk cache, an mmu notifier "
                                    "subscriber); -EEXIST if it has one."),
    Call(22, "secondary_read", 3, "secondary_read(addr, count, rounds): the secondary MMU reads "
                                  "count pages from addr, rounds times, through its own "
                                  "translations (filled by its own walk, faulting pages in); "
                                  "returns the reads that got one."),
    Call(25, "split_huge_pmd", 1, "split_huge_pmd(addr): __split_huge_pmd() of the huge pmd "
                                  "mapping addr (anon: pmdp_invalidate, withdraw the deposited "
                                  "table, populate it; file: clear); 0, or -EINVAL if none."),
    Call(23, "uffdio_register", 3, "uffdio_register(addr, len, mode): UFFDIO_REGISTER whole VMAs "
                                   "of the range; mode 1 MISSING, 2 WP, 3 both."),
    Call(24, "uffdio_copy", 3, "uffdio_copy(dst, src, len): UFFDIO_COPY len bytes from src into "
                               "the registered anon/shmem range at dst (mfill_atomic); bytes "
                               "copied, or -EAGAIN / -EEXIST / -ENOENT / -EFAULT if none."),
    Call(31, "uffdio_move", 3, "uffdio_move(dst, src, len): UFFDIO_MOVE len bytes of anon pages "
                               "from src to the registered anon range at dst (move_pages_pte, "
                               "no copy); bytes moved, or -EEXIST / -ENOENT / -EBUSY / -EINVAL "
                               "if none."),
    Call(30, "migrate", 2, "migrate(addr, len): move_pages() of every page mapped in the range "
                           "to a new frame (migration entries, copy, remove_migration_ptes; no "
                           "mmap_lock while it runs); returns the folios moved."),
)}


def add_call(call: Call) -> None:
    """Declare a call beyond the built-in ones (a test's or an extension's own)."""
    have = CALLS.get(call.nr)
    if have is not None and have != call:
        raise ValueError(f"hypercall {call.nr} is already {have.name!r}")
    CALLS[call.nr] = call


def by_name() -> dict[str, int]:
    """Number of every call, by name."""
    return {c.name: c.nr for c in CALLS.values()}
