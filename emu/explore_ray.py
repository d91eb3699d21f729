"""The Ray backend: schedule batches and fuzz workloads on a Ray cluster.

`ptemu explore --backend ray` and `ptemu fuzz --backend ray` hand out the
same units of work as `--jobs` does with local processes (explore: chunks of
schedule indices, each schedule driven by its own index's sub-seed; fuzz:
workload indices), and the caller combines the results the same way
(explore: the failure with the lowest schedule index), so a seed gives the
same schedules and the same first failure on either backend, whatever the
number of workers and whichever finishes first.

Only this module imports Ray, and only when a Ray backend is asked for
(the `ptemu[ray]` extra). With no address a local Ray instance is started
(its CPUs: --jobs when given, else the machine's); with `--address` (for
example `ray://head:10001`, or `auto` on a node of the cluster) the work goes
to that cluster. Every node must have ptemu and its dependencies installed,
and see the scenario files it is given (built-in scenarios need nothing).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

# schedules per call to an actor: a Ray call costs milliseconds, a local
# process's much less, so Ray gets bigger chunks (which schedules a seed
# gives does not depend on the chunking)
CHUNK = 32


class RayUnavailable(RuntimeError):
    """Ray is not installed (or could not be started): said in one line."""


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RayUnavailable("--backend ray needs Ray: pip install 'ptemu[ray]'") from None
    return ray


def init(address: str | None, jobs: int) -> int:
    """Connect to (or start) Ray once per process; returns how many workers to use."""
    ray = _ray()
    if not ray.is_initialized():
        kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                              "configure_logging": False}
        if address:
            kw["address"] = address
        elif jobs > 1:
            kw["num_cpus"] = jobs
        try:
            ray.init(**kw)
        except Exception as exc:  # noqa: BLE001 - any start-up failure is one line for the user
            raise RayUnavailable(f"could not start or reach Ray ({address or 'local'}): "
                                 f"{exc}") from None
    if jobs > 1:
        return jobs
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


class _ExploreWorker:
    """One Ray actor: a machine built once, running chunks of schedule indices."""

    def __init__(self, cfg: Any, k: int) -> None:
        from emu.explore import build_machine
        self.m = build_machine(cfg)
        self.cfg = cfg
        self.k = k

    def run(self, start: int, stop: int) -> Any:
        from emu.explore import run_range
        return run_range(self.m, self.cfg, self.k, start, stop)


class ExplorePool:
    """Chunks of schedules on a pool of actors (as explore's worker processes)."""

    def __init__(self, cfg: Any, k: int) -> None:
        ray = _ray()
        self.ray = ray
        self.width = init(cfg.address, cfg.jobs)
        self.chunk = CHUNK
        actor = ray.remote(num_cpus=1)(_ExploreWorker)
        self.actors = [actor.remote(cfg, k) for _ in range(self.width)]
        self._next = 0

    def submit(self, start: int, stop: int) -> Any:
        a = self.actors[self._next % len(self.actors)]
        self._next += 1
        return a.run.remote(start, stop)

    def wait(self, pending: Iterable[Any]) -> list[Any]:
        ready, _ = self.ray.wait(list(pending), num_returns=1)
        return ready

    def result(self, handle: Any) -> Any:
        return self.ray.get(handle)

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)


class TaskPool:
    """Independent calls `fn(*args)` as Ray tasks (fuzz workloads)."""

    def __init__(self, address: str | None, jobs: int) -> None:
        ray = _ray()
        self.ray = ray
        self.width = init(address, jobs)
        self._remote: dict[Callable[..., Any], Any] = {}

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        if fn not in self._remote:
            self._remote[fn] = self.ray.remote(num_cpus=1)(fn)
        return self._remote[fn].remote(*args)

    def wait(self, pending: Iterable[Any]) -> list[Any]:
        ready, _ = self.ray.wait(list(pending), num_returns=1)
        return ready

    def result(self, handle: Any) -> Any:
        return self.ray.get(handle)

    def close(self) -> None:
        """Nothing to release: tasks end with their call (the Ray instance stays for reuse)."""
