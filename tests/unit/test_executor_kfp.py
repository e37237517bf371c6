"""The executor as a Kubeflow Pipelines task: values from KFP's executor input, outputs listed in
`executor_output.json` where KFP reads them (kfp.local registers nothing that is not listed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conveyor.dsl.artifacts import Codec, read_value, write_value
from conveyor.runners.runtime import runtime_bundle

STEPS = """
from datetime import date
from typing import NamedTuple
from conveyor import Metrics, component

class Fit(NamedTuple):
    table: "pd.DataFrame"
    score: Metrics
    rows: int
    label: str

@component
def fit(frame: "pd.DataFrame", copies: int, when: date, note: str) -> Fit:
    import pandas as pd
    assert isinstance(copies, int), type(copies)
    out = pd.concat([frame] * copies, ignore_index=True)
    return Fit(out, Metrics(r2=0.5, rows=len(out)), len(out), f"{note} {when.isoformat()}")
"""


def _executor_input(root: Path, parameters: dict, artifacts: dict | None = None) -> dict:
    return {
        "inputs": {"parameterValues": parameters, "artifacts": artifacts or {}},
        "outputs": {
            "artifacts": {
                "table": {"artifacts": [{"name": "table", "uri": str(root / "kfp" / "table"),
                                         "type": {"schemaTitle": "system.Dataset"}}]},
                "score": {"artifacts": [{"name": "score", "uri": str(root / "kfp" / "score"),
                                         "type": {"schemaTitle": "system.Metrics"}}]},
            },
            "parameters": {"rows": {"outputFile": str(root / "kfp" / "rows")},
                           "label": {"outputFile": str(root / "kfp" / "label")}},
            "outputFile": str(root / "kfp" / "out" / "executor_output.json"),
        },
    }  # fmt: skip


def _spec(frame_sha: str | None = None) -> dict:
    frame = {"format": "parquet", **({"sha256": frame_sha} if frame_sha else {})}
    return {
        "protocol": 1, "step": "fit", "module": "steps.fit", "qualname": "fit", "packages": [],
        "inputs": {"frame": frame},
        "parameters": {
            "copies": {"kfp_parameter": "NUMBER_INTEGER"},
            "when": {"kfp_parameter": "STRING", "type": "date"},
            "note": {"kfp_parameter": "STRING", "value": "default note"},
        },
        "outputs": {
            "table": {"format": "parquet"},
            "score": {"format": "json", "type": "metrics"},
            "rows": {"format": "json", "kfp_parameter": "NUMBER_INTEGER"},
            "label": {"format": "json", "kfp_parameter": "STRING"},
        },
        "returns": "namedtuple",
    }  # fmt: skip


def _run(project, spec: dict, executor_input: dict, *flags: str) -> subprocess.CompletedProcess:
    bundle = runtime_bundle(project.root / ".runtime")
    return subprocess.run(
        [sys.executable, "-m", "conveyor._runtime.executor", json.dumps(spec),
         "--executor-input", json.dumps(executor_input), "--store", str(project.root / "store"),
         *flags],
        capture_output=True, text=True, cwd=project.root, check=False,
        env={"PYTHONPATH": f"{bundle}:{project.root}", "PATH": "/usr/bin:/bin",
             "CONVEYOR_CACHE": str(project.root / "cache")},
    )  # fmt: skip


def _frame(project):
    import pandas as pd

    frame = pd.DataFrame({"x": [1.0, 2.0]})
    ref = write_value(frame, Codec("parquet"), project.root / "kfp" / "frame")
    return frame, ref


def test_parameters_come_from_the_executor_input_and_outputs_are_listed_for_kfp(project):
    import pandas as pd

    project.write("steps/fit.py", STEPS)
    frame, ref = _frame(project)
    given = _executor_input(
        project.root,
        {"copies": 3.0, "when": "2024-01-02"},  # protobuf: every number a float
        {"frame": {"artifacts": [{"uri": "x", "metadata": {"sha256": ref.sha256}}]}},
    )
    proc = _run(project, _spec(), given, "--input", f"frame={project.root / 'kfp' / 'frame'}",
                "--output", f"table={project.root / 'kfp' / 'table'}",
                "--output", f"score={project.root / 'kfp' / 'score'}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    document = json.loads((project.root / "kfp" / "out" / "executor_output.json").read_text())
    assert document["parameterValues"] == {"rows": 6, "label": "default note 2024-01-02"}
    table = document["artifacts"]["table"]["artifacts"][0]
    assert table["uri"] == str(project.root / "kfp" / "table") and table["name"] == "table"
    assert table["metadata"]["format"] == "parquet"
    written = read_value(project.root / "kfp" / "table", Codec("parquet"),
                         table["metadata"]["sha256"])  # fmt: skip
    pd.testing.assert_frame_equal(written, pd.concat([frame] * 3, ignore_index=True))
    # a Metrics artifact's metadata is the metrics (what KFP's UI shows), nothing else
    assert document["artifacts"]["score"]["artifacts"][0]["metadata"] == {"r2": 0.5, "rows": 6.0}
    # outputs are published to the store under their hash too (the registry finds models there)
    sha = table["metadata"]["sha256"]
    assert (project.root / "store" / sha[:2] / sha).is_file()


def test_an_input_is_verified_against_the_hash_its_producer_recorded(project):
    project.write("steps/fit.py", STEPS)
    _frame(project)
    given = _executor_input(
        project.root, {"copies": 1, "when": "2024-01-02"},
        {"frame": {"artifacts": [{"uri": "x", "metadata": {"sha256": "0" * 64}}]}},
    )  # fmt: skip
    proc = _run(project, _spec(), given, "--input", f"frame={project.root / 'kfp' / 'frame'}",
                "--output", f"table={project.root / 'kfp' / 'table'}",
                "--output", f"score={project.root / 'kfp' / 'score'}")  # fmt: skip
    assert proc.returncode == 1
    assert "does not match its content hash" in proc.stderr
    assert not (project.root / "kfp" / "out" / "executor_output.json").exists()


def test_a_compiled_file_input_refuses_another_file_at_run_time(project):
    project.write("steps/fit.py", STEPS)
    spec = _spec()
    spec["inputs"]["frame"] = {
        "sha256": "a" * 64, "format": "file",
        "compiled_from": {"parameter": "source", "value": "data/a.csv"},
    }  # fmt: skip
    values = {"frame": "data/b.csv", "copies": 1, "when": "2024-01-02"}
    given = _executor_input(project.root, values)
    proc = _run(project, spec, given)
    assert proc.returncode == 2
    assert "pipeline parameter 'source' is 'data/b.csv'" in proc.stderr
    assert "--param source=data/b.csv" in proc.stderr


def test_bad_executor_input_is_a_protocol_error(project):
    project.write("steps/fit.py", STEPS)
    proc = subprocess.run(
        [sys.executable, "-m", "conveyor._runtime.executor", json.dumps(_spec()),
         "--executor-input", "{not json"],
        capture_output=True, text=True, cwd=project.root, check=False,
        env={"PYTHONPATH": f"{runtime_bundle(project.root / '.rt')}:{project.root}",
             "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert proc.returncode == 2
    assert "--executor-input is not JSON" in proc.stderr
