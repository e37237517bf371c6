"""The venv runner against real uv environments and the real package index."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

import conveyor
from conveyor.errors import EnvironmentBuildError
from tests.conftest import need

pytestmark = pytest.mark.venv

SIX = """
from conveyor import component

@component(packages=["six==1.16.0"])
def old_six() -> str:
    import six
    return six.__version__

@component(packages=["six==1.17.0"])
def new_six() -> str:
    import six
    return six.__version__

@component
def both(a: str, b: str) -> dict:
    return {"a": a, "b": b}
"""

FLOW = """
from conveyor import pipeline
from steps.sixes import both, new_six, old_six

@pipeline
def sixes():
    return both(old_six(), new_six())
"""


@pytest.fixture(autouse=True)
def _uv_available():
    from conveyor.runners.locks import find_uv

    try:
        find_uv()
    except EnvironmentBuildError:
        need(False, "uv is not installed")


def _run(name, params=None, **options):
    return conveyor.run(name, params or {}, runner="venv", hooks=[], **options)


def test_conflicting_pins_each_step_sees_its_own_version(project):
    project.write("steps/sixes.py", SIX)
    project.write("flows/sixes.py", FLOW)
    result = _run("sixes")
    assert result.ok, result.error
    assert result.output == {"a": "1.16.0", "b": "1.17.0"}
    envs = {result.steps[n].environment for n in ("old_six", "new_six", "both")}
    assert len(envs) == 3
    again = _run("sixes")
    assert [s.status for s in again.steps.values()] == ["cached"] * 3
    locks = sorted(p.name for p in (project.root / ".conveyor" / "locks").glob("*.txt"))
    assert len(locks) == 3  # one lock per requirement set, the empty set included
    texts = [p.read_text() for p in (project.root / ".conveyor/locks").glob("*.txt")]
    assert sum("six==1.16.0" in t for t in texts) == 1
    assert sum("six==1.17.0" in t for t in texts) == 1


STEPS = """
import os, subprocess, time
from conveyor import component

@component
def undeclared() -> int:
    import six
    return 1

@component(env=["MY_TOKEN", "MISSING_VAR"])
def environment() -> dict:
    return {k: v for k, v in os.environ.items()}

@component(timeout=1.5)
def hangs(seconds: str) -> int:
    subprocess.Popen(["sleep", seconds])
    time.sleep(60)
    return 0

@component
def frame_rows(n: int) -> "pd.DataFrame":
    import pandas as pd
    return pd.DataFrame({"x": range(n)})

@component
def count_rows(df: "pd.DataFrame") -> int:
    return len(df)

@component(packages=["six==99.99.99"])
def impossible() -> int:
    return 1

@component
def side_effect(path: str) -> int:
    open(path, "w").write("ran")
    return 1
"""

STEP_FLOWS = """
from conveyor import pipeline
from steps.checks import (count_rows, environment, frame_rows, hangs, impossible, side_effect,
                          undeclared)

@pipeline
def undeclared_import():
    return undeclared()

@pipeline
def env_vars():
    return environment()

@pipeline
def timeout(seconds: str):
    return hangs(seconds)

@pipeline
def frames(n: int = 5):
    return count_rows(frame_rows(n))

@pipeline
def bad_pin(path: str):
    side_effect(path)
    return impossible()
