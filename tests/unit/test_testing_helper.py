"""conveyor.testing: a pipeline run on a private database and store, read back in a test."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from conveyor.testing import isolated_settings, run_isolated
from tests.conftest import Project

FLOW = """
from datetime import date

from conveyor import component, pipeline, write_table


@component
def rows(day: date, n: int) -> "pd.DataFrame":
    import pandas as pd

    return pd.DataFrame({"day": [day] * n, "i": list(range(n))})


@pipeline(partition="day")
def daily(day: date, n: int = 3):
    frame = rows(day, n)
    write_table(frame, "daily_rows", partition=day)
    return frame
"""


def test_a_run_and_its_tables_stay_under_its_home(project: Project, tmp_path: Path) -> None:
    project.write("flows/daily.py", FLOW)
    (project.root / ".conveyor" / "locks").mkdir(parents=True)
    (project.root / ".conveyor" / "locks" / "abc.txt").write_text("six==1.16.0\n")
    home = tmp_path / "isolated"
    run = run_isolated("daily", {"day": date(2026, 1, 5), "n": 4}, home=home)
    assert run.ok, run.error
    assert run.steps["rows"].status == "succeeded"
    assert run.table("daily_rows")["i"].tolist() == [0, 1, 2, 3]
    assert len(run.output) == 4
    assert run.settings.home == (home / "conveyor-home").resolve()
    assert (home / "conveyor-home" / "conveyor.db").is_file()
    # the project's own state holds no database, artifacts or runs: only its locks
    assert sorted(p.name for p in (project.root / ".conveyor").iterdir()) == ["locks"]
    assert (home / "conveyor-home" / "locks" / "abc.txt").read_text() == "six==1.16.0\n"

    again = run_isolated("daily", {"day": date(2026, 1, 5), "n": 4}, home=home)
    assert again.steps["rows"].status == "cached"
    fresh = run_isolated("daily", {"day": date(2026, 1, 5), "n": 4}, home=tmp_path / "other")
    assert fresh.steps["rows"].status == "succeeded"  # another home shares nothing


def test_isolated_settings_ignore_the_environment_database(
    project: Project, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("CONVEYOR_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    monkeypatch.setenv("CONVEYOR_ARTIFACTS", "s3://nowhere/conveyor")
    settings = isolated_settings(tmp_path)
    assert (
        settings.database_url == f"sqlite:///{tmp_path.resolve() / 'conveyor-home' / 'conveyor.db'}"
    )
    assert settings.artifact_store == str(tmp_path.resolve() / "conveyor-home" / "artifacts")
    assert settings.project_root == project.root.resolve()
