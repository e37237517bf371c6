"""The parts of a backfill on a work pool that need no Prefect server: entrypoints, the
progress line, the flow module's attribute rules, the CLI's option checks."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conveyor.backends.prefect_pool import flow_entrypoint
from conveyor.ops import pool_flows
from conveyor.ops.pool_backfill import PoolProgress


def test_entrypoints_are_module_paths_the_flow_module_answers():
    path = flow_entrypoint("pipeline", "daily-features")
    module, _, attribute = path.rpartition(".")
    assert module == pool_flows.__name__
    assert attribute == "pipeline__daily-features"
    assert ":" not in path  # a module path: Prefect imports it, no file needed on the worker


@pytest.mark.parametrize("attribute", ["__wrapped__", "pipeline", "pipeline__", "other__x"])
def test_the_flow_module_refuses_what_is_not_a_flow(attribute):
    with pytest.raises(AttributeError):
        getattr(pool_flows, attribute)


def test_the_progress_line_counts_per_worker():
    progress = PoolProgress(
        done={"w1": 4, "w2": 3}, running={"w2": 1}, failed={"w1": 1}, waiting=6, retried=1
    )
    assert progress.line() == (
        "w1: 4 done, 1 failed · w2: 3 done, 1 running · 6 waiting · 1 retried"
    )


def test_max_active_needs_a_pool(project):
    proc = subprocess.run(
        [sys.executable, "-m", "conveyor.cli", "backfill", "x", "--start", "2024-01-01",
         "--end", "2024-01-02", "--max-active", "2"],
        cwd=project.root, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "--max-active bounds flow runs on a work pool" in proc.stderr


def test_a_worker_runs_steps_with_the_runner_its_machine_names(tmp_path, monkeypatch):
    """A flow run names no runner unless asked: the worker's CONVEYOR_RUNNER (the compose
    stack's: docker) or its project's `[tool.conveyor] runner` decides, else venv."""
    from conveyor.engine.settings import Settings
    from conveyor.errors import ConveyorError
    from conveyor.ops.run import build_engine

    (tmp_path / "pyproject.toml").write_text("[tool.conveyor]\n")
    monkeypatch.delenv("CONVEYOR_RUNNER", raising=False)
    assert Settings.load(tmp_path).runner == "venv"
    (tmp_path / "pyproject.toml").write_text('[tool.conveyor]\nrunner = "inprocess"\n')
    assert build_engine(Settings.load(tmp_path), hooks=[]).runner.name == "inprocess"
    monkeypatch.setenv("CONVEYOR_RUNNER", "docker")
    assert Settings.load(tmp_path).runner == "docker"  # the machine's word over the project's
    assert build_engine(Settings.load(tmp_path), runner="inprocess", hooks=[]).runner.name == (
        "inprocess"  # and an explicit runner over both
    )
    monkeypatch.setenv("CONVEYOR_RUNNER", "kubernetes")
    with pytest.raises(ConveyorError, match="CONVEYOR_RUNNER is 'kubernetes'; choose one of"):
        Settings.load(tmp_path)


def test_a_run_taken_but_never_started_is_given_up_after_a_while():
    """A flow run left Pending with no worker tag (its worker stopped between taking it and
    starting it) would wait forever: the watching backfill crashes it and resubmits it."""
    import asyncio
    import time

    from conveyor.backends.prefect_pool import FlowRunState
    from conveyor.ops import pool_backfill

    watch = object.__new__(pool_backfill._Watch)
    watch.hostname = "here"
    flight = pool_backfill._InFlight("run-1", began=time.perf_counter())
    untagged = FlowRunState("run-1", "PENDING", "", worker=None, process=None)
    assert asyncio.run(watch._dead(flight, untagged, {}, client=None)) is None
    assert flight.untagged_since is not None
    flight.untagged_since -= pool_backfill.UNTAGGED_PENDING_SECONDS + 1
    why = asyncio.run(watch._dead(flight, untagged, {}, client=None))
    assert why is not None and "no worker started it within 90 s" in why
    # a run its worker tagged is judged by that worker instead, and the clock starts over
    flight.untagged_since -= 1000
    tagged = FlowRunState("run-1", "RUNNING", "", worker="w1", process="here:999999999")
    assert asyncio.run(watch._dead(flight, tagged, {}, client=None)) is None
    assert flight.untagged_since is None