"""


@pytest.fixture
def checks(project):
    project.write("steps/checks.py", STEPS)
    project.write("flows/checks.py", STEP_FLOWS)
    return project


def test_undeclared_import_fails_naming_the_step(checks):
    result = _run("undeclared_import")
    assert result.status == "failed"
    assert "No module named 'six' in the environment of step 'undeclared'" in result.error
    assert "Add the package to @component(packages=[...])" in result.error


def test_a_traceback_is_reported_once_not_logged_as_output(checks, caplog):
    import logging

    with caplog.at_level(logging.INFO):
        result = _run("undeclared_import")
    assert result.status == "failed"
    output = [r for r in caplog.records if r.name.startswith("conveyor.step.")]
    assert not [r for r in output if "Traceback" in r.getMessage()], "traceback logged as output"
    failures = [r for r in caplog.records if "undeclared: failed" in r.getMessage()]
    assert failures and all(r.levelno >= logging.WARNING for r in failures)
    logs = list((checks.root / ".conveyor" / "runs").rglob("undeclared/attempt-1/log.txt"))
    assert len(logs) == 1 and "No module named 'six'" in logs[0].read_text()


def test_only_declared_variables_reach_the_step(checks, monkeypatch):
    monkeypatch.setenv("MY_TOKEN", "t0k3n")
    monkeypatch.setenv("DATABASE_URL", "postgresql://secret@db/prod")
    monkeypatch.setenv("CONVEYOR_DATABASE_URL", "postgresql://secret@db/prod")
    result = _run("env_vars")
    assert result.ok, result.error
    seen = result.output
    assert seen["MY_TOKEN"] == "t0k3n"
    assert "DATABASE_URL" not in seen and "MISSING_VAR" not in seen
    assert not [k for k in seen if k.startswith("CONVEYOR_")]


def test_timeout_kills_the_process_group(checks):
    import psutil

    seconds = f"3600.{os.getpid()}{time.monotonic_ns() % 100000}"  # names the child uniquely
    result = _run("timeout", {"seconds": seconds})
    assert result.status == "failed"
    assert "timed out after 1.5 s" in result.error
    alive = [
        p for p in psutil.process_iter(["cmdline", "status"])
        if p.info["cmdline"] == ["sleep", seconds] and p.info["status"] != "zombie"
    ]  # fmt: skip
    assert alive == []


def test_dataframe_steps_get_pandas_without_declaring_it(checks):
    result = _run("frames", {"n": 7})
    assert result.ok, result.error
    assert result.output == 7


def test_bad_pin_fails_at_plan_time_before_any_step_runs(checks):
    marker = checks.root / "ran.txt"
    with pytest.raises(EnvironmentBuildError) as info:
        _run("bad_pin", {"path": str(marker)})
    message = str(info.value)
    assert "could not resolve requirements for step impossible" in message
    assert "six==99.99.99" in message
    assert not marker.exists()


def test_failed_install_leaves_no_environment_behind(checks, tmp_path, monkeypatch):
    from conveyor.engine.environments import EnvironmentSpec
    from conveyor.runners.venv import VenvRunner

    monkeypatch.setenv("CONVEYOR_ENV_DIR", str(tmp_path / "envs"))
    runner = VenvRunner(checks.settings)
    lock_dir = checks.settings.lock_dir
    lock_dir.mkdir(parents=True, exist_ok=True)
    spec = EnvironmentSpec(("six==99.0.1",), "3.11")
    # a lock that names a version the index does not have: resolution passed earlier, install fails
    (lock_dir / f"{spec.lock_id}.txt").write_text("six==99.0.1\n")
    with pytest.raises(EnvironmentBuildError) as info:
        runner.prepare({spec: ["impossible"]})
    assert "could not build the environment for step impossible" in str(info.value)
    assert "six==99.0.1" in str(info.value)
    assert [p.name for p in (tmp_path / "envs").iterdir() if not p.name.endswith(".lock")] == []


PREPARE = """
import json, sys
from conveyor.engine.environments import EnvironmentSpec
from conveyor.runners.venv import VenvRunner
from conveyor.engine.settings import Settings

runner = VenvRunner(Settings.load(sys.argv[1]))
env = runner.prepare({EnvironmentSpec(("six==1.16.0",), "3.11"): ["s"]})
print(json.dumps([e.built for e in env.values()] + [e.key for e in env.values()]))
"""


def test_two_processes_needing_one_environment_build_it_once(checks, tmp_path):
    env = {**os.environ, "CONVEYOR_ENV_DIR": str(tmp_path / "shared-envs")}
    procs = [
        subprocess.Popen([sys.executable, "-c", PREPARE, str(checks.root)], env=env,
                         stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]  # fmt: skip
    outputs = [json.loads(p.communicate(timeout=300)[0]) for p in procs]
    assert sorted(o[0] for o in outputs) == [False, True]
    assert outputs[0][1] == outputs[1][1]
    built = [p for p in (tmp_path / "shared-envs").iterdir() if p.is_dir()]
    assert [p.name for p in built] == [outputs[0][1]]


def test_cli_plan_envs_list_and_prune(project, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from conveyor.cli import _register, app

    monkeypatch.setenv("CONVEYOR_ENV_DIR", str(tmp_path / "envs"))
    monkeypatch.setenv("COLUMNS", "200")
    project.write("steps/sixes.py", SIX)
    project.write("flows/sixes.py", FLOW)
    _register()
    cli = CliRunner()
    planned = cli.invoke(app, ["plan", "sixes"])
    assert planned.exit_code == 0, planned.output
    assert "six==1.16.0" in planned.output and "no previous run" in planned.output
    listed = cli.invoke(app, ["envs", "list"])
    assert listed.exit_code == 0, listed.output
    assert listed.output.count("this project") == 3  # all three used by this project
    # an environment no pipeline of the project uses any more is pruned; the others stay
    stray = tmp_path / "envs" / "0123456789abcdef01234567"
    stray.mkdir()
    (stray / "conveyor-env.json").write_text('{"requirements": ["old==1.0"], "python": "3.11"}')
    dry = cli.invoke(app, ["envs", "prune", "--dry-run"])
    assert "would remove 0123456789abcdef01234567 (old==1.0)" in dry.output and stray.exists()
    pruned = cli.invoke(app, ["envs", "prune"])
    assert "1 environment(s) removed" in pruned.output and not stray.exists()
    assert len([p for p in (tmp_path / "envs").iterdir() if p.is_dir()]) == 3


OLD_PANDAS = """
from conveyor import component

