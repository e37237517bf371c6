"""The README's commands and examples are real: CI runs its test command, its example runs."""

from __future__ import annotations

import re
from pathlib import Path

import conveyor

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


def test_readme_opens_with_the_demo_and_the_test_command():
    first, second = _blocks("bash")[:2]
    assert "conveyor demo" in first
    assert "pytest" in second
    ci = (ROOT / ".ci" / "run").read_text()
    assert second.strip() in ci, "the README's test command must be what .ci/run runs"


def test_readme_example_pipeline_runs(project):
    (example,) = _blocks("python")
    project.write("flows/example.py", example)
    result = conveyor.run("example", {"rows": 200}, runner="inprocess", hooks=[])
    assert result.ok, result.error
    assert abs(result.output["x1"] - 3) < 1e-9 and abs(result.output["x2"] + 2) < 1e-9
    again = conveyor.run("example", {"rows": 200}, runner="inprocess", hooks=[])
    assert [s.status for s in again.steps.values()] == ["cached", "cached"]


def test_runs_show_prints_the_readme_example_output_value(project):
    from typer.testing import CliRunner

    from conveyor.cli import _register, app

    (example,) = _blocks("python")
    project.write("flows/example.py", example)
    _register()
    ran = CliRunner().invoke(app, ["run", "example", "-p", "rows=200", "--runner", "inprocess"])
    assert ran.exit_code == 0, ran.output
    result = conveyor.run("example", {"rows": 200}, runner="inprocess", hooks=[])
    x1 = result.output["x1"]
    shown = CliRunner().invoke(app, ["runs", "show"], terminal_width=240)
    assert shown.exit_code == 0, shown.output
    # the value itself, at full precision, in the outputs column and in the metrics line
    assert f"metrics of fit: x1={x1!r}, x2={result.output['x2']!r}" in shown.output
    assert f"x1={x1!r}" in shown.output.split("metrics of fit")[0]
    assert f"returned fit: x1={x1!r}" in ran.output
