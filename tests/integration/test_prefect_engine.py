"""The Prefect engine against a real Prefect server: flow runs, task runs, states, artifacts."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import conveyor
from conveyor.backends.prefect_publishing import wait_for_publishing
from conveyor.ops.run import resolve_engine
from tests.integration.prefect_support import flow_run_and_tasks, query, record_requests

pytestmark = [pytest.mark.prefect, pytest.mark.slow]


STEPS = """
from pathlib import Path
from conveyor import Metrics, component

@component
def load(n: int) -> list:
    print(f"loading {n} values")
    return list(range(n))

@component
def total(values: list) -> int:
    return sum(values)

@component
def score(values: list) -> Metrics:
    return Metrics(mean=sum(values) / len(values))

@component
def boom(values: list) -> int:
    raise ValueError("boom in a step")

@component
def after_boom(x: int) -> int:
    return x

@component
def half(x: int) -> float:
    if x == 0:
        raise ZeroDivisionError("no half of nothing, for this test")
    return x / 2

@component(allow_failures=True)
def gather(values: list[float]) -> list:
    return values

@component(retries=1)
def flaky(marker: str) -> int:
    path = Path(marker)
    first = not path.exists()
    path.write_text("x")
    if first:
        raise ConnectionError("first attempt fails")
    return 1
"""

FLOWS = """
from conveyor import pipeline
from steps.p import after_boom, boom, flaky, gather, half, load, score, total

@pipeline
def summed(n: int = 4):
    values = load(n)
    return total(values), score(values)

@pipeline
def broken(n: int = 3):
    values = load(n)
    after_boom(boom(values))
    return total(values)

@pipeline
def tolerant(xs: list = [2, 0, 4]):
    return gather(half.map(x=xs))

@pipeline
def retried(marker: str):
    return flaky(marker)
