"""The database layer as a run sees it (embedded SQLite): host-step checks, and runs that keep
working when the database cannot be reached."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest

import conveyor
from conveyor.db.host_steps import git_version
from conveyor.errors import DatabaseError
from tests.conftest import Project, need

STEPS = """
import pandas as pd
from conveyor import component


@component
def numbers(n: int) -> pd.DataFrame:
    return pd.DataFrame({"n": list(range(n))})


@component
def size(blob: str) -> int:
    return len(blob)
"""

FLOWS = """
from datetime import date
from conveyor import pipeline, write_table
from steps.numbers import numbers, size


@pipeline(name="forgetful", partition="day")
def forgetful(day: date):
    write_table(numbers(3), "numbers")


@pipeline(name="plain")
def plain(n: int = 2):
    return numbers(n)


@pipeline(name="sized")
def sized(blob: str):
    return size(blob)


@pipeline(name="per_model")
def per_model(model: str, n: int = 2):
    write_table(numbers(n), "predictions", partition={"model": model})
"""


@pytest.fixture
def project_with_flows(project: Project) -> Project:
    project.write("steps/numbers.py", STEPS)
    project.write("flows/numbers.py", FLOWS)
    return project


def test_write_table_without_partition_in_a_partitioned_pipeline_is_refused(
    project_with_flows: Project,
) -> None:
    result = conveyor.run("forgetful", {"day": "2024-01-01"}, runner="inprocess")
    assert not result.ok
    error = result.steps["write_table"].error or ""
    assert "write_table('numbers') has no partition in a partitioned pipeline" in error
    assert "Pass partition=<the partition parameter>" in error


def test_a_run_without_a_reachable_database_fails_before_running(
    project_with_flows: Project,
) -> None:
    """No data without a record: an unreachable database fails the run at its start, naming
    the database and the cause, and saying how to run without records on purpose."""
    from conveyor.errors import DatabaseError

    settings = project_with_flows.settings.with_changes(
        database_url="postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"
    )
    with pytest.raises(DatabaseError) as info:
        conveyor.run("plain", {}, runner="inprocess", settings=settings)
    message = str(info.value)
    assert "cannot record run" in message and "127.0.0.1:1" in message
    assert "connection" in message.lower() or "connect" in message.lower()
    assert "CONVEYOR_DATABASE_URL=none" in message
    assert not (project_with_flows.root / ".conveyor" / "runs").exists()
    result = conveyor.run("plain", {}, runner="inprocess",
                          settings=settings.with_changes(database_url="none"))  # fmt: skip
    assert result.ok and result.output["n"].tolist() == [0, 1]


@contextmanager
def read_only(path: Path) -> Iterator[None]:
    """`path` unwritable for this process: its mode, or for root (whom modes do not stop) the
    immutable attribute."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        try:
            yield
        finally:
            path.chmod(0o644)
        return
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True, check=False)
    need(done.returncode == 0, f"root cannot make {path} read-only: {done.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=False)


READ_ONLY = (
    "is read-only (attempt to write a readonly database); conveyor writes run records and "
    "tables to it on every run. Give this user write permission, or set CONVEYOR_DATABASE_URL "
    "to a database it can write"
)


def test_a_read_only_sqlite_file_is_named_not_taken_for_a_server(tmp_path: Path) -> None:
    from conveyor.db.database import Database
    from conveyor.db.writes import write_table

    fresh = tmp_path / "fresh.db"  # never opened by conveyor: switching it to WAL must write
    sqlite3.connect(fresh).close()
    used = tmp_path / "used.db"  # conveyor's own, in WAL mode, with a table
    db = Database(f"sqlite:///{used}")
    write_table(db, pd.DataFrame({"n": [1]}), "numbers")
    db.close()
    with read_only(fresh), read_only(used):
        with pytest.raises(DatabaseError) as opened:
            Database(f"sqlite:///{fresh}").ensure_schema()
        message = str(opened.value)
        assert message.startswith(f"cannot open sqlite:///{fresh}: the SQLite database file ")
        assert f"{fresh} {READ_ONLY}" in message
        assert "server" not in message
        db = Database(f"sqlite:///{used}")
        with pytest.raises(DatabaseError) as written:
            write_table(db, pd.DataFrame({"n": [2]}), "numbers")
        db.close()
        assert str(written.value) == (
            f"write_table('numbers'), partition the whole table: the SQLite database file "
            f"{used} {READ_ONLY}"
        )


def test_a_run_on_a_read_only_database_names_the_file_and_runs_nothing(
    project_with_flows: Project,
) -> None:
    conveyor.run("plain", {"n": 1}, runner="inprocess")  # creates .conveyor/conveyor.db
    file = project_with_flows.root / ".conveyor" / "conveyor.db"
    from conveyor.db.database import dispose_shared

    dispose_shared()  # the next run opens the file anew
    with read_only(file), pytest.raises(DatabaseError) as caught:
        conveyor.run("plain", {"n": 2}, runner="inprocess")
    message = " ".join(str(caught.value).split())
    assert "cannot record run" in message and "Nothing ran." in message
    assert f"the SQLite database file {file} is read-only" in message
    assert "server is running" not in message


def test_runs_are_recorded_in_the_embedded_database_by_default(
    project_with_flows: Project,
) -> None:
    from conveyor.db import lineage

    result = conveyor.run("plain", {"n": 3}, runner="inprocess")
    assert (project_with_flows.root / ".conveyor" / "conveyor.db").is_file()
    [recorded] = lineage.list_runs(project_with_flows.settings)
    assert (recorded.run_id, recorded.status) == (result.run_id, "succeeded")


def test_git_version_outside_a_repository(tmp_path) -> None:
    assert git_version(tmp_path) == (None, None)


def test_git_version_reads_head_and_the_dirty_flag(tmp_path) -> None:
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(tmp_path), "-c", "user.email=t@t", "-c", "user.name=t", *args],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip

    git("init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git("add", "a.py")
    git("commit", "-qm", "one")
    assert git_version(tmp_path) == (git("rev-parse", "HEAD"), False)
    (tmp_path / "a.py").write_text("x = 2\n")
    assert git_version(tmp_path)[1] is True


GAPPY = """
from datetime import date, timedelta
from conveyor import component, pipeline, write_table

@component
def daily_rows(start: date, end: date, skip: str = "") -> "pd.DataFrame":
    import pandas as pd

    days = [start + timedelta(n) for n in range((end - start).days + 1)]
    days = [d for d in days if d.weekday() < 5 and d.isoformat() != skip]
    return pd.DataFrame({"day": days, "value": [d.day for d in days]})

@pipeline(partition=("start", "end"), calendar="weekdays")
def gappy(start: date, end: date, skip: str = ""):
    write_table(daily_rows(start, end, skip), "gappy", partition=(start, end),
                partition_col="day", min_rows=1)
"""


def test_a_partition_date_without_rows_fails_and_writes_nothing(project: Project) -> None:
    from datetime import date

    project.write("flows/gappy.py", GAPPY)
    week = {"start": date(2024, 1, 1), "end": date(2024, 1, 5)}
    good = conveyor.run("gappy", week, runner="inprocess")
    assert good.ok, good.error
    bad = conveyor.run("gappy", {**week, "skip": "2024-01-03"}, runner="inprocess")
    assert bad.status == "failed"
    assert "1 partition date(s) have fewer than 1 row(s): 2024-01-03 (0)" in bad.error
    assert "Nothing was written" in bad.error
    rows = conveyor.read_table("gappy")
    assert len(rows) == 5  # the good week is still there, whole


def test_a_pipeline_writes_one_key_partition_per_run(project_with_flows: Project) -> None:
    import sqlite3

    for model, n in (("lda", 3), ("qda", 2), ("lda", 1)):
        result = conveyor.run("per_model", {"model": model, "n": n}, runner="inprocess")
        assert result.ok, result.error
    database = project_with_flows.settings.home / "conveyor.db"
    with sqlite3.connect(database) as conn:
        got = conn.execute("SELECT model, count(*) FROM predictions GROUP BY model").fetchall()
    assert sorted(got) == [("lda", 1), ("qda", 2)]  # lda rewritten, qda untouched


def test_a_large_parameter_is_stored_once_per_run(project_with_flows: Project) -> None:
    import json
    import sqlite3

    blob = "x" * 1_000_000
    # the local engine: Prefect's server refuses parameters this large (test_prefect_engine.py)
    assert conveyor.run("sized", {"blob": blob}, runner="inprocess", engine="local").ok
    home = project_with_flows.settings.home
    with sqlite3.connect(home / "conveyor.db") as conn:
        (params,) = conn.execute("SELECT params FROM conveyor_runs").fetchone()
        (inputs,) = conn.execute("SELECT inputs FROM conveyor_step_runs").fetchone()
    assert json.loads(params) == {"blob": blob}  # the one copy
    assert json.loads(inputs)["blob"]["bytes"] == len(blob) + 2  # the step's record: its hash
    caches = [p for p in (home / "artifacts").rglob("*") if p.is_file()]
    assert caches and max(p.stat().st_size for p in caches) < 10_000  # nor does the cache
    again = conveyor.run("sized", {"blob": blob}, runner="inprocess", engine="local")
    assert again.steps["size"].status == "cached"
    changed = conveyor.run("sized", {"blob": blob + "y"}, runner="inprocess", engine="local")
    assert changed.steps["size"].reason == "parameter blob changed"
    assert changed.output == len(blob) + 1
