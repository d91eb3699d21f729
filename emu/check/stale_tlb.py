"""Stale TLB use: a CPU translates through a TLB entry built from a frame
(a table it walked, or the page it maps) that has since been freed or
reused, because no flush reached that CPU.
"""

from __future__ import annotations

from typing import Any

from emu.check.base import Checker
from emu.check.uaf import frame_story
from emu.physmem import FrameState


class StaleTlb(Checker):
    name = "stale-tlb"

    def on_tlb_use(self, cpu: int, entry: Any, va: int, access: Any) -> None:
        frames = self.m.frames
        for pfn, gen in entry.gens:
            fi = frames.by_pfn(pfn)
            if fi.generation != gen or fi.state is FrameState.FREE:
                pa = pfn * frames.frame_size
                what = "page" if pa == entry.tr.pa_base - entry.tr.pa_base % frames.frame_size \
                    else "page table"
                raise self.fail(
                    f"cpu{cpu} used its TLB entry for {va:#x} (filled at step {entry.fill_step}) "
                    f"although the {what} frame {pa:#x} it was built from was "
                    f"{'reused' if fi.generation != gen else 'freed'} since, without a flush "
                    f"on this CPU. Frame history: {frame_story(fi)}", cpu=cpu, frame=pa)
