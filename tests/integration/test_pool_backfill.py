"""A backfill on a Prefect work pool with two real workers, one of them killed midway.

Two `conveyor worker start` processes take the batches' flow runs from the pool; one is killed
with SIGKILL (its whole process group, as a container or machine dies) while it runs a
partition. Nothing is lost: the dead run is recorded crashed, its flow run too, the batch runs
again on the remaining worker, and the table ends exactly as a clean run leaves it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import date

import pytest

from conveyor.db.lineage import list_runs
from tests.integration.prefect_support import query

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

STEPS = """
import time
from datetime import date
from conveyor import component

@component
def rows_of(day: date) -> "pd.DataFrame":
    import pandas as pd

    time.sleep(6)  # long enough to be killed inside
    return pd.DataFrame({"day": [day], "value": [day.toordinal() % 1000]})
"""

FLOWS = """
from datetime import date
from conveyor import pipeline, write_table
from steps.rows import rows_of

@pipeline(calendar="weekdays")
def pooled(day: date):
    write_table(rows_of(day), "pooled_rows", partition=day, partition_col="day")
"""

DAYS = [date(2024, 3, 4), date(2024, 3, 5), date(2024, 3, 6), date(2024, 3, 7)]


def _worker(project, env, name):
    return subprocess.Popen(
        [sys.executable, "-m", "conveyor.cli", "worker", "start", "--pool", "test-pool",
         "--limit", "2", "--name", name],
        cwd=project.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip


def _kill_tree(pid):
    import psutil

    parent = psutil.Process(pid)
    for proc in [parent, *parent.children(recursive=True)]:
        proc.kill()


def _stop(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_a_killed_worker_loses_nothing(project, prefect_api):
    project.write("steps/rows.py", STEPS)
    project.write("flows/pooled.py", FLOWS)
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "CONVEYOR_HEARTBEAT_SECONDS": "2"}
    doomed, survivor = _worker(project, env, "doomed"), _worker(project, env, "survivor")
    backfill = subprocess.Popen(
        [sys.executable, "-m", "conveyor.cli", "backfill", "pooled", "--start", str(DAYS[0]),
         "--end", str(DAYS[-1]), "--pool", "test-pool", "--runner", "inprocess"],
        cwd=project.root, env={**env, "COLUMNS": "200"}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        killed = None
        deadline = time.monotonic() + 300
        while killed is None and time.monotonic() < deadline and backfill.poll() is None:
            runs = [r for r in list_runs(project.settings, pipeline="pooled") if r.worker]
            victims = [r for r in runs if r.worker == "doomed" and r.status == "running"]
            if victims:
                _kill_tree(doomed.pid)  # the worker and the runs it started, as a container dies
                killed = victims[0]
            else:
                time.sleep(0.5)
        assert killed is not None, "worker 'doomed' never ran a partition before the backfill ended"
        output, _ = backfill.communicate(timeout=400)
    finally:
        for proc in (backfill, doomed, survivor):
            _stop(proc)
    text = output.decode(errors="replace")
    assert backfill.returncode == 0, text[-3000:]
    assert "4 partitions succeeded" in text, text[-3000:]

    runs = list_runs(project.settings, pipeline="pooled", limit=50)
    assert not [r for r in runs if r.status == "running"], runs
    crashed = [r for r in runs if r.run_id == killed.run_id]
    assert crashed and crashed[0].status == "crashed", crashed
    succeeded = [r for r in runs if r.status == "succeeded"]
    assert sorted(r.partition_start for r in succeeded) == DAYS  # each once
    assert {r.worker for r in succeeded if r.partition_start == killed.partition_start} == {
        "survivor"
    }

    from conveyor.db.database import Database
    from conveyor.db.reads import load_table

    rows = load_table(Database.from_settings(project.settings), "pooled_rows")
    got = sorted(zip(rows["day"].astype(str), rows["value"], strict=True))
    assert got == [(str(d), d.toordinal() % 1000) for d in DAYS]  # a clean run's rows, no more

    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    flow_runs = query(
        lambda c: c.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=["worker:doomed"]))
        )
    )
    assert flow_runs and all(f.state.is_final() for f in flow_runs), [f.state for f in flow_runs]
    assert any(f.state.type.value == "CRASHED" for f in flow_runs)
