"""A step runs from nothing but a task spec URL, a store URL and hashes: a bare container, no
mounts, its runtime, code and input fetched from a real S3-compatible server, its output and
result published there. The command is the one a remote worker or a KFP pod runs."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from conveyor.dsl.artifacts import ArtifactRef, Codec
from conveyor.engine.store import ArtifactStore
from conveyor.ops.discovery import resolve_pipeline
from conveyor.ops.run import build_engine
from conveyor.runners.remote import executor_command, publish_runtime, store_variables
from conveyor.version import EXECUTOR_PROTOCOL
from tests.integration.s3_support import CREDENTIALS

pytestmark = [pytest.mark.docker, pytest.mark.slow]

STEPS = """
from conveyor import component

@component(packages=["s3fs>=2024.6,<2026.10"])
def make(rows: int) -> "pd.DataFrame":
    import pandas as pd

    return pd.DataFrame({"x": range(rows)})

@component(packages=["s3fs>=2024.6,<2026.10"])
def scale(df: "pd.DataFrame", factor: float) -> "pd.DataFrame":
    from steps.helpers import times

    return df.assign(x=times(df["x"], factor))
"""

HELPERS = """
def times(column, factor):
    return column * factor
"""

FLOW = """
from conveyor import pipeline
from steps.remote import make, scale

@pipeline
def remote(rows: int = 4, factor: float = 2.5):
    return scale(make(rows), factor)
"""


def test_a_bare_container_runs_a_step_from_the_store_alone(project, s3_server, s3_bucket,
                                                          monkeypatch):  # fmt: skip
    from tests.integration.test_docker_runner import _engine

    client, reason = _engine()
    if client is None:
        pytest.skip(reason)
    project.write("steps/remote.py", STEPS)
    project.write("steps/helpers.py", HELPERS)
    project.write("flows/remote.py", FLOW)
    url = f"{s3_bucket}/store"
    monkeypatch.setenv("CONVEYOR_ARTIFACTS", url)
    settings = project.settings
    engine = build_engine(settings, runner="docker", hooks=[])
    plan = engine.plan(resolve_pipeline("remote", settings), {})  # builds the image, the bundle
    step = plan.steps["scale"]
    assert step.environment is not None and step.bundle is not None
    store = ArtifactStore(url, cache_dir=settings.artifact_cache)
    frame = pd.DataFrame({"x": [1, 2, 3]})
    given = store.put(frame, Codec("parquet"))
    runtime = publish_runtime(store)
    spec = {
        "protocol": EXECUTOR_PROTOCOL, "step": "scale", "module": "steps.remote",
        "qualname": "scale", "packages": [],
        "inputs": {"df": {"sha256": given.sha256, "format": "parquet"}},
        "parameters": {"factor": {"value": 2.5}},
        "outputs": {"output": {"format": "parquet"}},
        "returns": "single",
    }  # fmt: skip
    store.write_document("tasks/scale.json", json.dumps(spec))
    command = executor_command(
        store=url, runtime=runtime, spec=f"{url}/tasks/scale.json", bundle=step.bundle,
        python="/opt/conveyor/env/bin/python", flags=["--result", f"{url}/tasks/scale.result.json"],
    )  # fmt: skip
    variables = {**CREDENTIALS, "AWS_ENDPOINT_URL": s3_server}
    assert set(variables) <= set(store_variables(url))
    logs = client.containers.run(
        step.environment.location,
        command,
        remove=True,
        user="1000:1000",
        network_mode="host",  # to reach the S3 server on the host's loopback
        environment=variables,
        working_dir="/tmp",
    )  # fmt: skip  (no volumes: nothing of this machine is mounted)
    result = json.loads(store.read_document("tasks/scale.result.json") or "{}")
    assert result.get("status") == "succeeded", (result, logs)
    out = ArtifactRef.from_dict(result["outputs"]["output"])
    assert store.exists(out)
    pd.testing.assert_frame_equal(store.load(out), frame.assign(x=frame["x"] * 2.5))
    engine.runner.close()
