"""Warm containers of the docker runner against the real engine: one container per environment
and limits, each step a `docker exec`, with the isolation and the endings of a fresh container."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import conveyor
from tests.conftest import need

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def engine():
    try:
        import docker

        from conveyor.engine.settings import Settings

        client = docker.from_env()
        client.ping()
        client.images.get(Settings.load().base_image)
    except Exception as exc:
        need(False, f"no Docker engine or base image ({exc}); see containers/README.md")
    yield client
    client.close()


def _warm(engine, **labels):
    filters = {"label": ["conveyor.warm=1", *(f"conveyor.{k}={v}" for k, v in labels.items())]}
    return engine.containers.list(all=True, filters=filters)


STEPS = """
import glob, os, socket, subprocess, time
from conveyor import component

@component
def frame(n: int) -> "pd.DataFrame":
    import pandas as pd
    return pd.DataFrame({"x": range(n)})

@component
def double(df: "pd.DataFrame") -> "pd.DataFrame":
    return df.assign(y=df["x"] * 2)

@component
def total(df: "pd.DataFrame", scale: int) -> dict:
    return {"sum": int(df["y"].sum()) * scale, "host": socket.gethostname()}

@component
def litter(marker: str) -> dict:
    # leaves a file in each temporary folder, a process in a session of its own, a file in
    # its work folder and one outside its output
    for folder in ("/tmp", "/var/tmp", "/dev/shm"):
        with open(os.path.join(folder, "left-by-litter"), "w") as f:
            f.write("x")
    subprocess.Popen(["setsid", "sleep", marker])
    with open("/conveyor/work/scratch.txt", "w") as f:
        f.write("mine")
    home = "/home/conveyor"  # the one place of the base image the step user may write
    with open(os.path.join(home, "left-by-litter"), "w") as f:
        f.write("x")
    with open(os.path.join(home, ".profile"), "a") as f:
        f.write("\\n# changed by litter\\n")
    return {"host": socket.gethostname()}

@component
def look(before: dict, marker: str) -> dict:
    procs = []
    for status in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            with open(status) as f:
                procs.append(f.read().replace("\\0", " "))
        except OSError:
            pass
    left = [p for p in ("/tmp", "/var/tmp", "/dev/shm") if os.listdir(p)]
    with open("/home/conveyor/.profile") as f:
        profile = f.read()
    return {
        "host": socket.gethostname(),
        "same_container": before["host"] == socket.gethostname(),
        "processes": [p for p in procs if marker in p],
        "temporary": left,
        "home": sorted(os.listdir("/home/conveyor")),
        "profile_changed": "litter" in profile,
        "work": sorted(os.listdir("/conveyor/work")),
        "inputs": sorted(os.listdir("/conveyor/inputs")),
        "code": sorted(os.listdir("/conveyor/code")),
        "uid": os.getuid(),
    }

@component(timeout=2)
def stuck(x: dict) -> int:
    subprocess.Popen(["setsid", "sleep", "3599.77"])
    time.sleep(120)
    return 0

@component
def after(x: dict) -> dict:
    return {"host": socket.gethostname(), "at": time.time()}

@component(warm=False)
def fresh(x: dict) -> dict:
    return {"host": socket.gethostname()}

@component
def slow(seconds: float) -> float:
    time.sleep(seconds)
    return seconds
"""

FLOWS = """
from conveyor import pipeline
from steps.warm import after, double, fresh, frame, litter, look, slow, stuck, total

@pipeline
def numbers(n: int = 10, scale: int = 3):
    return total(double(frame(n)), scale)

@pipeline
def leftovers(marker: str):
    return look(litter(marker), marker)

@pipeline
def timeout():
    first = after.with_options(name="first")({})
    stuck(first)
    return after(first)

@pipeline
def mixed():
    first = after.with_options(name="first")({})
    return {"first": first, "fresh": fresh(first), "second": after(first)}

@pipeline
def sleeping(seconds: float = 120.0):
    return slow(seconds)
