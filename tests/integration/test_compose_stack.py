"""The production stack (docker-compose.yml): crons fire, a backfill spreads over its workers.

The stack is built from this checkout, so its worker image resolves conveyor's dependencies
within the bounds of pyproject.toml exactly as a fresh install does: the check that the bounds
hold in the images we ship, not only in the test environment. Three workers (`--scale
worker=3`) run a copy of tests/fixtures/schedule_project (containers/compose.schedule-check.yml)
from the stack's work pool, each step in a container of its own on this machine's engine. Its
deployment fires every minute, plus a replay of the same pipeline from 1980 (a tick a minute, a
day a tick): the stack's own PostgreSQL keeps the clock, its runs succeed with consecutive data
dates. A backfill submitted to the pool spreads over the three workers and writes the rows a
local backfill writes; a worker stopped mid-backfill (`docker stop`) loses nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, need
from tests.integration.prefect_support import free_port

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
# fixed, so image layers are reused between runs; another name lets two checkouts run it at once
PROJECT_NAME = os.environ.get("CONVEYOR_CHECK_COMPOSE_PROJECT", "conveyor-check")
WORKERS = 3
REPLAY = """
[ticks-replay]
pipeline = "ticks"
cron = "* * * * *"
clock = "replay"
replay_start = 1980-01-02
"""


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
    (project / "deployments" / "replay.toml").write_text(REPLAY)
    port = free_port()
    env = {**os.environ, "CONVEYOR_CHECK_PROJECT": str(project), "CONVEYOR_UI_PORT": str(port)}
    base = [*command, "-p", PROJECT_NAME, "-f", "docker-compose.yml",
            "-f", "containers/compose.schedule-check.yml"]  # fmt: skip

    def compose(*args: str, timeout: float = 180, check: bool = True) -> str:
        proc = subprocess.run(
            [*base, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}{proc.stderr}")
        return proc.stdout

    compose("down", "-v", "--remove-orphans", check=False)  # a previous run killed midway
    try:
        compose("up", "-d", "--build", "--scale", f"worker={WORKERS}", timeout=1200)
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


def test_the_stack_replays_the_data_one_date_per_tick(stack):
    """After the wall-clock test: its minutes have ticked the replay clock too."""
    compose, api = stack
    replayed: list[dict] = []
    deadline = time.monotonic() + 180  # the ticks of the next two minutes at most
    while len(replayed) < 2 and time.monotonic() < deadline:
        runs = [r for r in _flow_runs(api) if "replay" in r["tags"]]
        replayed = [r for r in runs if r["state_type"] == "COMPLETED"]
        if len(replayed) < 2:
            time.sleep(5)
    if len(replayed) < 2:
        logs = compose("logs", "--tail", "60", "worker", check=False)
        pytest.fail(f"fewer than 2 replayed runs succeeded: {[r['state_type'] for r in runs]}; "
                    f"the worker's log:\n{logs}")  # fmt: skip
    days = sorted(r["parameters"]["day"] for r in replayed)
    assert days[:2] == ["1980-01-02", "1980-01-03"], days
    assert all(r["parameters"]["conveyor_tick"].startswith("replay tick ") for r in replayed)
    out = compose(
        "exec", "-T", "postgres", "psql", "-U", "postgres", "-d", "conveyor", "-tAc",
        "select label from ticks where label like 'tick 1980-%' order by label",
    )  # fmt: skip
    assert out.split()[:4] == ["tick", "1980-01-02", "tick", "1980-01-03"], out
    status = compose("exec", "-T", "worker", "conveyor", "replay", "status")
    (line,) = [x for x in status.splitlines() if "ticks-replay" in x]
    assert "1980-01-0" in line and "succeeded" in line, status


def _sql(compose, query: str, database: str = "conveyor") -> list[list[str]]:
    out = compose("exec", "-T", "postgres", "psql", "-U", "postgres", "-d", database,
                  "-tA", "-F", "|", "-c", query)  # fmt: skip
    return [line.split("|") for line in out.splitlines() if line]


@contextlib.contextmanager
def _step_containers() -> Iterator[dict[str, set[str]]]:
    """Run id -> the steps the engine created a container for meanwhile, from docker's event
    stream (watched live: the engine keeps only its last 256 events for `--since`)."""
    made: dict[str, set[str]] = {}
    watch = subprocess.Popen(
        ["docker", "events", "--filter", "type=container", "--filter", "event=create",
         "--filter", "label=conveyor.step", "--format", "{{json .Actor.Attributes}}"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        yield made
        time.sleep(1)  # the last event on its way
    finally:
        watch.terminate()
        out, _ = watch.communicate(timeout=30)
    for line in out.splitlines():
        labels = json.loads(line)
        made.setdefault(labels["conveyor.run"], set()).add(labels["conveyor.step"])


def _backfill(compose, start: str, end: str, *extra: str, timeout: float = 900) -> str:
    return compose("exec", "-T", "--index", "1", "worker", "conveyor", "backfill", "ticks",
                   "--start", start, "--end", end, *extra, timeout=timeout)  # fmt: skip


def _rows(compose, start: str, end: str, database: str = "conveyor") -> list[list[str]]:
    query = (
        f"select day_ordinal, label from ticks where label between 'tick {start}' and "
        f"'tick {end}' order by day_ordinal, label"
    )
    return _sql(compose, query, database)


@pytest.fixture(scope="module")
def local_rows(stack):
    """What a local backfill (in-process, no pool) of 1981-01-01..15 writes, in a database of
    its own on the stack's PostgreSQL."""
    compose, _ = stack
    compose("exec", "-T", "postgres", "createdb", "-U", "postgres", "local_check")
    url = "CONVEYOR_DATABASE_URL=postgresql://postgres@postgres:5432/local_check"
    compose("exec", "-T", "-e", url, "--index", "1", "worker", "sh", "-c",
            "conveyor db upgrade && conveyor backfill ticks --start 1981-01-01 "
            "--end 1981-01-15 --engine local --runner inprocess", timeout=600)  # fmt: skip
    rows = _rows(compose, "1981-01-01", "1981-01-15", database="local_check")
    assert len(rows) == 15, rows  # every calendar day
    return rows


