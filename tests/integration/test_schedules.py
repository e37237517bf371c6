"""Schedules from deployments/*.toml: validation, partition derivation, and `conveyor serve`."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from conveyor.ops.discovery import resolve_pipeline
from conveyor.ops.schedules import ScheduleError, load_entries, resolve_scheduled_params
from tests.conftest import FIXTURES
from tests.integration.prefect_support import query, server_log_errors

STEPS = """
from datetime import date
from conveyor import component

@component
def stamp(day: date, label: str) -> str:
    return f"{label}:{day}"
"""

FLOWS = """
from datetime import date
from conveyor import pipeline
from steps.s import stamp

@pipeline(calendar="weekdays")
def daily(day: date, label: str = "x"):
    return stamp(day, label)
"""

GOOD = """
[daily-report]
pipeline = "daily"
cron = "30 18 * * 1-5"
timezone = "America/New_York"
partition_offset = -1
parameters = { label = "nightly" }
"""


@pytest.fixture
def scheduled(project):
    project.write("steps/s.py", STEPS)
    project.write("flows/s.py", FLOWS)
    project.write("deployments/daily.toml", GOOD)
    return project


def test_entries_are_parsed_and_validated(scheduled):
    (entry,) = load_entries(scheduled.settings)
    assert (entry.name, entry.pipeline, entry.cron, entry.partition_offset) == (
        "daily-report", "daily", "30 18 * * 1-5", -1,
    )  # fmt: skip
    assert entry.parameters == {"label": "nightly"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD.replace("30 18 * * 1-5", "every day at six"),
         "deployments/bad.toml, entry [daily-report]: cron 'every day at six' is not a valid"),
        (GOOD.replace('pipeline = "daily"', 'pipeline = "dialy"'),
         "deployments/bad.toml, entry [daily-report]: no pipeline named 'dialy'"),
        (GOOD.replace("America/New_York", "Mars/Olympus"),
         "entry [daily-report]: key `timezone`: unknown timezone 'Mars/Olympus'"),
        (GOOD.replace("partition_offset = -1", 'partition_offset = "yesterday"'),
         "entry [daily-report]: key `partition_offset`: Input should be a valid integer "
         "(got 'yesterday')"),
        (GOOD + 'runner = "kubernetes"\n',
         "entry [daily-report]: key `runner`: Input should be 'venv', 'docker' or 'inprocess'"),
        (GOOD.replace("label = ", "colour = "),
         "entry [daily-report]: pipeline 'daily' has no parameter 'colour'"),
        (GOOD + 'after = ["nope"]\n', "entry [daily-report]: `after` names 'nope'"),
        (GOOD.replace("cron =", "crontab ="), "unknown key `crontab`; valid keys: ['after',"),
    ],
)  # fmt: skip
def test_bad_entries_name_the_file_and_entry(scheduled, text, message):
    (scheduled.root / "deployments/daily.toml").unlink()
    scheduled.write("deployments/bad.toml", text)
    with pytest.raises(ScheduleError) as info:
        load_entries(scheduled.settings)
    assert message in str(info.value)


def test_the_partition_comes_from_the_scheduled_time(scheduled):
    (entry,) = load_entries(scheduled.settings)
    pipeline = resolve_pipeline("daily", scheduled.settings)
    # Monday 2024-03-04 18:30 in New York is 23:30 UTC; offset -1 -> the previous weekday
    monday_evening = datetime(2024, 3, 4, 23, 30, tzinfo=UTC)
    params = resolve_scheduled_params(entry, pipeline, scheduled.settings, {}, monday_evening)
    assert params == {"label": "nightly", "day": date(2024, 3, 1)}
    # just after midnight UTC it is still Monday in New York
    late = datetime(2024, 3, 5, 2, 0, tzinfo=UTC)
    params = resolve_scheduled_params(entry, pipeline, scheduled.settings, {}, late)
    assert params["day"] == date(2024, 3, 1)


REPLAY = """
[daily-replay]
pipeline = "daily"
cron = "0 5 * * *"
clock = "replay"
replay_start = 1980-01-02
"""


def _run_deployment(deployment_id):
    created = query(lambda c: c.create_flow_run_from_deployment(deployment_id))
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        flow_run = query(lambda c: c.read_flow_run(created.id))
        if flow_run.state and flow_run.state.is_final():
            break
        time.sleep(1)
    return flow_run


@pytest.mark.prefect
@pytest.mark.slow
def test_conveyor_serve_registers_the_deployment_with_its_cron(scheduled, prefect_api):
    scheduled.write("deployments/replay.toml", REPLAY)
    env = {**os.environ, "PREFECT_API_URL": prefect_api}
    proc = subprocess.Popen(
        [sys.executable, "-m", "conveyor.cli", "serve"], cwd=scheduled.root, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deployment = None
        deadline = time.monotonic() + 120
        while deployment is None and time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"conveyor serve exited: {proc.stdout.read().decode()[-3000:]}")
            try:
                deployment = query(lambda c: c.read_deployment_by_name("daily/daily-report"))
            except Exception:
                time.sleep(1)
        assert deployment is not None, "the served deployment never appeared"
        (schedule,) = deployment.schedules
        assert schedule.schedule.cron == "30 18 * * 1-5"
        assert schedule.schedule.timezone == "America/New_York"
        assert deployment.entrypoint.endswith("daily_report.py:flow")

        # a run of the deployment executes through the generated entrypoint
        flow_run = _run_deployment(deployment.id)
        assert flow_run.state.type.value == "COMPLETED", flow_run.state
        assert "scheduled" in flow_run.tags
        # the run shows what it processed: its partition, and the clock's mapping
        day = flow_run.parameters["day"]
        assert flow_run.parameters["conveyor_tick"].startswith("wall clock: ")
        assert flow_run.parameters["conveyor_tick"].endswith(f" (partition {day})")
        # ... and which conveyor run it was
        assert re.fullmatch(
            rf"daily-report {day} \(wall\) · \d{{8}}T\d{{6}}-\w{{6}}", flow_run.name
        )

        # a replay clock's tick stands for the next date of the data's timeline
        replay = query(lambda c: c.read_deployment_by_name("daily/daily-replay"))
        flow_run = _run_deployment(replay.id)
        assert flow_run.state.type.value == "COMPLETED", flow_run.state
        assert flow_run.parameters["day"] == "1980-01-02"
        assert flow_run.parameters["conveyor_tick"].startswith("replay tick 1: ")
        assert flow_run.name.startswith("daily-replay 1980-01-02 (replay tick 1) · ")
        assert "replay" in flow_run.tags
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    shown = subprocess.run([sys.executable, "-m", "conveyor.cli", "runs", "show"],
                           cwd=scheduled.root, env=env, capture_output=True, text=True)  # fmt: skip
    assert "scheduled by [daily-replay], replay tick 1: " in shown.stdout, shown.stdout
    assert "-> data date 1980-01-02" in shown.stdout


def _auto_scheduled_runs(deployment_id):
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    return query(
        lambda c: c.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
        )
    )


@pytest.mark.prefect
@pytest.mark.slow
def test_a_cron_served_by_conveyor_serve_fires_and_writes_its_rows(project, prefect_api):
    """The scheduled-runs path end to end, as a new user meets it: nothing but `conveyor serve`.

    Prefect's own scheduler service creates the run from the cron (no run is created by the
    test), the served runner executes it, and its rows land in the project's database. This is
    the test that would have caught prefect 3.8 + SQLAlchemy 2.1, whose scheduler created no run.
    """
    shutil.copytree(FIXTURES / "schedule_project", project.root, dirs_exist_ok=True)
    env = {**os.environ, "PREFECT_API_URL": prefect_api}
    proc = subprocess.Popen(
        [sys.executable, "-m", "conveyor.cli", "serve"], cwd=project.root, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deployment = None
        deadline = time.monotonic() + 120
        while deployment is None and time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"conveyor serve exited: {proc.stdout.read().decode()[-3000:]}")
            try:
                deployment = query(lambda c: c.read_deployment_by_name("ticks/ticks-every-minute"))
            except Exception:
                time.sleep(1)
        assert deployment is not None, "the served deployment never appeared"

        # a per-minute cron fires within a minute; the served runner polls every 10 s
        finished = []
        deadline = time.monotonic() + 240
        while not finished and time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"conveyor serve exited: {proc.stdout.read().decode()[-3000:]}")
            runs = _auto_scheduled_runs(deployment.id)
            finished = [r for r in runs if r.state and r.state.is_final()]
            time.sleep(2)
        assert runs, (
            "Prefect's scheduler created no run from the cron within 4 minutes; the server "
            f"log's errors:\n{server_log_errors()}"
        )
        assert finished, f"no scheduled run finished within 4 minutes: {[r.state for r in runs]}"
        flow_run = finished[0]
        assert flow_run.auto_scheduled, "the run was not created by Prefect's scheduler"
        assert flow_run.state.type.value == "COMPLETED", flow_run.state
        assert "scheduled" in flow_run.tags
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)

    # the partition is the run's scheduled date (UTC), and its row is in the database
    from conveyor.db.database import Database
    from conveyor.db.reads import load_table

    day = flow_run.expected_start_time.astimezone(UTC).date()
    rows = load_table(Database.from_settings(project.settings), "ticks")
    assert day.toordinal() in set(rows["day_ordinal"]), rows
    assert f"tick {day}" in set(rows["label"])


SLOW_STEPS = """
import time
from datetime import date
from conveyor import component

