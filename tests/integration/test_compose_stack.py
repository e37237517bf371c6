"""The production stack (docker-compose.yml) fires a cron deployment and writes to PostgreSQL.

The stack is built from this checkout, so its worker image resolves conveyor's dependencies
within the bounds of pyproject.toml exactly as a fresh install does: the check that the bounds
hold in the images we ship, not only in the test environment. The worker serves a copy of
tests/fixtures/schedule_project (containers/compose.schedule-check.yml), whose deployment fires
every minute.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, need
from tests.integration.prefect_support import free_port

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
PROJECT_NAME = "conveyor-check"  # fixed, so image layers are reused between runs


def compose_command() -> list[str] | None:
    """`docker-compose` (Debian's package) or the `docker compose` plugin, whichever works."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    return ["docker", "compose"] if probe.returncode == 0 else None


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The stack up (built from this checkout), serving a copy of the schedule project."""
    command = compose_command()
    need(command is not None, "docker-compose is not installed (apt-get install docker-compose)")
    need(subprocess.run(["docker", "info"], capture_output=True).returncode == 0,
         "no Docker engine; start one with containers/ensure-docker.sh")  # fmt: skip
    project = tmp_path_factory.mktemp("compose") / "schedule_project"
    shutil.copytree(FIXTURES / "schedule_project", project)
    port = free_port()
    env = {**os.environ, "CONVEYOR_CHECK_PROJECT": str(project), "CONVEYOR_UI_PORT": str(port)}
    base = [*command, "-p", PROJECT_NAME, "-f", "docker-compose.yml",
            "-f", "containers/compose.schedule-check.yml"]  # fmt: skip

    def compose(*args: str, timeout: float = 120, check: bool = True) -> str:
        proc = subprocess.run(
            [*base, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}{proc.stderr}")
        return proc.stdout

    compose("down", "-v", "--remove-orphans", check=False)  # a previous run killed midway
    try:
        compose("up", "-d", "--build", timeout=1200)
        yield compose, f"http://127.0.0.1:{port}/api"
    finally:
        compose("down", "-v", "--remove-orphans", check=False)


def _flow_runs(api: str) -> list[dict]:
    request = urllib.request.Request(
        f"{api}/flow_runs/filter", data=b"{}", headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def test_the_stack_fires_a_cron_and_writes_its_rows_to_postgres(stack):
    compose, api = stack
    rows: list[str] = []
    deadline = time.monotonic() + 480  # healthy stack + next minute + a cold step environment
    while not rows and time.monotonic() < deadline:
        out = compose(
            "exec", "-T", "postgres", "psql", "-U", "postgres", "-d", "conveyor", "-tAc",
            "select day_ordinal, label from ticks", check=False,
        )  # fmt: skip
        rows = [line for line in out.splitlines() if "|tick " in line]
        if not rows:
            time.sleep(5)
    if not rows:
        logs = compose("logs", "--tail", "60", "worker", "prefect", check=False)
        pytest.fail(f"no scheduled run wrote its row within 8 minutes; the stack's logs:\n{logs}")
    ordinal, label = rows[0].split("|")
    assert label.startswith("tick ") and int(ordinal) > 0

    completed = [r for r in _flow_runs(api) if r["state_type"] == "COMPLETED"]
    assert completed, "Prefect has no completed flow run although the rows are there"
    assert all(r["auto_scheduled"] for r in completed), "a run was not created by the scheduler"
    assert "scheduled" in completed[0]["tags"]
