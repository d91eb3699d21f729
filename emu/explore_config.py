"""What one exploration is asked to do: `ExploreConfig`.

Its own module so that the explorer (emu.explore) and the reports it builds
(emu.report) can both name it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ExploreConfig:
    scenario: str
    arch: str | None = None
    variants: tuple[str, ...] = ()
    overrides: tuple[str, ...] = ()  # absolute "path.py:Class", added to the scenario's own
    strategy: str = "pct"
    schedules: int = 1000
    seed: int = 0
    depth: int | None = None  # PCT bug depth; exhaustive: preemption bound (None: none)
    jobs: int = 1
    max_steps: int = 200_000
    por: str = "frames"  # exhaustive: partial-order reduction mode
    minimize: bool = True
    minimize_budget: int = 400  # runs the minimiser may spend
    pct_k: int | None = None  # PCT run-length estimate (None: measured)
    evidence: bool = False  # count routines run and table-free orders (emu.evidence)
    quantum: int = 1  # guest instructions per guest step at most (emu.cpu.VCpu._slice)
    backend: str = "process"  # where --jobs workers run: "process" (local) or "ray" (emu.explore_ray)
    address: str | None = None  # ray: the cluster to use (None: start a local instance)

    def pct_depth(self) -> int:
        return self.depth if self.depth is not None else 2
