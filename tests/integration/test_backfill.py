"""Backfills against a real Prefect server and conveyor's database (SQLite)."""

from __future__ import annotations

import importlib.util
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import date

import pytest

from conveyor.ops.backfill import backfill
from tests.conftest import need
from tests.integration.prefect_support import query, record_requests

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

STEPS = """
import time
from datetime import date, timedelta
from conveyor import component

@component
def make_rows(day: date, pause: float = 0.0) -> "pd.DataFrame":
    import pandas as pd
    time.sleep(pause)
    return pd.DataFrame({"day": [day, day], "kind": ["a", "b"], "value": [day.day, -day.day]})

@component
def scale(rows: "pd.DataFrame", factor: int = 2) -> "pd.DataFrame":
    return rows.assign(value=rows["value"] * factor)

@component
def range_rows(start: date, end: date) -> "pd.DataFrame":
    import pandas as pd
    days = [start + timedelta(n) for n in range((end - start).days + 1)]
    days = [d for d in days if d.weekday() < 5]
    return pd.DataFrame({"day": days, "value": [d.toordinal() % 97 for d in days]})
"""

FLOWS = """
from datetime import date
from conveyor import pipeline, write_table
from steps.b import make_rows, range_rows, scale

@pipeline(calendar="daily")
def daily_rows(day: date, pause: float = 0.0):
    write_table(scale(make_rows(day, pause=pause)), "daily_rows", partition=day,
                partition_col="day")

@pipeline(partition=("start", "end"), calendar="weekdays")
def ranged_rows(start: date, end: date, table: str = "ranged_rows"):
    write_table(range_rows(start, end), table, partition=(start, end), partition_col="day")
"""


@pytest.fixture
def flows(project, prefect_api):
    need(importlib.util.find_spec("sqlalchemy") is not None, "conveyor[db] is not installed")
    project.write("steps/b.py", STEPS)
    project.write("flows/b.py", FLOWS)
    return project


def _rows(project, table: str) -> list[tuple]:
    with sqlite3.connect(project.root / ".conveyor" / "conveyor.db") as db:
        return db.execute(f"select * from {table} order by 1, 2").fetchall()


def _statuses(project, pipeline: str) -> dict[str, str]:
    path = project.root / ".conveyor" / "conveyor.db"
    if not path.exists():
        return {}
    with sqlite3.connect(path) as db:
        try:
            found = db.execute(
                "select partition_date, status from conveyor_partitions where pipeline = ?",
                (pipeline,),
            ).fetchall()
        except sqlite3.OperationalError:
            return {}
    return dict(found)


def test_dry_run_lists_partitions_and_runs_nothing(flows):
    result = backfill("daily_rows", date(2024, 1, 1), date(2024, 1, 10), dry_run=True,
                      runner="inprocess")  # fmt: skip
    assert [b.label() for b in result.batches][:2] == ["2024-01-01", "2024-01-02"]
    assert len(result.batches) == 10 and result.outcomes == []
    assert _statuses(flows, "daily_rows") == {}
    cli = subprocess.run(
        [sys.executable, "-m", "conveyor.cli", "backfill", "daily_rows", "--start",
         "2024-01-01", "--end", "2024-01-10", "--dry-run"],
        cwd=flows.root, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "dry run: 10 partitions to run in 10 runs" in cli.stdout
    assert _statuses(flows, "daily_rows") == {}


def test_killed_backfill_resumes_to_exactly_ten_partitions_without_duplicates(flows):
    command = [
        sys.executable, "-m", "conveyor.cli", "backfill", "daily_rows", "--start", "2024-01-01",
        "--end", "2024-01-10", "--concurrency", "2", "--runner", "inprocess",
        "--engine", "prefect", "--param", "pause=1.0",
    ]  # fmt: skip
    proc = subprocess.Popen(command, cwd=flows.root, env=dict(os.environ),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        done = [d for d, s in _statuses(flows, "daily_rows").items() if s == "succeeded"]
        if len(done) >= 4 or proc.poll() is not None:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
    os.killpg(proc.pid, signal.SIGKILL)  # a crash: no clean shutdown at all
    proc.wait()
    partial = _statuses(flows, "daily_rows")
    assert 4 <= sum(s == "succeeded" for s in partial.values()) < 10

    again = subprocess.run(command, cwd=flows.root, capture_output=True, text=True,
                           timeout=600, check=False)  # fmt: skip
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "skipped (already succeeded)" in again.stdout
    statuses = _statuses(flows, "daily_rows")
    assert sorted(statuses) == [f"2024-01-{d:02d}" for d in range(1, 11)]
    assert set(statuses.values()) == {"succeeded"}
    rows = _rows(flows, "daily_rows")
    assert len(rows) == 20  # two rows per day, none duplicated
    assert len({(r[0], r[1]) for r in rows}) == 20

    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterTags,
    )

    runs = query(lambda c: c.read_flow_runs(
        flow_filter=FlowFilter(name=FlowFilterName(any_=["daily_rows"])),
        flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=["backfill"])),
    ))  # fmt: skip
    assert {r.parameters["day"] for r in runs} == set(statuses)  # each partition a flow run
    with sqlite3.connect(flows.root / ".conveyor" / "conveyor.db") as db:
        recorded = dict(db.execute("select run_id, tags from conveyor_runs").fetchall())
    assert set(recorded.values()) == {'["backfill"]'}  # the tag once
    # each finished flow run's name carries the conveyor run it was (one killed before Prefect
    # named it keeps Prefect's random name)
    finished = [r for r in runs if r.state.type.value == "COMPLETED"]
    assert finished and {r.name.rsplit(" · ", 1)[-1] for r in finished} <= set(recorded)
    completed = {r.parameters["day"] for r in runs if r.state.type.value == "COMPLETED"}
    # a run SIGKILLed after conveyor recorded its partition but before Prefect heard of the
    # end stays "Running" there; at most `concurrency` were in flight
    assert len(completed) >= 10 - 2