"""


@pytest.fixture
def steps(project, engine):
    project.write("steps/warm.py", STEPS)
    project.write("flows/warm.py", FLOWS)
    return project


def _run(name, params=None, **options):
    return conveyor.run(name, params or {}, runner="docker", hooks=[], **options)


def test_warm_and_cold_give_the_same_outputs_and_cache_keys(steps, engine, monkeypatch):
    monkeypatch.setenv("CONVEYOR_WARM", "off")
    cold = _run("numbers", cache=False)
    monkeypatch.setenv("CONVEYOR_WARM", "on")
    warm = _run("numbers", cache=False)
    assert cold.ok and warm.ok, (cold.error, warm.error)
    assert cold.output["sum"] == warm.output["sum"] == 3 * 2 * sum(range(10))
    for name in ("frame", "double", "total"):
        a, b = cold.steps[name], warm.steps[name]
        assert a.cache_key == b.cache_key, name
        if name != "total":  # its output names the container it ran in
            assert {k: r.sha256 for k, r in a.artifacts.items()} == {
                k: r.sha256 for k, r in b.artifacts.items()
            }, name
    again = _run("numbers")  # the cold run's outputs serve the warm path's cache and back
    assert [s.status for s in again.steps.values()] == ["cached"] * 3
    assert _warm(engine, run=warm.run_id) == []  # removed at the end of the run


def test_a_step_sees_nothing_an_earlier_step_left_in_its_container(steps, engine):
    marker = f"3600.{os.getpid()}{time.time_ns() % 10**6}"
    result = _run("leftovers", {"marker": marker}, cache=False)
    assert result.ok, result.error
    seen = result.output
    assert seen["same_container"]  # it did run where `litter` ran
    assert seen["processes"] == []  # the setsid grandchild was killed when `litter` ended
    assert seen["temporary"] == []
    assert "left-by-litter" not in seen["home"] and ".profile" in seen["home"]
    assert not seen["profile_changed"]  # the image's home folder, as the image has it
    assert seen["work"] == ["out", "task.json"]  # not litter's scratch.txt or result
    assert seen["inputs"] == ["before"]  # its own input only (`marker` is a parameter)
    assert "steps" in seen["code"] and "flows" not in seen["code"]
    assert seen["uid"] == 1000
    litter_work = Path(result.steps["litter"].log_path).parent
    assert (litter_work / "scratch.txt").read_text() == "mine"  # kept where cold keeps it
    assert not subprocess.run(["pgrep", "-f", marker], capture_output=True).stdout


def test_a_timeout_ends_the_exec_and_the_container_serves_the_next_step(steps, engine):
    result = _run("timeout", cache=False, max_parallel=1)
    assert result.steps["stuck"].status == "failed"
    assert "timed out after 2 s" in result.steps["stuck"].error
    assert result.steps["stuck"].duration < 30
    assert result.steps["after"].status == "succeeded", result.steps["after"].error
    stuck_start = result.steps["stuck"].started_at
    assert stuck_start is not None
    assert result.steps["after"].output["at"] > stuck_start.timestamp() + 2  # ran after it
    # the same container as before the timeout: killing the step did not need a new one
    assert result.steps["after"].output["host"] == result.steps["first"].output["host"]
    assert not subprocess.run(["pgrep", "-fx", "sleep 3599.77"], capture_output=True).stdout
    assert _warm(engine, run=result.run_id) == []


def test_close_removes_warm_containers_and_their_stages(steps, engine):
    import threading

    from conveyor.ops.discovery import resolve_pipeline
    from conveyor.ops.run import build_engine

    local = build_engine(steps.settings, runner="docker", hooks=[])
    pipeline = resolve_pipeline("sleeping", steps.settings)
    plan = local.plan(pipeline, {"seconds": 120.0})
    results = []
    worker = threading.Thread(target=lambda: results.append(local.run(pipeline, {}, plan=plan)))
    worker.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not _warm(engine, step="slow"):
        time.sleep(0.1)
    running = _warm(engine, step="slow")
    assert running, "no warm container appeared"
    stages = list((steps.settings.run_dir / ".warm").iterdir())
    assert stages
    time.sleep(0.5)
    local.runner.close()  # what an interrupted run (Ctrl-C) calls
    worker.join(timeout=60)
    assert results and results[0].status == "failed"
    assert _warm(engine, run=results[0].run_id) == []
    assert not any(stage.exists() for stage in stages)


def test_a_killed_orchestrators_warm_container_goes_and_its_stage_is_swept(steps, engine):
    from conveyor.runners.docker import DockerRunner

    script = "import conveyor; conveyor.run('sleeping', {}, runner='docker', hooks=[])"
    orchestrator = subprocess.Popen([sys.executable, "-c", script], cwd=steps.root)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not _warm(engine, step="slow"):
            time.sleep(0.1)
        running = _warm(engine, step="slow")
        assert running, "no warm container appeared"
    finally:
        orchestrator.send_signal(signal.SIGKILL)
        orchestrator.wait()
    # its stdin was this process's: the container ends and the engine removes it
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _warm(engine, step="slow"):
        time.sleep(0.2)
    assert _warm(engine, step="slow") == []
    stages = list((steps.settings.run_dir / ".warm").iterdir())
    assert stages  # nobody was left to delete it
    DockerRunner(steps.settings).builder  # noqa: B018 (first use cleans up)
    assert not any(stage.exists() for stage in stages)


def test_warm_off_runs_a_container_per_step(steps, monkeypatch):
    monkeypatch.setenv("CONVEYOR_WARM", "off")
    result = _run("leftovers", {"marker": "3600.5"}, cache=False)
    assert result.ok, result.error
    assert not result.output["same_container"]


BARE = """
import socket
from conveyor import component, pipeline

