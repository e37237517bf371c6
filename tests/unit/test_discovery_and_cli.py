"""Finding pipelines by name or path, and the CLI verbs over them."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from conveyor.cli import _register, app
from conveyor.errors import DiscoveryError
from conveyor.ops.discovery import discover, resolve_pipeline

STEPS = """
from conveyor import component

@component
def one(n: int) -> int:
    return n

@component
def two(x: int) -> int:
    return x * 2
"""

FLOW = """
from conveyor import pipeline
from steps.small import one, two

@pipeline
def small(n: int = 2):
    return two(one(n))
"""


@pytest.fixture
def flows(project):
    project.write("steps/small.py", STEPS)
    project.write("flows/small.py", FLOW)
    return project


def test_resolve_by_name_and_by_path(flows):
    assert resolve_pipeline("small", flows.settings).name == "small"
    assert resolve_pipeline("flows/small.py:small", flows.settings).name == "small"
    assert resolve_pipeline("flows/small.py", flows.settings).name == "small"


def test_unknown_name_lists_candidates_and_broken_files(flows):
    flows.write("flows/broken.py", "import does_not_exist\n")
    found = discover(flows.settings)
    assert "small" in found.pipelines
    assert "flows/broken.py" in found.errors
    with pytest.raises(DiscoveryError) as info:
        resolve_pipeline("smal", flows.settings)
    message = str(info.value)
    assert "no pipeline named 'smal'" in message and "known pipelines: small" in message
    assert "flows/broken.py: ModuleNotFoundError: No module named 'does_not_exist'" in message


def test_ambiguous_name(flows):
    flows.write("flows/copy.py", FLOW)
    expected = "'small' is ambiguous: defined in flows/copy.py, flows/small.py"
    with pytest.raises(DiscoveryError, match=re.escape(expected)):
        resolve_pipeline("small", flows.settings)


def test_path_with_unknown_attribute(flows):
    with pytest.raises(DiscoveryError, match="has no pipeline 'big'; it defines small"):
        resolve_pipeline("flows/small.py:big", flows.settings)


def _cli(*args: str):
    _register()
    return CliRunner().invoke(app, list(args))


def test_cli_dag_text_and_mermaid(flows):
    result = _cli("dag", "small")
    assert result.exit_code == 0, result.output
    assert "pipeline small: 2 steps" in result.output
    assert "two  step  (x=one)" in result.output
    mermaid = _cli("dag", "small", "--mermaid")
    assert "n_one -->|x| n_two" in mermaid.output


def test_cli_run_twice_reports_cache(flows):
    first = _cli("run", "small", "--runner", "inprocess", "-p", "n=4")
    assert first.exit_code == 0, first.output
    assert "succeeded" in first.output
    second = _cli("run", "small", "--runner", "inprocess", "-p", "n=4")
    assert "2 cached" in second.output


def test_cli_errors_exit_nonzero_with_the_message(flows):
    proc = subprocess.run(
        [sys.executable, "-m", "conveyor.cli", "run", "nope"],
        capture_output=True, text=True, cwd=flows.root, check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "error: no pipeline named 'nope'" in proc.stderr + proc.stdout
    bad_param = subprocess.run(
        [sys.executable, "-m", "conveyor.cli", "run", "small", "-p", "n=lots",
         "--runner", "inprocess"],
        capture_output=True, text=True, cwd=flows.root, check=False,
    )  # fmt: skip
    assert bad_param.returncode == 1
    assert "parameter 'n' expects int, got 'lots'" in bad_param.stderr + bad_param.stdout


def test_backfill_dates_that_look_right_but_are_not_say_why(project):
    bad_day = _cli("backfill", "anything", "--start", "2011-02-30", "--end", "2011-03-01")
    assert bad_day.exit_code == 1
    assert "--start '2011-02-30' is not a date of the calendar: day is out of range for month" in (
        bad_day.output
    )
    shape = _cli("backfill", "anything", "--start", "yesterday", "--end", "2011-03-01")
    assert "--start 'yesterday' is not a date; write it as YYYY-MM-DD" in shape.output


def test_cli_compile_refuses_an_unknown_target_before_touching_anything(flows):
    proc = subprocess.run(
        [sys.executable, "-m", "conveyor.cli", "compile", "small", "--target", "argo"],
        capture_output=True, text=True, cwd=flows.root, check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "error: unknown target 'argo'; choose one of kfp" in proc.stderr + proc.stdout
    assert not (flows.root / "deployments").exists()
