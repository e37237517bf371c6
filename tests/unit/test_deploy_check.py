"""`conveyor deploy --check`: validates every deployment entry and prints its next fire times."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, date, datetime

from typer.testing import CliRunner

from conveyor.cli import _register, app
from conveyor.ops.schedule_check import check_entries
from tests.conftest import Project

FLOWS = """
from datetime import date
from conveyor import component, pipeline

@component
def count(day: date) -> int:
    return day.day

@pipeline(partition="day")
def daily(day: date):
    return count(day)
"""

ENTRIES = """
[daily-close]
pipeline = "daily"
cron = "30 18 * * 1-5"
timezone = "America/New_York"

[weekly-review]
pipeline = "daily"
cron = "0 6 * * 6"
timezone = "Europe/Paris"
partition_offset = -1
"""


def test_each_entry_gets_its_next_three_fires_in_its_zone(project: Project) -> None:
    project.write("flows/daily.py", FLOWS)
    project.write("deployments/daily.toml", ENTRIES)
    # Friday 2026-12-04, noon UTC
    checks = check_entries(project.settings, after=datetime(2026, 12, 4, 12, tzinfo=UTC))
    close, review = checks
    assert [f.at.strftime("%a %Y-%m-%d %H:%M %Z") for f in close.fires] == [
        "Fri 2026-12-04 18:30 EST",
        "Mon 2026-12-07 18:30 EST",
        "Tue 2026-12-08 18:30 EST",
    ]
    assert [f.partition for f in close.fires] == [
        date(2026, 12, 4),
        date(2026, 12, 7),
        date(2026, 12, 8),
    ]
    assert [f.at.strftime("%a %H:%M %Z") for f in review.fires] == ["Sat 06:00 CET"] * 3
    # offset -1 on the default business-day calendar: the Friday before each Saturday
    assert [f.partition for f in review.fires] == [
        date(2026, 12, 4),
        date(2026, 12, 11),
        date(2026, 12, 18),
    ]


def test_the_cli_prints_every_entry_and_its_next_runs(project: Project) -> None:
    project.write("flows/daily.py", FLOWS)
    project.write("deployments/daily.toml", ENTRIES)
    _register()
    result = CliRunner().invoke(app, ["deploy", "--check"], terminal_width=200)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("ok daily-close (deployments/daily.toml): daily on '30 18 * * 1-5'")
    assert sum(line.lstrip().startswith("next ") for line in lines) == 6
    assert lines[-1] == "2 deployment entries valid"


def test_an_entry_naming_a_missing_pipeline_fails_the_check(project: Project) -> None:
    project.write("flows/daily.py", FLOWS)
    project.write(
        "deployments/daily.toml", ENTRIES.replace('"daily"\ncron = "0 6', '"dialy"\ncron = "0 6')
    )
    proc = subprocess.run(
        [sys.executable, "-m", "conveyor.cli", "deploy", "--check"],
        cwd=project.root, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "deployments/daily.toml, entry [weekly-review]" in proc.stderr
    assert "dialy" in proc.stderr
    assert "registered" not in proc.stdout


def test_deploy_without_a_pool_or_check_says_which_to_give(project: Project) -> None:
    _register()
    result = CliRunner().invoke(app, ["deploy"], terminal_width=200)
    assert result.exit_code == 1
    assert "--work-pool" in result.output and "--check" in result.output
