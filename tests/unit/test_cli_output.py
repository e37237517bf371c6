"""Square brackets in what the CLI prints (errors, tracebacks, entry names, help) survive."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import pytest
import typer
from typer.core import TyperGroup
from typer.testing import CliRunner

from conveyor.cli import _register, app
from conveyor.cli.common import console, err_console, fail
from conveyor.db import lineage
from tests.conftest import Project

STEPS = """
from conveyor import component

@component
def check(n: int) -> int:
    raise ValueError("column [price] missing")

@component
def pick(n: int) -> int:
    values = [1]
    idx = 5
    return values[idx]
"""

FLOWS = """
from conveyor import pipeline
from steps.broken import check, pick

@pipeline
def priced(n: int = 1):
    return check(n)

@pipeline
def indexed(n: int = 1):
    return pick(n)
"""

BRACKETED = re.compile(r"\[[^\[\]\n]+\]")


def _cli(*args: str):
    _register()
    return CliRunner().invoke(app, list(args), terminal_width=200)


def _flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture
def broken(project: Project) -> Project:
    project.write("steps/broken.py", STEPS)
    project.write("flows/broken.py", FLOWS)
    return project


def test_a_step_error_keeps_its_brackets_in_run_and_runs_show(broken: Project) -> None:
    result = _cli("run", "priced", "--runner", "inprocess")
    assert result.exit_code == 1, result.output
    assert "error: step 'check' failed: ValueError: column [price] missing" in result.output
    assert 'raise ValueError("column [price] missing")' in result.output

    (recorded,) = lineage.list_runs(broken.settings, pipeline="priced", limit=1)
    shown = _cli("runs", "show", recorded.run_id)
    assert shown.exit_code == 0, shown.output
    assert "check: step 'check' failed: ValueError: column [price] missing" in shown.output


def test_a_traceback_line_keeps_its_subscript(broken: Project) -> None:
    result = _cli("run", "indexed", "--runner", "inprocess")
    assert result.exit_code == 1, result.output
    assert "return values[idx]" in result.output
    assert "IndexError: list index out of range" in result.output


def test_an_invalid_deployment_entry_is_named_with_its_brackets(project: Project) -> None:
    project.write(
        "deployments/daily.toml",
        """
        [features-daily]
        pipeline = "features"
        cron = "every day at noon"
        """,
    )
    # a subprocess: `main()` is what turns a ConveyorError into the printed error
    proc = subprocess.run(
        [sys.executable, "-m", "conveyor.cli", "serve"],
        cwd=project.root, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    printed = _flat(proc.stderr)
    assert "error: deployments/daily.toml, entry [features-daily]: cron" in printed
    assert "Traceback" not in proc.stderr


def test_the_shared_consoles_print_user_text_literally() -> None:
    text = "column [price] missing; [bold]x[/bold] at flows/a.py:b:c"
    for shared in (console, err_console):
        with shared.capture() as captured:
            shared.print(text)
        assert captured.get().strip() == text


def test_fail_prints_brackets_literally(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        fail("column [price] missing in [red]table[/red]")
    assert exited.value.code == 1
    assert capsys.readouterr().err.strip() == "error: column [price] missing in [red]table[/red]"


def _help_pages() -> list[tuple[list[str], Any]]:
    """Every command and group of the app (Typer's own Click commands) with its argv path."""
    _register()
    pages: list[tuple[list[str], Any]] = []

    def walk(path: list[str], command: Any) -> None:
        pages.append((path, command))
        if isinstance(command, TyperGroup):
            for name, sub in command.commands.items():
                walk([*path, name], sub)

    walk([], typer.main.get_command(app))
    return pages


def _source_texts(command: Any) -> list[str]:
    texts = [command.help or ""]
    texts += [getattr(param, "help", None) or "" for param in command.params]
    return texts


def test_every_help_page_keeps_the_brackets_of_its_source() -> None:
    pages = _help_pages()
    names = {" ".join(path) for path, _ in pages}
    assert {"", "run", "demo", "serve", "envs", "envs list", "db", "models", "runs"} <= names
    checked = 0
    for path, command in pages:
        result = _cli(*path, "--help")
        assert result.exit_code == 0, (path, result.output)
        rendered = _flat(result.output)
        for text in _source_texts(command):
            for bracketed in BRACKETED.findall(_flat(text)):
                assert bracketed in rendered, (path, bracketed, result.output)
                checked += 1
    assert checked >= 2  # at least the app's and demo's [tool.conveyor]


def test_the_app_and_demo_help_name_tool_conveyor() -> None:
    assert "[tool.conveyor]" in _flat(_cli("--help").output)
    demo = _flat(_cli("demo", "--help").output)
    assert 'declared as `demo = "module:function"` under [tool.conveyor]' in demo
