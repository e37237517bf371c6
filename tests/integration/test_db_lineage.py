"""Runs recorded end to end on SQLite and PostgreSQL: real pipelines through conveyor.run with
the in-process runner, load_table/write_table/register_model/load_model, lineage from a
prediction back to its training run, attempts, partitions, and crash detection with a real
killed process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

import conveyor
from conveyor.db import lineage, registry
from conveyor.db.database import Database
from conveyor.db.models import PipelineRun, StepAttempt, StepRun
from conveyor.db.reads import load_table
from conveyor.db.recorder import Recorder
from conveyor.engine.results import RunInfo
from conveyor.engine.settings import Settings
from conveyor.errors import RegistryError
from tests.conftest import Project
from tests.db_support import BACKENDS, schema_url

STEPS = """
import time
from datetime import date
from pathlib import Path

import pandas as pd

from conveyor import Metrics, component


class MeanModel:
    def __init__(self, mean: float) -> None:
        self.mean = mean


@component
def make_features(day: date) -> pd.DataFrame:
    return pd.DataFrame({"id": [1, 2, 3], "x": [float(day.day), 2.0, 3.0]})


@component
def train(features: pd.DataFrame, shift: float = 0.0) -> MeanModel:
    return MeanModel(float(features["x"].mean()) + shift)


@component
def evaluate(model: MeanModel, features: pd.DataFrame) -> Metrics:
    return Metrics(mae=float((features["x"] - model.mean).abs().mean()))


@component
def predict(model: MeanModel, features: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"id": features["id"], "prediction": model.mean})


@component(retries=1)
def flaky(marker: str) -> int:
    path = Path(marker)
    if not path.exists():
        path.write_text("failed once")
        raise RuntimeError("first attempt fails")
    return 1


@component
def describe(model: object) -> str:
    return "none" if model is None else type(model).__name__


@component
def nap(seconds: float) -> int:
    time.sleep(seconds)
    return 1
"""

FLOWS = """
from datetime import date

from conveyor import load_model, load_table, pipeline, register_model, write_table
from steps.ml import describe, evaluate, flaky, make_features, nap, predict, train


@pipeline(name="features", partition="day")
def features(day: date):
    write_table(make_features(day), "features", partition=day)


@pipeline(name="training", partition="as_of")
def training(as_of: date, shift: float = 0.0):
    feats = load_table("features", end=as_of, days=30)
    model = train(feats, shift=shift)
    register_model("mean", model, metrics=evaluate(model, feats), params={"window": 30})


@pipeline(name="scoring", partition="day")
def scoring(day: date):
    model = load_model("mean", as_of=day)
    feats = load_table("features", start=day, end=day)
    write_table(predict(model, feats), "predictions", partition=day)


@pipeline(name="flaky", partition="day")
def flaky_pipeline(day: date, marker: str = "marker"):
    flaky(marker)


@pipeline(name="optional")
def optional():
    return describe(load_model("mean", required=False))


@pipeline(name="slow", partition="day")
def slow(day: date, seconds: float = 120.0):
    nap(seconds)
