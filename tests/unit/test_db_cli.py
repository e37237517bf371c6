"""`conveyor db`, `conveyor models` and `conveyor runs` on the embedded SQLite database."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

from typer.testing import CliRunner

from conveyor.cli import _register, app
from conveyor.db import registry
from conveyor.dsl.artifacts import ArtifactRef, Codec
from tests.conftest import Project


def cli(*args: str) -> str:
    _register()
    result = CliRunner().invoke(app, list(args), terminal_width=200)
    assert result.exit_code == 0, result.output
    return result.output


def register(project: Project, n: int) -> int:
    return registry.register(
        project.settings,
        registry.NewModel(
            name="churn",
            artifact=ArtifactRef(f"{n:064x}", Codec("joblib"), 10),
            location="/store",
            metrics={"auc": 0.5 + n / 10},
        ),
        at=datetime(2024, 1, n, tzinfo=UTC),
    )


def test_db_current_and_upgrade(project: Project) -> None:
    assert "revision: (none: no conveyor tables yet)" in cli("db", "current")
    assert "upgraded from (empty) to revision 0002" in cli("db", "upgrade")
    assert "already at revision 0002" in cli("db", "upgrade")
    assert "revision: 0002 (up to date)" in cli("db", "current")


def test_models_promote_rollback_list_show(project: Project) -> None:
    register(project, 1)
    register(project, 2)
    assert "churn v1 is now in production" in cli("models", "promote", "churn", "1")
    assert "churn v2 is now in production" in cli("models", "promote", "churn", "2")
    assert "v1 is in production again" in cli("models", "rollback", "churn")
    listed = cli("models", "list")
    assert "churn" in listed and "v1" in listed
    shown = cli("models", "show", "churn")
    assert "production" in shown and "archived" in shown and "rollback" in shown
    assert "auc" in cli("models", "show", "churn", "--version", "2")


def test_cli_errors_are_one_line_and_exit_1(project: Project) -> None:
    register(project, 1)
    for args, message in (
        (
            ["models", "promote", "churn", "7"],
            "model 'churn' has no version 7; its versions are v1",
        ),
        (["models", "rollback", "churn"], "has no production version to roll back"),
        (["runs", "show", "nope"], "no run 'nope' is recorded"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "conveyor.cli", *args],
            cwd=project.root, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert message in " ".join(proc.stderr.split())
        assert "Traceback" not in proc.stderr
