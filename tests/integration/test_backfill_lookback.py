"""Backfills of a pipeline whose partitions read what earlier partitions wrote (look-back).

`depends_on_past=1`: each day's running total reads the day before from the database. Run with
several batches at once, a batch must still wait for the ones it reads; a backfill starting
where the day before was never written must refuse before writing anything.
"""

from __future__ import annotations

import importlib.util
import sqlite3
from datetime import date

import pytest

from conveyor.errors import ParameterError
from conveyor.ops.backfill import backfill
from tests.conftest import need

STEPS = """
import time
from datetime import date, timedelta
from conveyor import component

@component
def zero(day: date) -> "pd.DataFrame":
    import pandas as pd

    return pd.DataFrame({"day": [day], "total": [0]})

@component
def running_total(previous: "pd.DataFrame", day: date) -> "pd.DataFrame":
    import pandas as pd

    time.sleep(0.05 if day.day % 3 else 0.2)  # uneven batches: a later one would overtake
    before = previous[pd.to_datetime(previous["day"]).dt.date < day]
    if before.empty:
        raise ValueError(f"the total of {day - timedelta(days=1)} was not written yet")
    total = int(before["total"].iloc[-1]) + day.day
    return pd.DataFrame({"day": [day], "total": [total]})
"""

FLOWS = """
from datetime import date
from conveyor import load_table, pipeline, write_table
from steps.totals import running_total, zero

@pipeline(calendar="daily")
def seed(day: date):
    write_table(zero(day), "totals", partition=day, partition_col="day")

@pipeline(calendar="daily", depends_on_past=1)
def totals(day: date):
    previous = load_table("totals", start=day, end=day, days=1)
    write_table(running_total(previous, day), "totals", partition=day, partition_col="day")
"""


@pytest.fixture
def flows(project):
    need(importlib.util.find_spec("sqlalchemy") is not None, "conveyor[db] is not installed")
    project.write("steps/totals.py", STEPS)
    project.write("flows/totals.py", FLOWS)
    return project


def _totals(project) -> list[tuple[str, int]]:
    with sqlite3.connect(project.root / ".conveyor" / "conveyor.db") as db:
        return db.execute("select day, total from totals order by day").fetchall()


def _expected(days: int) -> list[int]:
    return [sum(range(1, n + 1)) for n in range(1, days + 1)]


def test_concurrent_batches_wait_for_the_ones_they_read(flows):
    import conveyor

    # the day before the first: a row written by another pipeline, then the first day itself
    conveyor.run("seed", {"day": date(2023, 12, 31)}, runner="inprocess", engine="local")
    first = conveyor.run("totals", {"day": date(2024, 1, 1)}, runner="inprocess", engine="local")
    assert first.ok, first.error
    result = backfill("totals", date(2024, 1, 2), date(2024, 1, 15), concurrency=3,
                      runner="inprocess", engine="local")  # fmt: skip
    assert result.ok, result.summary()
    assert [total for _, total in _totals(flows)] == [0, *_expected(15)]


def test_a_backfill_missing_its_lookback_refuses_before_writing(flows):
    with pytest.raises(ParameterError) as info:
        backfill("totals", date(2024, 1, 10), date(2024, 1, 12), runner="inprocess",
                 engine="local")  # fmt: skip
    message = str(info.value)
    assert "depends_on_past" in message and "2024-01-09 have not succeeded" in message
    assert "start the backfill at 2024-01-09 or earlier" in message
    assert not (flows.root / ".conveyor" / "conveyor.db").exists() or not _has_rows(flows)


def test_reverse_is_refused_for_a_pipeline_that_reads_its_past(flows):
    with pytest.raises(ParameterError, match="must run first"):
        backfill("totals", date(2024, 1, 1), date(2024, 1, 3), reverse=True, runner="inprocess",
                 engine="local")  # fmt: skip


def _has_rows(project) -> bool:
    with sqlite3.connect(project.root / ".conveyor" / "conveyor.db") as db:
        try:
            return bool(db.execute("select count(*) from totals").fetchone()[0])
        except sqlite3.OperationalError:
            return False
