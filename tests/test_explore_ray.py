"""--backend ray: the same schedules and the same first failure as --jobs,
and no Ray import unless that backend is asked for."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import pytest

from emu.cli import main
from emu.explore import ExploreConfig, explore


def test_nothing_imports_ray_unless_the_backend_is_asked_for():
    code = ("import sys; import emu.cli.main, emu.explore, emu.fuzz, emu.explore_ray;"
            "from emu.explore import ExploreConfig, explore;"
            "explore(ExploreConfig('torn_pae', schedules=2, minimize=False));"
            "assert 'ray' not in sys.modules, 'ray imported'")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_ray_backend_without_ray_is_one_line_and_exit_2(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    assert main(["explore", "torn_pae", "--schedules", "2", "--backend", "ray", "--no-db",
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'ptemu[ray]'" in err[0]


def test_address_without_the_ray_backend_is_bad_input(capsys):
    assert main(["explore", "torn_pae", "--address", "auto", "--no-db", "--quiet"]) == 2
    assert "--address is for --backend ray" in capsys.readouterr().err


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'ptemu[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_finds_the_same_first_failure_as_jobs(local_ray):
    cfg = ExploreConfig("retract_x86", variants=("pte_free_immediate",), schedules=160,
                        minimize=False)
    by_jobs = explore(replace(cfg, jobs=2))
    by_ray = explore(replace(cfg, jobs=2, backend="ray"))
    assert by_jobs.failure is not None
    assert by_ray.failure == by_jobs.failure  # index, kind, message, schedule, steps
    assert by_ray.stats.schedules == by_jobs.stats.schedules
    assert by_ray.report.kind == by_jobs.report.kind


@pytest.mark.slow
def test_ray_runs_the_same_clean_schedules_as_jobs(local_ray):
    cfg = ExploreConfig("torn_pae", schedules=48, minimize=False)
    by_jobs = explore(replace(cfg, jobs=2))
    by_ray = explore(replace(cfg, backend="ray"))  # width: the local instance's CPUs
    assert by_jobs.failure is None and by_ray.failure is None
    assert (by_ray.stats.schedules, by_ray.stats.steps) == (by_jobs.stats.schedules,
                                                            by_jobs.stats.steps)


@pytest.mark.slow
def test_ray_fuzzes_the_same_workloads_as_jobs(local_ray, tmp_path):
    from emu.fuzz import FuzzConfig, fuzz
    cfg = FuzzConfig(arch="x86-pae", workloads=4, schedules=4, workdir=str(tmp_path))

    def outcomes(res):  # noqa: ANN001, ANN202
        return [(o.index, o.name, o.kind, o.schedules, o.steps) for o in res.outcomes]
    assert outcomes(fuzz(replace(cfg, backend="ray"))) == outcomes(fuzz(replace(cfg, jobs=2)))
