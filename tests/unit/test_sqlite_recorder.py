"""The standard-library recorder of the embedded SQLite file writes what SQLAlchemy's writes."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from types import MappingProxyType

from conveyor.db.recorder import Recorder
from conveyor.db.sqlite_recorder import SqliteRecorder
from conveyor.dsl.artifacts import ArtifactRef, Codec
from conveyor.engine.hooks import RunHooks
from conveyor.engine.results import RunInfo, RunResult, StepResult
from conveyor.engine.settings import Settings

TABLES = (
    "conveyor_runs",
    "conveyor_step_runs",
    "conveyor_step_attempts",
    "conveyor_partitions",
    "conveyor_artifact_refs",
)
STAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}")
MODEL = ArtifactRef("a" * 64, Codec("joblib"), 120)
SCORE = ArtifactRef("b" * 64, Codec("json", "metrics"), 30)


def drive(hooks: RunHooks) -> None:
    """One run through every hook: a retried step, a cached one reading its output, metrics,
    a ranged partition."""
    run = RunInfo(
        run_id="run-1", pipeline="daily", params={"day": date(2024, 1, 2), "n": 3},
        partition=(date(2024, 1, 2), date(2024, 1, 3)),
        partition_dates=(date(2024, 1, 2), date(2024, 1, 3)), engine="local",
        runner="inprocess", project_root="/p", started_at=datetime(2024, 1, 4, 5, 6, 7, tzinfo=UTC),
        tags=("nightly",), code_version={"git_sha": None, "dirty": False},
    )  # fmt: skip
    hooks.run_started(run=run)
    hooks.step_started(run=run, step="fit", attempt=1, reason="no previous run")
    hooks.attempt_failed(run=run, step="fit", attempt=1, error="boom")
    hooks.step_started(run=run, step="fit", attempt=2, reason="no previous run")
    fit = StepResult(
        name="fit", kind="step", status="succeeded", reason="no previous run", duration=1.5,
        attempts=2, artifacts={"output": MODEL}, timings={"run": 1.25}, environment="env-1",
        cache_key="key-1", inputs={"day": "2024-01-02"},
        started_at=datetime(2024, 1, 4, 5, 6, 8, 123456, tzinfo=UTC), log_path="/logs/fit",
    )  # fmt: skip
    hooks.step_finished(run=run, result=fit)
    score = StepResult(
        name="score", kind="step", status="cached", reason="same code, inputs and environment",
        artifacts={"output": SCORE}, metrics={"r2": 0.5}, cache_key="key-2",
        inputs={"model": MODEL.sha256},
    )  # fmt: skip
    hooks.step_finished(run=run, result=score)
    skipped = StepResult(name="report", kind="host", status="skipped", reason="upstream failed")
    hooks.step_finished(run=run, result=skipped)
    steps = MappingProxyType({"fit": fit, "score": score, "report": skipped})
    result = RunResult(run_id="run-1", pipeline="daily", status="succeeded", params=run.params,
                       steps=steps, duration=2.0, plan_seconds=0.25)  # fmt: skip
    hooks.run_finished(run=run, result=result)


def rows(path: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every row of the run tables, ids dropped, timestamps replaced by their shape."""
    conn = sqlite3.connect(path)
    found = {}
    for table in TABLES:
        cursor = conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2, 3")
        names = [c[0] for c in cursor.description]
        found[table] = sorted(
            tuple(
                ("<time>" if STAMP.fullmatch(str(v)) else v) if n.endswith("_at") else v
                for n, v in zip(names, row, strict=True)
                if n not in ("id", "pid", "hostname")
            )
            for row in cursor
        )
    conn.close()
    return found


def test_the_same_rows_as_sqlalchemy(project) -> None:
    engine_path = project.root / "engine.db"
    lite_path = project.root / "lite.db"
    settings = project.settings
    with_engine = Recorder(settings.with_changes(database_url=f"sqlite:///{engine_path}"))
    drive(with_engine)
    with_engine.close()
    lite = SqliteRecorder(settings.with_changes(database_url=f"sqlite:///{lite_path}"), lite_path)
    drive(lite)  # the file does not exist yet: the recorder creates the schema, then writes
    lite.close()
    written, expected = rows(lite_path), rows(engine_path)
    assert written == expected
    assert len(written["conveyor_step_runs"]) == 3 and len(written["conveyor_partitions"]) == 2


def test_a_cached_cli_run_records_without_sqlalchemy(project) -> None:
    """A re-run whose steps are all cached records itself, and never imports SQLAlchemy."""
    project.write("steps/small.py", "from conveyor import component\n\n@component\n"
                  "def one(n: int) -> int:\n    return n\n")  # fmt: skip
    project.write("flows/small.py", "from conveyor import pipeline\nfrom steps.small import one\n"
                  "\n@pipeline\ndef small(n: int = 1):\n    return one(n)\n")  # fmt: skip
    probe = (
        "import sys\nfrom conveyor.cli import main\nsys.argv = ['conveyor', 'run', 'small', "
        "'--runner', 'inprocess', '--engine', 'local']\ntry:\n    main()\nexcept SystemExit "
        "as exc:\n    assert not exc.code\nprint('SQLALCHEMY', 'sqlalchemy' in sys.modules)\n"
    )
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(project.root)}
    outputs = []
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-c", probe], cwd=project.root, env=env,
                              capture_output=True, text=True, check=False)  # fmt: skip
        assert proc.returncode == 0, proc.stderr + proc.stdout
        outputs.append(proc.stdout)
    assert "SQLALCHEMY True" in outputs[0]  # the first run creates the schema
    assert "1 cached" in outputs[1] and "SQLALCHEMY False" in outputs[1]
    from conveyor.db import lineage

    runs = lineage.list_runs(Settings.load(project.root))
    assert [r.status for r in runs] == ["succeeded", "succeeded"]
    assert lineage.run_lineage(project.settings, runs[0].run_id).steps[0].status == "cached"
