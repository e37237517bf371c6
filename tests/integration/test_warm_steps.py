"""Warm steps: venv steps forked from a warm server of their environment, against real bwrap.

The warm path must be invisible in results (the same outputs and cache keys as fresh
interpreters), keep every protection of the sandbox (the isolation probe of test_isolation.py,
unchanged), kill a timed-out step's whole tree, survive a step that crashes, and leave no process
behind when the orchestrator ends or is killed.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
import sys

import psutil
import pytest

import conveyor
from tests.conftest import need
from tests.integration.test_isolation import _compare, _marked, _probe, _wait_for

pytestmark = pytest.mark.venv

STEPS = """
import os, signal, subprocess, sys, time
from conveyor import component


@component
def frame(n: int) -> "pd.DataFrame":
    import pandas as pd

    return pd.DataFrame({"x": range(n), "y": [i * 0.5 for i in range(n)]})


@component
def summary(df: "pd.DataFrame") -> dict:
    return {"rows": len(df), "total": float(df["y"].sum())}


@component
def boxed(stats: dict) -> object:
    return sorted(stats.items())


@component
def started_by(n: int) -> str:
    return sys.modules["__main__"].__spec__.name


@component(warm=False)
def fresh(n: int) -> str:
    return sys.modules["__main__"].__spec__.name


@component
def crash(n: int) -> int:
    os.kill(os.getpid(), signal.SIGSEGV)
    return n


@component
def nap(n: int) -> int:
    subprocess.Popen(["sleep", f"{n}.5"])  # a child of the step, found by its argument
    time.sleep(60)
    return n
"""

FLOW = """
from conveyor import pipeline
from steps.warm import boxed, crash, frame, fresh, nap, started_by, summary

@pipeline
def chain(n: int):
    stats = summary(frame(n))
    boxed(stats)
    return stats

@pipeline
def starts(n: int):
    return {"default": started_by(n), "fresh": fresh(n)}

@pipeline
def crashing(n: int):
    return crash(n)

@pipeline
def napping(n: int):
    return nap(n)

@pipeline
def fan():
    return [started_by(i) for i in range(4)]