def test_a_pool_backfill_spreads_over_the_workers_each_step_in_its_own_container(stack, local_rows):
    compose, _ = stack
    with _step_containers() as made:
        out = _backfill(compose, "1981-01-01", "1981-01-09", "--pool", "conveyor", "--batch", "1")
    assert "9 partitions succeeded" in out, out
    assert _rows(compose, "1981-01-01", "1981-01-09") == local_rows[:9]  # equal, no duplicates
    runs = _sql(compose, "select run_id, hostname, status from conveyor_runs where pipeline = "
                "'ticks' and partition_start between '1981-01-01' and '1981-01-09'")  # fmt: skip
    assert {status for _, _, status in runs} == {"succeeded"}, runs
    assert len(runs) == 9
    hosts = {host for _, host, _ in runs}
    assert len(hosts) == WORKERS, f"the 9 flow runs ran on {hosts}, not on all {WORKERS} workers"
    missing = [run for run, _, _ in runs if made.get(run) != {"tick_rows"}]
    assert not missing, f"runs whose step ran in no container of its own: {missing}; {made}"


def test_a_worker_stopped_mid_backfill_loses_nothing(stack, local_rows):
    compose, _ = stack
    ids = compose("ps", "-q", "worker").split()
    assert len(ids) == WORKERS
    victim = ids[-1]
    stopper = threading.Timer(10, subprocess.run, (["docker", "stop", victim],),
                              {"capture_output": True})  # fmt: skip
    stopper.start()
    try:
        out = _backfill(compose, "1981-01-10", "1981-01-15", "--pool", "conveyor", "--batch", "1")
    finally:
        stopper.join()
    assert "6 partitions succeeded" in out, out
    assert _rows(compose, "1981-01-10", "1981-01-15") == local_rows[9:]
    stuck = _sql(compose, "select run_id, hostname from conveyor_runs where status = 'running'")
    assert not stuck, f"runs left 'running' after the worker stopped: {stuck}"
