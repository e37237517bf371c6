"""On a terminal every wait shows itself: a cold run's loading, locking, environment and image
builds, and running steps, each with its latest line; a run ends with its one-line summary."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import need
from tests.terminal import record

FLOW = """
from conveyor import component, pipeline

@component(packages=["six==1.14.0", "attrs==23.1.0"])
def tick(n: int) -> int:
    import time
    for i in range(3):
        print("tick", i, flush=True)
        time.sleep(0.5)
    return n

@component
def double(n: int) -> int:
    return 2 * n

@pipeline
def ticking(n: int = 1):
    return double(tick(n))
"""


def _project(root: Path, marker: str) -> Path:
    (root / "flows").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[tool.conveyor]\nflows = ["flows"]\n')
    (root / "flows" / "__init__.py").write_text("")
    # a fresh marker in the code: a cold cache on every test run (the environments are cold too:
    # the test gives them their own folder)
    (root / "flows" / "ticking.py").write_text(FLOW + f"\n# {marker}\n")
    return root


def _env(env_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVEYOR_", "COLUMNS"))}
    env["CONVEYOR_ENV_DIR"] = str(env_dir)
    return env


@pytest.mark.venv
def test_a_cold_venv_run_shows_every_wait_as_it_happens(tmp_path: Path) -> None:
    root = _project(tmp_path / "p", uuid.uuid4().hex)
    cold = record([sys.executable, "-m", "conveyor.cli", "run", "ticking"], cwd=str(root),
                  env=_env(tmp_path / "envs"))  # fmt: skip
    assert cold.returncode == 0, cold.text
    frames = [line for _, line in cold.frames()]
    # the first thing drawn is the first wait, before any lock, build or step
    assert frames[0].lstrip("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ").startswith(f"loading ticking from {root}"), frames[:3]
    order = [cold.first(p) for p in (r"loading ticking", r"planning ticking",
                                      r"locking attrs==23.1.0, six==1.14.0 for step tick",
                                      r"building environment \w+ for step tick \(2 packages\)",
                                      r"^\W*step tick\b", r"ticking succeeded")]  # fmt: skip
    assert None not in order and order == sorted(order), order  # type: ignore[type-var]
    # the waits carry uv's and the step's own lines

    def shown(title: str, detail: str) -> bool:
        return any(title in line and re.search(detail, line) for line in frames)

    assert shown("locking", r"Resolved 2 packages"), "the lock never showed what uv resolved"
    assert shown("building environment", r"Installed|Prepared|Resolved|Using Python")
    assert shown("step tick", r"tick [0-2]"), "the running step never showed its output"
    assert "ticking succeeded in" in cold.text
    assert ": 2 steps, 0 cached, 2 ran (" in cold.text

    warm = record([sys.executable, "-m", "conveyor.cli", "run", "ticking"], cwd=str(root),
                  env=_env(tmp_path / "envs"))  # fmt: skip
    assert warm.returncode == 0, warm.text
    assert ": 2 steps, 2 cached, 0 ran (0.00s), 0 failed" in warm.text
    assert warm.first(r"locking|building environment") is None


def test_piped_output_has_no_spinners(tmp_path: Path) -> None:
    root = _project(tmp_path / "p", uuid.uuid4().hex)
    proc = subprocess.run([sys.executable, "-m", "conveyor.cli", "run", "ticking", "--runner",
                           "inprocess"], cwd=root, env=_env(tmp_path / "envs"),
                          capture_output=True, text=True, check=False, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "⠋" not in proc.stdout + proc.stderr and "loading ticking" not in proc.stdout
    assert "ticking succeeded in" in proc.stdout


@pytest.mark.docker
def test_a_cold_image_build_shows_the_builds_own_steps(tmp_path: Path) -> None:
    need(subprocess.run(["docker", "info"], capture_output=True).returncode == 0,
         "no Docker engine; start one with containers/ensure-docker.sh")  # fmt: skip
    root = _project(tmp_path / "p", uuid.uuid4().hex)
    (root / "flows" / "ticking.py").write_text(
        (root / "flows" / "ticking.py").read_text().replace("attrs==23.1.0", "attrs==22.2.0")
    )
    env = _env(tmp_path / "envs")
    built: list[str] = []
    try:
        cold = record([sys.executable, "-m", "conveyor.cli", "-v", "run", "ticking", "--runner",
                       "docker"], cwd=str(root), env=env)  # fmt: skip
        built = sorted(set(re.findall(r"built image (conveyor-env:\w+)", cold.text)))
        assert cold.returncode == 0, cold.text
        frames = [line for _, line in cold.frames()]
        assert any(
            "building image" in line and re.search(r"Step \d+/\d+ : (RUN|COPY|FROM)", line)
            for line in frames
        ), [f for f in frames if "building image" in f][:10]
        assert cold.first(r"building image") is not None
    finally:
        for tag in built:  # the next run of this test is cold again
            subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, check=False)