@component
def linger(day: date, seconds: float) -> str:
    time.sleep(seconds)
    return str(day)
"""

SLOW_FLOWS = """
from datetime import date
from conveyor import pipeline
from steps.slow import linger

@pipeline(calendar="weekdays")
def lingering(day: date, seconds: float = 300.0):
    return linger(day, seconds)
"""

SLOW_ENTRY = """
[lingering]
pipeline = "lingering"
cron = "0 3 * * 1-5"
runner = "inprocess"
"""


def _children(pid: int) -> list[str]:
    """The command lines of a process's descendants (from /proc)."""
    parents: dict[int, int] = {}
    lines: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        lines[int(entry.name)] = cmdline.decode(errors="replace")
    found, frontier = [], {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found += [lines[c] for c in frontier]
    return found


@pytest.mark.prefect
@pytest.mark.slow
def test_conveyor_serve_uses_the_configured_api_and_stops_on_sigterm(project, prefect_api):
    """No private server beside a configured API; SIGTERM (docker stop) ends it in seconds,
    releasing the run it was executing: the run does not stay "running" anywhere."""
    project.write("steps/slow.py", SLOW_STEPS)
    project.write("flows/slow.py", SLOW_FLOWS)
    project.write("deployments/slow.toml", SLOW_ENTRY)
    env = {**os.environ, "PREFECT_API_URL": prefect_api}
    proc = subprocess.Popen(
        [sys.executable, "-m", "conveyor.cli", "serve"], cwd=project.root, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deployment = None
        deadline = time.monotonic() + 120
        while deployment is None and time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"conveyor serve exited: {proc.stdout.read().decode()[-3000:]}")
            try:
                deployment = query(lambda c: c.read_deployment_by_name("lingering/lingering"))
            except Exception:
                time.sleep(1)
        assert deployment is not None, "the served deployment never appeared"
        servers = [c for c in _children(proc.pid) if "server" in c or "uvicorn" in c]
        assert not servers, f"conveyor serve started a server of its own: {servers}"
        assert not (project.root / ".conveyor/prefect/server.json").exists()

        created = query(lambda c: c.create_flow_run_from_deployment(deployment.id))
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            flow_run = query(lambda c: c.read_flow_run(created.id))
            if flow_run.state and flow_run.state.is_running():
                break
            time.sleep(1)
        assert flow_run.state.is_running(), flow_run.state
        from conveyor.db.lineage import list_runs

        while time.monotonic() < deadline and not list_runs(project.settings, pipeline="lingering"):
            time.sleep(1)  # until conveyor has recorded the run: inside it now
        assert list_runs(project.settings, pipeline="lingering"), "the run was never recorded"

        proc.send_signal(signal.SIGTERM)  # as `docker stop` does: the main process only
        began = time.monotonic()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            pytest.fail("conveyor serve was still running 10 s after SIGTERM")
        stopped_in = time.monotonic() - began
        output = proc.stdout.read().decode()
        assert "never awaited" not in output, output[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert stopped_in < 10
    flow_run = query(lambda c: c.read_flow_run(created.id))
    assert flow_run.state.is_final(), f"the in-flight run was left {flow_run.state}"
    (run,) = list_runs(project.settings, pipeline="lingering")
    assert run.status != "running", run
