"""The warm path's pure parts: which steps may fork, and where a step's files come from."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor import component
from conveyor.engine.settings import Settings
from conveyor.errors import ConveyorError
from conveyor.runners.containers import CODE, INPUTS, RUNTIME, WORK, Mounts
from conveyor.runners.warm import _binds, cold_reason, warm_problem


def _spec(**options):
    @component(**options)
    def step(x: int) -> int:
        return x

    return step.spec


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({}, None),
        ({"timeout": 5, "retries": 2, "packages": ["six"]}, None),
        ({"warm": False}, "warm=False"),
        ({"network": True}, "network=True"),
        ({"env": ["API_TOKEN"]}, "it declares env variables"),
        ({"memory": "1Gi"}, "it has a memory or cpu limit"),
        ({"cpu": 1}, "it has a memory or cpu limit"),
    ],
)
def test_only_steps_whose_sandbox_is_the_servers_fork_from_it(options, reason):
    assert cold_reason(_spec(**options)) == reason


@pytest.mark.parametrize("value", ["off", "OFF", "0", "false", "no"])
def test_conveyor_warm_off_turns_warm_steps_off(project, monkeypatch, value):
    monkeypatch.setenv("CONVEYOR_WARM", value)
    assert warm_problem(Settings.load(project.root)) == f"turned off by CONVEYOR_WARM={value}"
    monkeypatch.setenv("CONVEYOR_WARM", "on")
    assert warm_problem(Settings.load(project.root)) is None


def test_a_project_turns_warm_steps_off_and_the_variable_wins(project, monkeypatch):
    monkeypatch.delenv("CONVEYOR_WARM", raising=False)
    pyproject = project.root / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace("[tool.conveyor]", "[tool.conveyor]\nwarm = false")
    )
    problem = warm_problem(Settings.load(project.root))
    assert problem == f"turned off by {pyproject} [tool.conveyor] warm = false"
    monkeypatch.setenv("CONVEYOR_WARM", "on")
    assert warm_problem(Settings.load(project.root)) is None


@pytest.mark.parametrize(("variable", "config"), [("maybe", None), (None, '"sometimes"')])
def test_an_unknown_warm_value_is_refused_naming_where_it_came_from(
    project, monkeypatch, variable, config
):
    pyproject = project.root / "pyproject.toml"
    if variable:
        monkeypatch.setenv("CONVEYOR_WARM", variable)
    else:
        monkeypatch.delenv("CONVEYOR_WARM", raising=False)
        text = pyproject.read_text().replace("[tool.conveyor]", f"[tool.conveyor]\nwarm = {config}")
        pyproject.write_text(text)
    with pytest.raises(ConveyorError) as raised:
        Settings.load(project.root)
    source = "CONVEYOR_WARM" if variable else f"{pyproject} [tool.conveyor] warm"
    assert str(raised.value).startswith(f"{source} is ")
    assert "use on or off" in str(raised.value)


def test_a_steps_files_are_found_under_the_servers_stages(tmp_path):
    runs, store, bundles = (tmp_path / name for name in ("runs", "artifacts", "bundles"))
    runtime = tmp_path / "runtime"
    stages = [(runs, "rw"), (store, "ro"), (bundles, "ro")]
    mounts = Mounts((
        (runtime, RUNTIME, "ro"),
        (bundles / "abc", CODE, "ro"),
        (runs / "r1" / "train" / "attempt-1", WORK, "rw"),
        (store / "ab" / "cdef", f"{INPUTS}/frame", "ro"),
    ))  # fmt: skip
    assert _binds(mounts, stages, runtime) == [
        ["/conveyor/stage/2/abc", CODE, "ro"],
        ["/conveyor/stage/0/r1/train/attempt-1", WORK, "rw"],
        ["/conveyor/stage/1/ab/cdef", f"{INPUTS}/frame", "ro"],
    ]
    elsewhere = Mounts(((Path("/somewhere/else"), f"{INPUTS}/x", "ro"),))
    with pytest.raises(LookupError, match="outside the folders"):
        _binds(elsewhere, stages, runtime)
    # a folder a step writes must come from a writable stage
    writable = Mounts(((store / "ab", WORK, "rw"),))
    with pytest.raises(LookupError):
        _binds(writable, stages, runtime)
