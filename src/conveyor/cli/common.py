"""Helpers shared by CLI verbs: the console, settings, parameter parsing, result tables."""

from __future__ import annotations

import sys
from typing import Any, NoReturn

from rich.console import Console
from rich.table import Table

from conveyor.engine.settings import Settings

console = Console(stderr=False, highlight=False)
err_console = Console(stderr=True, highlight=False)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print an error and exit."""
    err_console.print(f"[bold red]error:[/bold red] {message}", markup=True, soft_wrap=True)
    sys.exit(code)


def settings() -> Settings:
    return Settings.load()


def parse_params(pairs: list[str] | None) -> dict[str, Any]:
    """`["a=1", "b=x"]` -> `{"a": "1", "b": "x"}` (the pipeline coerces types)."""
    params: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"--param {pair!r}: write it as NAME=VALUE")
        params[key.strip()] = value
    return params


STATUS_STYLE = {
    "succeeded": "green",
    "cached": "cyan",
    "failed": "bold red",
    "skipped": "yellow",
}


def step_table(result: Any) -> Table:
    """A table of a RunResult's steps."""
    table = Table(title=f"{result.pipeline} · run {result.run_id}", title_justify="left")
    for column in ("step", "status", "why", "attempts", "time"):
        table.add_column(column, justify="right" if column in ("attempts", "time") else "left")
    for step in result.steps.values():
        style = STATUS_STYLE.get(step.status, "")
        table.add_row(
            step.name,
            f"[{style}]{step.status}[/{style}]" if style else step.status,
            step.reason,
            str(step.attempts or ""),
            f"{step.duration:.2f}s",
        )
    return table