"""

D = date(2024, 2, 1)


@pytest.fixture(params=BACKENDS)
def settings(request: pytest.FixtureRequest, project: Project) -> Settings:
    """The project on the embedded SQLite default, or on a PostgreSQL schema of its own."""
    project.write("steps/ml.py", STEPS)
    project.write("flows/ml.py", FLOWS)
    if request.param == "sqlite":
        return project.settings  # no URL: <home>/conveyor.db, created on first use
    return project.settings.with_changes(
        database_url=schema_url(request.getfixturevalue("pg_schema"))
    )


def run(settings: Settings, name: str, **params) -> conveyor.RunResult:
    result = conveyor.run(name, params, runner="inprocess", settings=settings)
    assert result.ok, result.error
    return result


def rows(settings: Settings, model, **where) -> list:
    table = sa.inspect(model).local_table
    db = Database.from_settings(settings)
    try:
        with db.read() as conn:
            query = sa.select(table).where(*(table.c[k] == v for k, v in where.items()))
            return list(conn.execute(query.order_by(table.c[next(iter(table.c.keys()))])))
    finally:
        db.close()


def test_lineage_from_prediction_to_model_to_training_run(settings: Settings) -> None:
    today = datetime.now(UTC).date()  # as_of=day needs a version in production by that day
    first = today - timedelta(2)
    for n in range(3):
        run(settings, "features", day=first + timedelta(n))
    trained = run(settings, "training", as_of=today)
    assert trained.steps["register_model"].output == 1
    registry.promote(settings, "mean", 1)
    scored = run(settings, "scoring", day=today)

    found = lineage.run_lineage(settings, scored.run_id[:-2])  # a unique prefix works
    assert found.run.status == "succeeded" and found.run.pipeline == "scoring"
    assert {s.step: s.status for s in found.steps} == {
        "load_model": "succeeded", "load_table": "succeeded", "predict": "succeeded",
        "write_table": "succeeded",
    }  # fmt: skip
    predict = next(s for s in found.steps if s.step == "predict")
    assert predict.reason == "no previous run" and predict.cache_key
    assert predict.outputs["output"]["format"] == "parquet"
    [use] = found.models_loaded
    assert use.step == "load_model" and use.model.version == 1
    assert use.requested == {
        "stage": "production", "version": None, "as_of": str(today), "pinned_at_plan": 1
    }  # fmt: skip
    assert use.training_run is not None and use.training_run.run_id == trained.run_id
    model = use.model
    assert model.artifact == trained.steps["train"].artifacts["output"]
    assert model.producing_step == "train" and model.run_id == trained.run_id
    assert model.environment_key == trained.steps["train"].environment
    assert model.code_hash and len(model.code_hash) >= 16
    assert model.metrics == trained.steps["evaluate"].output and model.params == {"window": 30}
    # the rows' dates, not the 30-day window asked for (the data starts two days ago)
    assert (model.train_start, model.train_end) == (first, today)
    [read] = model.training_data
    assert read["table"] == "features" and read["step"] == "load_table"
    assert (read["start"], read["end"]) == (str(first), str(today))
    assert (read["asked_start"], read["asked_end"]) == (str(today - timedelta(29)), str(today))
    assert read["sha256"] == trained.steps["load_table"].artifacts["output"].sha256
    assert model.git_sha is None  # the temporary project is not a git repository
    assert lineage.run_lineage(settings, trained.run_id).models_registered[0].version == 1

    # what each step read and wrote, for a garbage collector
    from conveyor.db.models import ArtifactRefRow

    refs = {(r.step, r.role, r.name): r.sha256 for r in rows(settings, ArtifactRefRow,
                                                            run_id=scored.run_id)}  # fmt: skip
    assert refs[("predict", "input", "model")] == model.artifact.sha256
    assert refs[("predict", "input", "features")] == refs[("load_table", "output", "output")]
    assert ("write_table", "output", "output") in refs

    predictions = load_table(Database.from_settings(settings), "predictions")
    assert len(predictions) == 3
    assert lineage.partition_status(settings, "features") == {
        first + timedelta(n): "succeeded" for n in range(3)
    }

    shown = _cli(settings, "runs", "show", scored.run_id)
    assert "model mean v1" in shown and f"trained by run {trained.run_id}" in shown
    assert f"read features {first} .. {today} (asked {today - timedelta(29)} .. {today})" in shown
    listed = _cli(settings, "runs", "list", "--pipeline", "scoring")
    assert scored.run_id in listed
    assert "mean" in _cli(settings, "models", "list")


def _cli(settings: Settings, *args: str) -> str:
    from conveyor.cli import _register, app

    _register()
    env = {"CONVEYOR_DATABASE_URL": settings.database_url} if settings.database_url else {}
    result = CliRunner().invoke(app, list(args), env=env, terminal_width=200)
    assert result.exit_code == 0, result.output
    return result.output


def test_the_model_is_resolved_when_the_run_is_planned(settings: Settings) -> None:
    from conveyor.dsl.artifacts import Codec
    from conveyor.ops.discovery import resolve_pipeline
    from conveyor.ops.run import build_engine

    today = datetime.now(UTC).date()
    run(settings, "features", day=today)
    store_ref = run(settings, "training", as_of=today).steps["train"].artifacts["output"]
    registry.promote(settings, "mean", 1)
    # a second version, trained elsewhere with pinned packages (the store must hold it too)
    registry.register(
        settings,
        registry.NewModel(
            name="mean", artifact=store_ref.__class__("f" * 64, Codec("joblib"), 1),
            location="elsewhere", environment_lock="six==1.16.0",
        ),
    )  # fmt: skip
    engine = build_engine(settings, runner="inprocess")
    scoring = resolve_pipeline("scoring", settings)
    plan = engine.plan(scoring, {"day": today})
    assert plan.models["load_model"].version == 1
    registry.promote(settings, "mean", 2)  # promoted after planning...
    result = engine.run(scoring, {"day": today}, plan=plan)
    assert result.ok, result.error
    assert result.steps["load_model"].artifacts["output"] == store_ref  # ...the plan's v1 ran
    pinned = engine.plan(scoring, {"day": today})  # planned now: v2 and its environment's pins
    assert pinned.models["load_model"].version == 2
    assert "six==1.16.0" in pinned.steps["predict"].environment.spec.requirements
    engine.runner.close()


def test_an_optional_model_that_does_not_exist_arrives_as_none(settings: Settings) -> None:
    assert run(settings, "optional").output == "none"  # no model registered at all
    today = datetime.now(UTC).date()
    run(settings, "features", day=today)
    run(settings, "training", as_of=today)
    assert run(settings, "optional").output == "none"  # registered, none in production
    with pytest.raises(RegistryError, match="no version was production on"):
        # required (the default): planning stops the run before any step runs
        conveyor.run("scoring", {"day": today}, runner="inprocess", settings=settings)
    registry.promote(settings, "mean", 1)
    assert run(settings, "optional").output == "MeanModel"


def test_a_partitioned_run_registers_its_model_in_data_time(settings: Settings) -> None:
    for n in range(3):
        run(settings, "features", day=D + timedelta(n))
    run(settings, "training", as_of=D + timedelta(2))  # a replay of history
    [span] = registry.history(settings, "mean")
    assert span.started_at == datetime(2024, 2, 3, tzinfo=UTC)  # the training cutoff
    assert registry.resolve(settings, "mean", stage="candidate", as_of=D + timedelta(2)).version
    with pytest.raises(RegistryError, match="no version was candidate on 2024-02-02"):
        registry.resolve(settings, "mean", stage="candidate", as_of=D + timedelta(1))
    registry.promote(settings, "mean", 1, at=datetime(2024, 2, 4, tzinfo=UTC))
    assert registry.resolve(settings, "mean", as_of=date(2024, 2, 4)).version == 1


def test_rerunning_a_partition_rewrites_it_and_records_a_new_run(settings: Settings) -> None:
    first = run(settings, "features", day=D)
    second = run(settings, "features", day=D)
    assert second.steps["make_features"].status == "cached"
    db = Database.from_settings(settings)
    assert len(load_table(db, "features")) == 3
    runs = lineage.list_runs(settings, pipeline="features")
    assert [r.run_id for r in runs] == [second.run_id, first.run_id]
    steps = lineage.run_lineage(settings, second.run_id).steps
    [step] = [s for s in steps if s.kind == "component"]
    assert step.status == "cached" and step.reason == "same code, inputs and environment"


def test_attempts_and_failed_partitions_are_recorded(
    settings: Settings, project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_RETRY_DELAY", "0")
    marker = str(project.root / "marker")
    result = run(settings, "flaky", day=D, marker=marker)
    attempts = rows(settings, StepAttempt, run_id=result.run_id, step="flaky")
    assert [(a.attempt, a.status) for a in attempts] == [(1, "failed"), (2, "succeeded")]
    assert "first attempt fails" in (attempts[0].error or "")  # a failed attempt keeps its error
    [step] = rows(settings, StepRun, run_id=result.run_id, step="flaky")
    assert step.attempts == 2 and step.status == "succeeded"

    failed = conveyor.run(
        "training", {"as_of": D}, runner="inprocess", settings=settings
    )  # no features table yet
    assert not failed.ok
    [recorded] = rows(settings, PipelineRun, run_id=failed.run_id)
    assert recorded.status == "failed" and "there is no such table" in recorded.error
    assert lineage.partition_status(settings, "training") == {D: "failed"}


def test_a_killed_run_is_marked_crashed_at_the_next_start(
    settings: Settings, project: Project
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    if settings.database_url:
        env["CONVEYOR_DATABASE_URL"] = settings.database_url
    code = "import conveyor; conveyor.run('slow', {'day': '2024-02-01'}, runner='inprocess')"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=project.root, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        run_id = _wait_for_running_step(settings, proc, "nap")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    [before] = rows(settings, PipelineRun, run_id=run_id)
    assert before.status == "running"  # nobody has looked yet

    run(settings, "features", day=D)  # the next start notices

    [after] = rows(settings, PipelineRun, run_id=run_id)
    assert after.status == "crashed"
    assert f"its process (pid {proc.pid} on " in after.error
    assert "detected at the next start" in after.error
    [step] = rows(settings, StepRun, run_id=run_id, step="nap")
    assert step.status == "crashed"
    [attempt] = rows(settings, StepAttempt, run_id=run_id, step="nap")
    assert attempt.status == "crashed"
    assert lineage.partition_status(settings, "slow") == {D: "failed"}


def test_a_killed_run_reads_as_crashed_before_any_other_run_starts(
    settings: Settings, project: Project
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    if settings.database_url:
        env["CONVEYOR_DATABASE_URL"] = settings.database_url
    code = "import conveyor; conveyor.run('slow', {'day': '2024-03-04'}, runner='inprocess')"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=project.root, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        run_id = _wait_for_running_step(settings, proc, "nap")
        assert lineage.list_runs(settings)[0].status == "running"  # alive: never called dead
    finally:
        proc.kill()
        proc.wait(timeout=60)
    [seen] = [r for r in lineage.list_runs(settings) if r.run_id == run_id]
    assert seen.status == "crashed"
    assert f"its process (pid {proc.pid} on " in (seen.error or "")
    assert lineage.run_lineage(settings, run_id).run.status == "crashed"
    [stored] = rows(settings, PipelineRun, run_id=run_id)
    assert stored.status == "running"  # judged when read: nothing else has run to write it


def test_a_live_process_is_never_called_dead_however_quiet(settings: Settings) -> None:
    """A database outage silences heartbeats; on this host a live process still runs."""
    import socket

    from conveyor.db.recorder import mark_crashed

    old = datetime.now(UTC) - timedelta(hours=2)
    _insert_run(settings, "quiet-but-alive", heartbeat_at=old, hostname=socket.gethostname(),
                pid=os.getpid())  # fmt: skip
    db = Database.from_settings(settings)
    try:
        with db.write() as conn:
            assert mark_crashed(conn, datetime.now(UTC), socket.gethostname(), 1.0) == []
    finally:
        db.close()
    [seen] = [r for r in lineage.list_runs(settings) if r.run_id == "quiet-but-alive"]
    assert seen.status == "running"


def test_a_run_whose_record_cannot_be_written_runs_nothing(project: Project) -> None:
    """The database unreachable at the start: the run fails before any step writes anything."""
    from conveyor.errors import DatabaseError

    project.write("steps/marks.py", """
        from pathlib import Path
        from conveyor import component

        @component
        def touch(marker: str) -> int:
            Path(marker).write_text("ran")
            return 1
    """)  # fmt: skip
    project.write("flows/marks.py", """
        from conveyor import pipeline
        from steps.marks import touch

        @pipeline
        def marks(marker: str):
            return touch(marker)
    """)  # fmt: skip
    marker = project.root / "ran.txt"
    unreachable = Settings.load(project.root).with_changes(
        database_url="postgresql://nobody@127.0.0.1:1/none"
    )
    with pytest.raises(DatabaseError) as info:
        conveyor.run("marks", {"marker": str(marker)}, runner="inprocess", settings=unreachable)
    assert "cannot record run" in str(info.value) and "Nothing ran" in str(info.value)
    assert not marker.exists()


def _wait_for_running_step(settings: Settings, proc: subprocess.Popen, step: str) -> str:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[0]
        try:
            found = rows(settings, StepAttempt, step=step, status="running")
        except Exception:  # the database is still being created by the other process
            found = []
        if found:
            return found[0].run_id
        time.sleep(0.1)
    raise AssertionError(f"step {step} never started")


def test_stale_heartbeats_crash_runs_of_other_hosts_and_live_ones_beat(
    settings: Settings,
) -> None:
    now = datetime.now(UTC)
    _insert_run(settings, "elsewhere-stale", heartbeat_at=now - timedelta(hours=1))
    _insert_run(settings, "elsewhere-fresh", heartbeat_at=now)
    # a run is stale after 6 missed beats: 1.5 s here, wide enough for a loaded machine between
    # inserting "elsewhere-fresh" and the start that judges it
    recorder = Recorder(settings, heartbeat_seconds=0.25)
    try:
        recorder.run_started(run=_info("live"))
        beats = [rows(settings, PipelineRun, run_id="live")[0].heartbeat_at]
        time.sleep(0.8)
        beats.append(rows(settings, PipelineRun, run_id="live")[0].heartbeat_at)
        assert beats[1] > beats[0]  # the heartbeat thread stamps active runs
        status = {r.run_id: (r.status, r.error) for r in rows(settings, PipelineRun)}
        assert status["elsewhere-stale"][0] == "crashed"
        assert "no heartbeat from pid 1 on another-host since" in status["elsewhere-stale"][1]
        assert status["elsewhere-fresh"] == ("running", None)
        assert status["live"] == ("running", None)
    finally:
        recorder.close()


def _info(run_id: str) -> RunInfo:
    return RunInfo(
        run_id=run_id, pipeline="manual", params={}, partition=None, partition_dates=(),
        engine="local", runner="inprocess", project_root="/nowhere",
        started_at=datetime.now(UTC),
    )  # fmt: skip


def _insert_run(
    settings: Settings,
    run_id: str,
    heartbeat_at: datetime,
    hostname: str = "another-host",
    pid: int = 1,
) -> None:
    """A run another machine left `running` (pid 1 there), last heard from at `heartbeat_at`."""
    table = sa.inspect(PipelineRun).local_table
    db = Database.from_settings(settings)
    try:
        with db.write() as conn:
            conn.execute(
                sa.insert(table).values(
                    run_id=run_id, pipeline="manual", status="running", params={}, engine="local",
                    runner="venv", project_root="/elsewhere", tags=[], code_version={},
                    hostname=hostname, pid=pid, started_at=heartbeat_at,
                    heartbeat_at=heartbeat_at,
                )
            )  # fmt: skip
    finally:
        db.close()
