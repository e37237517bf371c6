"""The venv sandbox's command line and its honest fallback (no bwrap is started here)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from conveyor import component
from conveyor.engine.environments import EnvironmentSpec, PreparedEnvironment
from conveyor.engine.tasks import Task
from conveyor.errors import ConveyorError


@component
def quiet() -> int:
    return 1


def _task(tmp_path: Path, network: bool) -> Task:
    spec = (quiet.with_options(network=True) if network else quiet).spec
    assert spec is not None
    workdir = tmp_path / "runs" / "r1" / "quiet" / "attempt-1"
    data = {
        "inputs": {"df": {"path": str(tmp_path / "store" / "ab" / "cd.parquet")}},
        "outputs": {"output": {"path": str(workdir / "out" / "output")}},
        "result": str(workdir / "result.json"),
    }
    env = PreparedEnvironment("k", EnvironmentSpec((), "3.11"), str(tmp_path), "3.11.7")
    return Task("quiet", spec, data, workdir, env, tmp_path, lambda line: None, tmp_path / "code")


def test_a_step_gets_only_its_mounts_and_the_network_it_asks_for(tmp_path):
    from conveyor.runners.sandbox import bwrap_command, executor_command, step_mounts

    for network in (False, True):
        task = _task(tmp_path, network)
        mounts = step_mounts(task, tmp_path / "runtime")
        inner = executor_command("/env/bin/python", task, mounts)
        assert inner[-2:] == ["--result", "/conveyor/work/result.json"]
        assert "--input" in inner and "df=/conveyor/inputs/df" in inner
        argv = bwrap_command("bwrap", task, tmp_path, mounts, inner)
        assert {"--unshare-all", "--die-with-parent", "--new-session"} <= set(argv)
        assert argv[argv.index("--uid") + 1] == "65534"
        assert ("--share-net" in argv) is network
        assert "/etc/shadow" not in argv and not any("docker.sock" in a for a in argv)
        writable = [argv[i + 1 : i + 3] for i, a in enumerate(argv) if a == "--bind"]
        assert writable == [[str(task.workdir.resolve()), "/conveyor/work"]]


def test_a_memory_limit_becomes_an_address_space_limit():
    from conveyor.runners.sandbox import memory_limited

    command, applied = memory_limited(["python"], 200 * 2**20)
    assert applied and command[-1] == "python"
    assert f"--as={200 * 2**20}:{200 * 2**20}" in command
    assert memory_limited(["python"], None) == (["python"], True)


def _project(tmp_path: Path, isolation: str | None) -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    line = f'isolation = "{isolation}"\n' if isolation else ""
    (root / "pyproject.toml").write_text(f"[tool.conveyor]\n{line}")
    return root


def test_without_the_sandbox_every_run_says_which_protections_are_off(
    tmp_path, monkeypatch, caplog
):
    from conveyor.engine.settings import Settings
    from conveyor.ops.run import build_engine

    monkeypatch.setenv("CONVEYOR_SANDBOX", "off")
    settings = Settings.load(_project(tmp_path, None))
    with caplog.at_level(logging.WARNING, logger="conveyor"):
        engine = build_engine(settings, runner="venv", hooks=[])
    (said,) = [r.getMessage() for r in caplog.records]
    assert said.startswith("venv steps run unsandboxed (turned off by CONVEYOR_SANDBOX=off)")
    assert "network is on for every step" in said
    assert "orchestrator's processes and environment are visible" in said
    assert engine.runner.uses_bundles is False  # it runs in the project, as before
    assert engine.runner.limitations(quiet.spec) == [
        "not sandboxed: turned off by CONVEYOR_SANDBOX=off"
    ]


def test_strict_isolation_refuses_steps_that_cannot_be_sandboxed(tmp_path, monkeypatch):
    from conveyor.engine.settings import Settings
    from conveyor.runners.venv import VenvRunner

    monkeypatch.setenv("CONVEYOR_SANDBOX", "off")
    runner = VenvRunner(Settings.load(_project(tmp_path, "strict")))
    with pytest.raises(ConveyorError) as info:
        runner.prepare({})
    message = str(info.value)
    assert 'isolation = "strict"' in message and "CONVEYOR_SANDBOX=off" in message
    assert "--runner docker" in message


def test_an_unknown_isolation_level_is_refused(tmp_path):
    from conveyor.engine.settings import Settings

    with pytest.raises(ConveyorError, match="isolation = 'loose' is not known; use \"strict\""):
        Settings.load(_project(tmp_path, "loose"))