"""


@pytest.fixture
def flows(project, prefect_api):
    project.write("steps/p.py", STEPS)
    project.write("flows/p.py", FLOWS)
    return project


def _artifacts(flow_run_id: str) -> list:
    """The artifacts Prefect holds for a flow run."""
    from uuid import UUID

    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    runs = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(flow_run_id)]))
    return query(lambda client: client.read_artifacts(artifact_filter=runs))


def _run(name, params=None, **options):
    return conveyor.run(name, params or {}, runner="inprocess", engine="prefect", hooks=[],
                        **options)  # fmt: skip


def test_a_run_is_a_flow_run_with_one_task_run_per_executed_step(flows):
    result = _run("summed")
    assert result.ok, result.error
    assert result.output == (6, {"mean": 1.5})
    flow_run, tasks = flow_run_and_tasks(result.flow_run_id)
    assert flow_run.state.type.value == "COMPLETED"
    assert flow_run.parameters == {"n": 4}
    assert flow_run.name == f"summed · {result.run_id}"  # the UI's run is conveyor's run
    assert set(tasks) == {"load", "total", "score"}
    assert {t.state.type.value for t in tasks.values()} == {"COMPLETED"}
    assert tasks["load"].state.message == "no previous run"

    # a fully cached re-run pays no task run per step: the flow settles cache hits itself
    again = _run("summed")
    assert {s.status for s in again.steps.values()} == {"cached"}
    flow_run, tasks = flow_run_and_tasks(again.flow_run_id)
    assert flow_run.state.type.value == "COMPLETED" and tasks == {}


def test_flow_name_is_the_pipeline_and_artifacts_are_published(flows):
    result = _run("summed", {"n": 5})
    flow_run, _ = flow_run_and_tasks(result.flow_run_id)
    flow = query(lambda client: client.read_flow(flow_run.flow_id))
    assert flow.name == "summed"
    wait_for_publishing(30)  # the run returned without waiting for its tables
    artifacts = _artifacts(result.flow_run_id)
    by_key = {a.key: json.loads(a.data) if isinstance(a.data, str) else a.data for a in artifacts}
    steps = by_key["summed-steps"]
    assert [row["step"] for row in steps] == ["load", "total", "score"]
    assert {"cached / why", "environment build (s)", "run (s)", "I/O (s)"} <= set(steps[0])
    assert by_key["summed-metrics"] == [{"step": "score", "metric": "mean", "value": 2.0}]


def test_a_report_is_linked_from_its_runs_flow_run(flows, tmp_path):
    result = _run("summed", {"n": 6})
    page = tmp_path / "report.html"
    page.write_text("<h1>report</h1>")
    assert conveyor.publish_report(page, result, title="Summed report", markdown="| a |\n|---|")
    artifacts = _artifacts(result.flow_run_id)
    (report,) = [a for a in artifacts if a.key == "summed-report"]
    assert report.type == "markdown"
    assert page.as_uri() in report.data and "# Summed report" in report.data
    assert "| a |" in report.data
    local = conveyor.run("summed", {"n": 6}, runner="inprocess", engine="local", hooks=[])
    assert not conveyor.publish_report(page, local, title="no flow run")


def test_a_failing_step_fails_the_flow_run_and_skips_downstream(flows):
    result = _run("broken")
    assert result.status == "failed"
    assert result.steps["after_boom"].status == "skipped"
    assert result.steps["total"].status == "succeeded"
    flow_run, tasks = flow_run_and_tasks(result.flow_run_id)
    assert flow_run.state.type.value == "FAILED"
    assert tasks["boom"].state.type.value == "FAILED"
    assert "boom in a step" in tasks["boom"].state.message
    # never started, but shown: a task run named for the step, saying why it did not run
    assert tasks["after_boom"].state.name == "Skipped"
    assert tasks["after_boom"].state.message == "upstream boom did not succeed"
    assert tasks["total"].state.type.value == "COMPLETED"


def test_a_collector_that_allows_failures_runs_after_a_failed_item(flows):
    # Prefect would leave a task whose wait_for holds a failed state NotReady; conveyor decides
    result = _run("tolerant")
    assert result.steps["half[0]"].status == "failed"
    assert result.steps["gather"].status == "succeeded", result.steps["gather"].reason
    assert result.steps["gather"].output == [1.0, 2.0]
    _, tasks = flow_run_and_tasks(result.flow_run_id)
    assert tasks["gather"].state.type.value == "COMPLETED"


def test_parameters_larger_than_prefect_accepts_fail_naming_the_parameter(flows):
    from conveyor.errors import ParameterError

    with pytest.raises(ParameterError, match=r"pipeline 'tolerant': its parameters are [\d,]+ "
                       r"bytes as JSON \('xs' [\d,]+\), more than the 524,288 bytes"):  # fmt: skip
        _run("tolerant", {"xs": list(range(200_000))})


def test_component_retries_are_prefect_retries(flows, tmp_path):
    result = _run("retried", {"marker": str(tmp_path / "marker")})
    assert result.ok, result.error
    assert result.steps["flaky"].attempts == 2
    _, tasks = flow_run_and_tasks(result.flow_run_id)
    assert tasks["flaky"].run_count == 2
    assert tasks["flaky"].state.type.value == "COMPLETED"


def test_auto_engine_uses_prefect_when_an_api_is_configured(flows, monkeypatch):
    assert resolve_engine("auto", flows.settings) == "prefect"
    monkeypatch.delenv("PREFECT_API_URL")
    assert resolve_engine("auto", flows.settings) == "local"


def test_step_output_lines_are_forwarded_into_the_task_run_logs(flows):
    import time
    from uuid import UUID

    from prefect.client.schemas.filters import LogFilter, LogFilterTaskRunId

    result = conveyor.run("summed", {"n": 7}, runner="venv", engine="prefect", hooks=[])
    assert result.ok, result.error
    _, tasks = flow_run_and_tasks(result.flow_run_id)
    task_run = tasks["load"].id
    messages: list[str] = []
    deadline = time.monotonic() + 30  # log records reach the API in batches
    while time.monotonic() < deadline and "loading 7 values" not in messages:
        logs = query(lambda c: c.read_logs(
            log_filter=LogFilter(task_run_id=LogFilterTaskRunId(any_=[UUID(str(task_run))]))
        ))  # fmt: skip
        messages = [log.message for log in logs]
        time.sleep(0.5)
    assert "loading 7 values" in messages


def test_a_flow_run_asks_the_api_only_what_it_needs(flows, monkeypatch):
    """Left to itself Prefect loads the CA bundle into a new TLS context for each of three clients
    a run, asks the server for its default result storage twice a run and fetches a CSRF token
    with each new client. A Prefect upgrade that brings any of it back fails here. (Only the
    run's own thread is watched: Prefect's log and event workers keep clients of their own.)"""
    import ssl
    import threading

    runs = threading.current_thread()
    sent = record_requests(monkeypatch)
    contexts = []
    create = ssl.create_default_context

    def counting(*args, **kwargs):
        if threading.current_thread() is runs:
            contexts.append(kwargs.get("cafile"))
        return create(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counting)

    assert _run("summed", {"n": 2}).ok  # the first run may build the TLS context, ask for a token
    sent.clear()
    contexts.clear()
    second = _run("summed", {"n": 3})
    assert second.ok
    paths = [s.path for s in sent if s.thread is runs]
    assert any(p.endswith("/set_state") for p in paths)  # the watch sees the run's requests
    assert not [p for p in paths if p.endswith(("/admin/storage", "/csrf-token"))], paths
    assert contexts == []
    flow_run, tasks = flow_run_and_tasks(second.flow_run_id)
    assert flow_run.name == f"summed · {second.run_id}" and set(tasks) == {"load", "total", "score"}


def test_a_runs_tables_reach_prefect_when_its_process_exits_right_after_the_run(flows):
    """The run returns without waiting for its tables; the process still writes them on its way
    out, before Prefect's own event worker stops (publishing a table emits an event)."""
    code = (
        "import conveyor\n"
        "r = conveyor.run('summed', {'n': 7}, runner='inprocess', engine='prefect', hooks=[])\n"
        "print('FLOW RUN', r.flow_run_id)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=flows.root, env=dict(os.environ),
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    flow_run_id = proc.stdout.rsplit("FLOW RUN ", 1)[1].split()[0]
    artifacts = _artifacts(flow_run_id)
    assert {a.key for a in artifacts} == {"summed-steps", "summed-metrics"}
    assert "could not publish" not in proc.stderr and "Error emitting event" not in proc.stderr