@component(image="conveyor-test/no-setpriv:1")
def where() -> str:
    return socket.gethostname()

@component(image="conveyor-test/no-setpriv:1")
def where_again(before: str) -> list:
    return [before, socket.gethostname()]

@pipeline
def bare():
    return where_again(where())
"""


def test_an_image_without_the_wrappers_tools_runs_its_steps_cold(project, engine):
    import io

    from conveyor.engine.settings import Settings

    dockerfile = f"FROM {Settings.load().base_image}\nRUN rm /usr/bin/setpriv\n"
    engine.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag="conveyor-test/no-setpriv:1")
    try:
        project.write("flows/bare.py", BARE)
        result = _run("bare", cache=False)
        assert result.ok, result.error
        first, second = result.output
        assert first != second  # a container each
    finally:
        engine.images.remove("conveyor-test/no-setpriv:1", force=True)


def test_an_idle_container_that_ended_is_replaced(steps, engine):
    from conveyor.ops.discovery import resolve_pipeline
    from conveyor.ops.run import build_engine

    local = build_engine(steps.settings, runner="docker", hooks=[])
    pipeline = resolve_pipeline("sleeping", steps.settings)
    try:
        first = local.run(pipeline, {"seconds": 0.1})
        assert first.ok, first.error
        idle = _warm(engine, step="slow")
        assert len(idle) == 1  # kept for the next run of this runner
        idle[0].kill()  # ended from outside (it removes itself)
        again = local.run(pipeline, {"seconds": 0.2})
        assert again.ok, again.error
        assert [c.id for c in _warm(engine, step="slow")] != [idle[0].id]
    finally:
        local.runner.close()
    assert _warm(engine, step="slow") == []


def test_the_isolation_probe_passes_cold_too(project, monkeypatch):
    """test_isolation.py probes the default, warm containers; this probes a container per step."""
    from tests.integration.test_isolation import _compare, _probe

    monkeypatch.setenv("CONVEYOR_WARM", "off")
    _compare("docker", _probe(project, "docker", monkeypatch))


def test_a_component_with_warm_false_gets_a_container_of_its_own(steps):
    result = _run("mixed", cache=False)
    assert result.ok, result.error
    hosts = {name: value["host"] for name, value in result.output.items()}
    assert hosts["second"] == hosts["first"] != hosts["fresh"]
