"""Host steps as Kubeflow Pipelines tasks: a compiled host task, its placeholders filled the way a
KFP launcher fills them, runs `conveyor.ops.host_task` against a real (SQLite) database and
writes its outputs and `executor_output.json` where KFP reads them."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from conveyor.backends.kfp.check import documents
from conveyor.dsl.artifacts import Codec, read_value, write_value
from conveyor.ops import host_task
from conveyor.ops.compile import compile as compile_pipeline
from tests.kfp_support import FakeImages, as_bootstrapped, render_task

pytest.importorskip("kfp")
pytest.importorskip("sqlalchemy")

STEPS = """
from datetime import date

import pandas as pd

from conveyor import component

@component
def make(day: date) -> pd.DataFrame:
    return pd.DataFrame({"date": [day], "x": [1.5]})

@component
def train(rows: int) -> object:
    return {"weights": [rows]}

@component
def use(model: object) -> int:
    return len(model["weights"])
"""

FLOW = """
from datetime import date
from conveyor import (HostContext, after, host_step, load_model, load_table, pipeline,
                      register_model, write_table)
from steps.ops import make, train, use

@host_step
def shout(ctx: HostContext, rows: int) -> dict:
    return {"rows": rows, "partition": str(ctx.partition[0]), "run": ctx.run_id}

@pipeline(partition="day")
def tables(day: date, rows: int = 3):
    written = write_table(make(day), "things", partition=day, partition_col="date")
    with after(written):
        back = load_table("things", start=day, end=day)
    shout(written)
    version = register_model("m", train(rows))
    with after(version):
        use(load_model("m", version=1))
"""


@pytest.fixture
def compiled(project, monkeypatch, tmp_path):
    """The `tables` pipeline compiled (fake images), with a SQLite database."""
    monkeypatch.setenv("CONVEYOR_DATABASE_URL", f"sqlite:///{tmp_path / 'db.sqlite'}")
    monkeypatch.setenv("CONVEYOR_CACHE", str(tmp_path / "cache"))
    project.write("steps/ops.py", STEPS)
    project.write("flows/tables.py", FLOW)
    out = tmp_path / "tables.yaml"
    compile_pipeline("tables", output=out, settings=project.settings, images=FakeImages())
    spec, _ = documents(out.read_text())
    return spec


RUN = {"pipeline_day": "2024-01-02", "pipeline_rows": 3.0}  # every host task gets the run's


def _run(args: list[str]) -> int:
    return host_task.main(as_bootstrapped(args))


def test_write_table_then_load_table_through_the_database(compiled, tmp_path):
    from conveyor import read_table

    frame = pd.DataFrame({"date": [pd.Timestamp("2024-01-02").date()], "x": [1.5]})
    rows = write_value(frame, Codec("parquet"), tmp_path / "in" / "df")
    args, given, _ = render_task(
        compiled, "write-table", tmp_path,
        {**RUN, "partition_start": "2024-01-02", "partition_end": "2024-01-02"},
        {"df": tmp_path / "in" / "df"},
    )  # fmt: skip
    # the producer's hash, as its executor output recorded it: the host task verifies it
    args = [a.replace('"metadata": {}', f'"metadata": {{"sha256": "{rows.sha256}"}}') for a in args]
    assert _run(args) == 0
    output = json.loads(Path(given["outputs"]["outputFile"]).read_text())
    assert output == {"parameterValues": {"output": 1}}  # rows written, a KFP parameter
    assert len(read_table("things")) == 1

    args, given, paths = render_task(
        compiled, "load-table", tmp_path, {**RUN, "start": "2024-01-02", "end": "2024-01-02"}
    )
    assert _run(args) == 0
    output = json.loads(Path(given["outputs"]["outputFile"]).read_text())
    metadata = output["artifacts"]["output"]["artifacts"][0]["metadata"]
    back = read_value(paths["output"], Codec("parquet"), metadata["sha256"])
    assert back["x"].tolist() == [1.5]


def test_a_host_step_sees_the_run_partition_and_kfp_run_id(compiled, tmp_path):
    args, given, _ = render_task(compiled, "shout", tmp_path, {**RUN, "rows": 7.0},
                                 run_id="kfp-run-42")  # fmt: skip
    assert _run(args) == 0  # its code came from its bundle in the store
    output = json.loads(Path(given["outputs"]["outputFile"]).read_text())
    assert output["parameterValues"]["output"] == {
        "rows": 7, "partition": "2024-01-02", "run": "kfp-run-42",
    }  # fmt: skip


def _register(compiled, tmp_path) -> None:
    model = write_value({"weights": [3]}, Codec("joblib"), tmp_path / "in" / "model")
    args, _, _ = render_task(compiled, "register-model", tmp_path, RUN,
                             {"model": tmp_path / "in" / "model"})  # fmt: skip
    assert _run(args) == 0
    from conveyor.db import registry

    record = registry.resolve(_settings(), "m", version=1)
    assert record.artifact.sha256 == model.sha256
    # lineage from the compiled spec: the environment that built the model
    assert record.pins == FakeImages().component("", _train_spec(), ()).pins


def _settings():
    from conveyor.engine.settings import Settings

    return Settings.load()


def _train_spec():
    import sys

    return sys.modules["steps.ops"].train.spec


def test_a_loaded_model_must_fit_the_images_compiled_for_its_consumers(compiled, tmp_path, capsys):
    _register(compiled, tmp_path)
    args, given, paths = render_task(compiled, "load-model", tmp_path, RUN)
    # compiled without a database holding the model: `use` holds only what it declares
    assert _run(args) == 1
    assert "model 'm' v1 was built with fake==" in capsys.readouterr().err
    assert not Path(given["outputs"]["outputFile"]).exists()

    pins = FakeImages().component("", _train_spec(), ()).pins
    inline = json.loads(args[2])
    inline["model_pins"] = list(pins)  # as a compile with the model registered writes it
    args[2] = json.dumps(inline)
    assert _run(args) == 0
    output = json.loads(Path(given["outputs"]["outputFile"]).read_text())
    assert output["artifacts"]["output"]["artifacts"][0]["metadata"]["format"] == "joblib"
    assert read_value(paths["output"], Codec("joblib")) == {"weights": [3]}


def test_a_host_task_without_executor_input_is_a_protocol_error(compiled, tmp_path, capsys):
    args, _, _ = render_task(compiled, "shout", tmp_path, RUN)
    at = args.index("--executor-input")
    del args[at : at + 2]
    assert _run(args) == 2
    assert "needs --executor-input" in capsys.readouterr().err
