"""munmap() zaps and frees page tables under the mmap read lock, as Linux does.

Linux (4.20+, and both 6.6 do_vmi_align_munmap and 6.12
vms_complete_munmap_vmas) detaches the VMAs under mmap_write_lock and then
downgrades it: unmap_vmas and free_pgtables run while faults, madvise and
khugepaged in the remaining VMAs go on. Holding the write lock to the end
hides every race between munmap's table freeing and those paths.
"""

from __future__ import annotations

import textwrap

from emu import scenario
from emu.kernel.audit import audit
from emu.machine import Machine
from emu.sched import RandomStrategy

TWO_VMAS = """
[machine]
arch = "x86-pae"
cpus = 2
memory_mib = 32
[[vma]]
start = "8 * pmd_size"
size = "pmd_size"
kind = "anon"
populate = 4
[[vma]]
start = "16 * pmd_size"
size = "pmd_size"
kind = "anon"
populate = 4
[[cpu]]
program = "hypercall"
args = [4, "8 * pmd_size", "pmd_size"]
[[cpu]]
program = "hypercall"
args = [7, "16 * pmd_size", "pmd_size", 4]
"""


def _lock_events(m: Machine) -> list[tuple[str, str]]:
    """(lane, text) of every mmap_lock operation in the run's trace, in order."""
    return [(task, str(text)) for _step, task, kind, text in m.trace.records
            if kind == "kernel" and "(mmap_lock)" in str(text)]


def test_munmap_zaps_under_the_downgraded_lock_while_madvise_runs_beside_it():
    sc = scenario.parse(textwrap.dedent(TWO_VMAS), "<test>")
    overlapped = 0
    for seed in range(40):
        m = Machine(sc)
        r = m.run(RandomStrategy(seed))
        assert r.ok and r.exit_codes == {0: 0, 1: 0}, (seed, r)
        assert audit(m.kernel) == []
        ev = _lock_events(m)
        munmap = [text.split(": ", 1)[1] for lane, text in ev
                  if lane == "cpu0" and text.startswith("hypercall 4: ")]
        assert munmap == ["down_write(mmap_lock)", "downgrade_write(mmap_lock)",
                          "up_read(mmap_lock)"], (seed, munmap)
        d = ev.index(("cpu0", "hypercall 4: downgrade_write(mmap_lock)"))
        end = ev.index(("cpu0", "hypercall 4: up_read(mmap_lock)"))
        # madvise on cpu1 takes the read lock between munmap's downgrade and
        # its final up_read: the zap and the madvise really overlap
        if ("cpu1", "hypercall 7: down_read(mmap_lock)") in ev[d:end]:
            overlapped += 1
    assert overlapped > 0