"""


@pytest.fixture
def warm_project(project, monkeypatch):
    from conveyor.runners.sandbox import sandbox_problem

    problem = sandbox_problem()
    need(problem is None, f"the venv sandbox cannot run here: {problem}")
    monkeypatch.setenv("CONVEYOR_WARM", "on")
    project.write("steps/warm.py", STEPS)
    project.write("flows/warm.py", FLOW)
    return project


def _forked(caplog) -> set[str]:
    """The steps the runner forked from a warm server (its debug log says so)."""
    return {
        r.args[0]
        for r in caplog.records
        if r.name == "conveyor.venv" and r.msg.startswith("step %s forked from the warm server")
    }


def _run(name, params, **options):
    return conveyor.run(name, params, runner="venv", engine="local", hooks=[], **options)


def test_cold_and_warm_steps_give_the_same_outputs_and_cache_keys(
    warm_project, monkeypatch, caplog
):
    seen = {}
    for warm in ("off", "on"):
        monkeypatch.setenv("CONVEYOR_WARM", warm)
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="conveyor.venv"):
            result = _run("chain", {"n": 1000}, cache=False)
        assert result.ok, result.error
        assert _forked(caplog) == ({"frame", "summary", "boxed"} if warm == "on" else set())
        seen[warm] = {
            name: (step.cache_key, {k: ref.sha256 for k, ref in step.artifacts.items()})
            for name, step in result.steps.items()
        }
        assert result.output == {"rows": 1000, "total": 249750.0}
    assert seen["on"] == seen["off"]


def test_warm_false_and_conveyor_warm_off_start_a_fresh_interpreter(warm_project, monkeypatch):
    fresh, forked = "conveyor._runtime.executor", "conveyor._runtime.zygote"
    result = _run("starts", {"n": 1}, cache=False)
    assert result.ok, result.error
    assert result.output == {"default": forked, "fresh": fresh}
    monkeypatch.setenv("CONVEYOR_WARM", "off")
    result = _run("starts", {"n": 1}, cache=False)
    assert result.output == {"default": fresh, "fresh": fresh}


def test_the_isolation_probe_passes_on_the_warm_path(warm_project, monkeypatch, caplog):
    need(psutil is not None, "psutil is missing")
    with caplog.at_level(logging.DEBUG, logger="conveyor.venv"):
        verdicts = _probe(warm_project, "venv", monkeypatch)
    # the probe and the timed-out step ran warm; network=True and limited steps start fresh
    assert _forked(caplog) == {"probe", "escape"}
    _compare("venv", verdicts)


def test_a_crashing_step_does_not_take_its_server_down(warm_project, caplog):
    from conveyor.runners.zygote import POOL

    with caplog.at_level(logging.DEBUG, logger="conveyor.venv"):
        crashed = _run("crashing", {"n": 1}, cache=False)
        servers = {id(s): s for s in POOL._servers.values() if s.alive}
        after = _run("starts", {"n": 2}, cache=False)
    assert crashed.steps["crash"].status == "failed"
    assert "killed by SIGSEGV" in (crashed.steps["crash"].error or "")
    assert after.ok, after.error
    assert {"crash", "started_by"} <= _forked(caplog)
    assert all(s.alive for s in servers.values())
    assert {id(s) for s in POOL._servers.values()} >= set(servers)  # the same servers serve on


def test_parallel_steps_fork_from_one_server_and_a_killed_server_is_replaced(warm_project, caplog):
    from conveyor.runners.zygote import POOL

    with caplog.at_level(logging.DEBUG, logger="conveyor.venv"):
        result = _run("fan", {}, cache=False, max_parallel=4)
    assert result.ok, result.error
    assert list(result.output) == ["conveyor._runtime.zygote"] * 4
    assert len(_forked(caplog)) == 4
    for server in list(POOL._servers.values()):  # as the OOM killer or a person might
        os.killpg(server._proc.pid, signal.SIGKILL)
        server._proc.wait()
    assert _wait_for(lambda: not any(s.alive for s in POOL._servers.values()), 10)
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="conveyor.venv"):
        again = _run("fan", {}, cache=False)
    assert again.ok, again.error
    assert list(again.output) == ["conveyor._runtime.zygote"] * 4  # a new server, still warm
    assert len(_forked(caplog)) == 4


def test_a_server_that_cannot_start_leaves_steps_to_fresh_interpreters(
    warm_project, monkeypatch, caplog
):
    from conveyor.runners import zygote

    real = zygote.server_command
    monkeypatch.setattr(zygote, "server_command", lambda *a: [real(*a)[0], "--no-such-option"])
    with caplog.at_level(logging.DEBUG, logger="conveyor.venv"):
        result = _run("starts", {"n": 5}, cache=False)
    assert result.ok, result.error
    assert result.output == {"default": "conveyor._runtime.executor",
                             "fresh": "conveyor._runtime.executor"}  # fmt: skip
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("its warm server did not start" in w and "no-such-option" in w for w in warnings)


ORCHESTRATOR = """
import os, sys, psutil, conveyor
result = conveyor.run(sys.argv[1], {"n": int(os.environ["NAP"])}, runner="venv", engine="local",
                      hooks=[], cache=False)
print("DESCENDANTS", " ".join(str(p.pid) for p in psutil.Process().children(recursive=True)))
print("RESULT", result.ok, result.error)
"""


def _alive(pids: list[psutil.Process]) -> list[psutil.Process]:
    living = []
    for p in pids:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                living.append(p)
        except psutil.Error:
            pass
    return living


def _orchestrator(project, pipeline: str, nap: int) -> subprocess.Popen[str]:
    env = {**os.environ, "NAP": str(nap), "CONVEYOR_WARM": "on"}
    return subprocess.Popen(
        [sys.executable, "-c", ORCHESTRATOR, pipeline],
        cwd=project.root, env=env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_warm_servers_end_with_their_orchestrator(warm_project):
    proc = _orchestrator(warm_project, "starts", 3)
    out, _ = proc.communicate(timeout=300)
    assert "RESULT True None" in out, out
    pids = [int(p) for p in out.split("DESCENDANTS", 1)[1].split("\n", 1)[0].split()]
    assert pids, "the run left no warm server to watch"
    watched = []
    for pid in pids:
        try:
            watched.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    assert _wait_for(lambda: not _alive(watched), 10), _alive(watched)


def test_a_killed_orchestrator_takes_its_warm_server_and_steps_along(warm_project):
    nap = 3000 + secrets.randbelow(10**5)
    marker = f"{nap}.5"  # what the step's `sleep` child is called with
    proc = _orchestrator(warm_project, "napping", nap)
    try:
        assert _wait_for(lambda: bool(_marked(marker)), 180), "the step never started"
        tree = psutil.Process(proc.pid).children(recursive=True)
        assert any("conveyor._runtime.zygote" in " ".join(p.cmdline()) for p in tree), tree
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    gone = _wait_for(lambda: not _alive(tree), 10)
    for survivor in _alive(tree):
        survivor.kill()
    assert gone, "a warm server or step outlived its orchestrator"