def test_results_do_not_depend_on_how_dates_are_grouped(flows):
    tables = {}
    for batch in (1, 3, 10):
        table = f"ranged_{batch}"
        result = backfill("ranged_rows", date(2024, 1, 1), date(2024, 1, 19), batch=batch,
                          params={"table": table}, runner="inprocess", engine="local",
                          reprocess="all")  # fmt: skip
        assert result.ok, result.summary()
        assert len(result.batches) == -(-15 // batch)
        tables[batch] = _rows(flows, table)
    assert tables[1] == tables[3] == tables[10]
    assert len(tables[1]) == 15


def test_a_rebackfill_after_a_code_change_reruns_only_the_changed_step(flows):
    first = backfill("daily_rows", date(2024, 2, 1), date(2024, 2, 3), runner="inprocess",
                     engine="local")  # fmt: skip
    assert first.ok, first.summary()
    source = (flows.root / "steps/b.py").read_text()
    flows.write("steps/b.py", source.replace("rows['value'] * factor", "rows['value'] * factor + 1")
                .replace('rows["value"] * factor', 'rows["value"] * factor + 1'))  # fmt: skip
    import importlib

    importlib.reload(sys.modules["steps.b"])
    importlib.reload(sys.modules["flows.b"])
    second = backfill("daily_rows", date(2024, 2, 1), date(2024, 2, 3), runner="inprocess",
                      engine="local", reprocess="all")  # fmt: skip
    assert second.ok, second.summary()
    for outcome in second.outcomes:
        steps = outcome.run.steps
        assert steps["make_rows"].status == "cached"
        assert (steps["scale"].status, steps["scale"].reason) == (
            "succeeded",
            "code changed (steps/b.py: scale)",
        )
        assert steps["write_table"].status == "succeeded"
    values = sorted(r[2] for r in _rows(flows, "daily_rows"))
    assert values[:2] == [-5, -3]  # -day*2 + 1 for days 3 and 2


def test_a_prefect_backfill_is_never_refused_by_the_servers_sqlite(flows, monkeypatch):
    """Run after run, Prefect's server records the last run's task runs from its events while the
    next flow run is created; begun DEFERRED, that creation found SQLite locked and got a 503,
    retried 2 s later (about 2 runs in 3). The session's server is started as `conveyor ui`
    starts its own, with write transactions begun IMMEDIATE: none is refused."""
    sent = record_requests(monkeypatch)
    result = backfill("daily_rows", date(2024, 3, 1), date(2024, 3, 12), runner="inprocess",
                      engine="prefect", concurrency=2)  # fmt: skip
    assert result.ok, result.summary()
    assert len(result.outcomes) == 12 and all(o.run.flow_run_id for o in result.outcomes)
    assert any(s.path.endswith("/set_state") for s in sent)  # the recording sees the runs
    assert [f"{s.method} {s.path}" for s in sent if s.status == 503] == []
