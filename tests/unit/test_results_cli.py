"""Results from the CLI: `runs show` prints small outputs inline, `artifacts show` any output."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from conveyor.cli import _register, app
from conveyor.db import lineage
from tests.conftest import Project

FLOW = """
from typing import NamedTuple

from conveyor import Metrics, component, pipeline


class Split(NamedTuple):
    train: "pd.DataFrame"
    sizes: dict


@component
def temperatures(days: int) -> "pd.DataFrame":
    import pandas as pd

    return pd.DataFrame({"day": list(range(days)), "temp": [157.209366 + d for d in range(days)]})


@component
def split(frame: "pd.DataFrame") -> Split:
    return Split(frame.iloc[:-1], {"train": len(frame) - 1, "test": 1})


@component
def score(frame: "pd.DataFrame") -> Metrics:
    return Metrics(temp=float(frame["temp"].iloc[0]))


@pipeline
def weather(days: int = 8):
    frame = temperatures(days)
    parts = split(frame)
    return score(parts.train), parts.sizes
"""


def _cli(*args: str):
    _register()
    return CliRunner().invoke(app, list(args), terminal_width=240)


@pytest.fixture
def weather(project: Project) -> str:
    project.write("flows/weather.py", FLOW)
    ran = _cli("run", "weather", "--runner", "inprocess")
    assert ran.exit_code == 0, ran.output
    assert "returned [0]: temp=157.209366" in ran.output
    assert 'returned [1]: {"train": 7, "test": 1}' in ran.output
    (run,) = lineage.list_runs(project.settings, pipeline="weather")
    return run.run_id


def test_runs_show_prints_small_values_frames_and_full_precision_metrics(weather: str) -> None:
    shown = _cli("runs", "show")  # no id: the latest run
    assert shown.exit_code == 0, shown.output
    out = shown.output
    assert f"run {weather}" in out
    assert "DataFrame 8 rows × 2 columns" in out
    assert "sizes" in out and '{"train": 7, "test": 1}' in out
    assert "metrics of score: temp=157.209366" in out
    assert "temperatures: DataFrame 8 rows × 2 columns (the first 3)" in out
    assert "158.209366" in out and "160.209366" not in out  # three rows of the head
    assert "split.train: DataFrame 7 rows × 2 columns" in out

    quiet = _cli("runs", "show", weather[:12], "--head", "0")
    assert "temperatures: DataFrame" not in quiet.output
    assert "DataFrame 8 rows × 2 columns" in quiet.output  # the summary stays


def test_artifacts_show_prints_and_exports_by_step_or_hash(
    weather: str, project: Project, tmp_path
) -> None:
    shown = _cli("artifacts", "show", f"{weather}:split.sizes")
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output.split("\n", 1)[1]) == {"train": 7, "test": 1}

    frame = _cli("artifacts", "show", f"{weather}:temperatures", "--rows", "2")
    assert "DataFrame 8 rows × 2 columns (the first 2)" in frame.output

    exported = tmp_path / "out" / "temperatures.parquet"
    wrote = _cli("artifacts", "show", f"{weather}:temperatures", "--to", str(exported))
    assert wrote.exit_code == 0, wrote.output
    expected = pd.DataFrame({"day": range(8), "temp": [157.209366 + d for d in range(8)]})
    pd.testing.assert_frame_equal(pd.read_parquet(exported), expected, check_dtype=False)
    as_csv = tmp_path / "temperatures.csv"
    assert _cli("artifacts", "show", f"{weather}:temperatures", "--to", str(as_csv)).exit_code == 0
    pd.testing.assert_frame_equal(pd.read_csv(as_csv), expected, check_dtype=False)

    (step,) = [s for s in lineage.run_lineage(project.settings, weather).steps if s.step == "score"]
    digest = step.outputs["output"]["sha256"]
    by_hash = _cli("artifacts", "show", digest[:10])
    assert by_hash.exit_code == 0, by_hash.output
    assert f"score of run {weather}" in by_hash.output
    assert "temp=157.209366" in by_hash.output


def test_artifacts_show_names_what_is_wrong(weather: str, tmp_path) -> None:
    # CliRunner bypasses main(), which prints a ConveyorError: read the exception instead
    no_step = _cli("artifacts", "show", f"{weather}:nope")
    assert "has no step 'nope'; its steps: ['score', 'split', 'temperatures']" in str(
        no_step.exception
    )
    no_output = _cli("artifacts", "show", f"{weather}:split.test")
    assert "has no output 'test'; outputs: ['sizes', 'train']" in str(no_output.exception)
    bad_suffix = _cli("artifacts", "show", f"{weather}:score", "--to", str(tmp_path / "x.csv"))
    assert "cannot export a json artifact to x.csv: use a name ending in .json" in str(
        bad_suffix.exception
    )
    assert not (tmp_path / "x.csv").exists()
    unknown = _cli("artifacts", "show", "abcdef123")
    assert "no recorded step output has a content hash starting 'abcdef123'" in unknown.output
    neither = _cli("artifacts", "show", "latest")
    assert "RUN:STEP[.OUTPUT]" in neither.output


def test_piped_runs_list_is_not_cut_at_80_columns(weather: str, project: Project) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    proc = subprocess.run(
        [sys.executable, "-m", "conveyor.cli", "runs", "list"],
        cwd=project.root, env=env, capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    [row] = [line for line in proc.stdout.splitlines() if weather in line]
    assert "weather" in row and "succeeded" in row and "…" not in row
    assert max(len(line) for line in proc.stdout.splitlines()) > 80