@component(packages=["pandas==2.2.0"])
def old_frame(rows: int) -> "pd.DataFrame":
    import numpy as np
    import pandas as pd
    import pyarrow

    return pd.DataFrame({"x": np.arange(rows), "numpy": np.__version__,
                         "pyarrow": pyarrow.__version__})

@component(packages=["pandas==2.2.0", "pyarrow==26.0.1"])
def impossible(rows: int) -> "pd.DataFrame":
    import pandas as pd

    return pd.DataFrame({"x": range(rows)})
"""

OLD_PANDAS_FLOWS = """
from conveyor import pipeline
from steps.old import impossible, old_frame

@pipeline
def old_pandas(rows: int = 3):
    return old_frame(rows)

@pipeline
def impossible_pins(rows: int = 3):
    return impossible(rows)
"""


@pytest.fixture
def old_pandas(project):
    project.write("steps/old.py", OLD_PANDAS)
    project.write("flows/old.py", OLD_PANDAS_FLOWS)
    return project


def test_an_old_pandas_pin_gets_a_pyarrow_that_works_with_its_numpy(old_pandas):
    """pandas 2.2.0 caps NumPy below 2; the pyarrow conveyor adds must then stay below 26."""
    result = _run("old_pandas")
    assert result.ok, result.error
    frame = result.output
    assert list(frame["x"]) == [0, 1, 2]
    assert frame["numpy"][0].startswith("1.")
    assert int(frame["pyarrow"][0].split(".")[0]) < 26
    (lock,) = [
        p.read_text()
        for p in (old_pandas.root / ".conveyor/locks").glob("*.txt")
        if "pandas==2.2.0" in p.read_text()
    ]
    assert "# constrained: pyarrow<26: the lock resolved numpy 1." in lock
    assert "pyarrow 26 and later need NumPy 2 at run time" in lock


def test_pins_that_cannot_work_together_fail_at_plan_time_naming_them(old_pandas):
    with pytest.raises(EnvironmentBuildError) as info:
        _run("impossible_pins")
    message = str(info.value)
    assert "step impossible" in message
    assert "pyarrow==26.0.1" in message and "pyarrow<26" in message
    assert "need NumPy 2 at run time" in message
    assert not list((old_pandas.root / ".conveyor").glob("runs/*")), "a step ran"


def test_an_environment_that_cannot_import_its_codecs_fails_at_plan_time(old_pandas):
    """A lock resolved before the bound existed installs fine and fails on import: at plan time."""
    from conveyor.ops.discovery import resolve_pipeline
    from conveyor.runners.base import requirement_spec
    from conveyor.runners.locks import Locker

    step = resolve_pipeline("old_pandas", old_pandas.settings).step("old_frame")
    spec = requirement_spec(step.component.spec)
    locker = Locker(old_pandas.settings.lock_dir)
    old_pandas.write(
        f".conveyor/locks/{spec.lock_id}.txt",
        "# an old lock, resolved without the pyarrow bound\n"
        "numpy==1.26.4\npandas==2.2.0\npyarrow==26.0.1\npython-dateutil==2.9.0.post0\n"
        "pytz==2024.1\nsix==1.16.0\ntzdata==2024.1\n",
    )
    assert locker.existing(spec) is not None
    with pytest.raises(EnvironmentBuildError) as info:
        _run("old_pandas")
    message = str(info.value)
    assert "step old_frame" in message
    assert "import pyarrow" in message and "NumPy 2" in message
    assert "numpy 1.26.4" in message and "pandas 2.2.0" in message and "pyarrow 26.0.1" in message
    assert "conveyor envs lock" in message
    assert not list((old_pandas.root / ".conveyor").glob("runs/*")), "a step ran"
