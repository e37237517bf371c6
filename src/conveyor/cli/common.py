"""Helpers shared by CLI verbs: the console, settings, parameter parsing, result tables."""

from __future__ import annotations

import os
import sys
from typing import Any, NoReturn, TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from conveyor.engine.settings import Settings

RUNNER_HELP = (
    "Where steps run: venv, docker or inprocess "
    "(default: CONVEYOR_RUNNER or [tool.conveyor] runner, else venv)."
)

# Nearly everything printed holds user text (errors, tracebacks, step, metric and entry names),
# where markup would eat `[price]` or `values[idx]` and emoji codes would turn `a:b:c` into
# `a🅱c`; so these consoles print strings literally, and style comes from `style=` and `Text`.
#
# Piped output (a file, `less`, CI logs) has no terminal width; rich would assume 80 columns and
# cut tables such as `runs list` there, so it gets a wide page unless COLUMNS says otherwise.
PIPED_WIDTH = 200


def _width(stream: TextIO) -> int | None:
    if os.environ.get("COLUMNS") or stream.isatty():
        return None  # rich reads COLUMNS or the terminal itself
    return PIPED_WIDTH


console = Console(
    stderr=False, highlight=False, markup=False, emoji=False, width=_width(sys.stdout)
)
err_console = Console(
    stderr=True, highlight=False, markup=False, emoji=False, width=_width(sys.stderr)
)


def styled(text: str, style: str) -> Text:
    """`text` in `style` (no style if empty), never read as markup."""
    return Text(text, style=style or "")


def fail(message: str, code: int = 1) -> NoReturn:
    """Print an error and exit."""
    err_console.print(Text.assemble(("error:", "bold red"), " ", message), soft_wrap=True)
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
        table.add_row(
            step.name,
            styled(step.status, STATUS_STYLE.get(step.status, "")),
            step.reason,
            str(step.attempts or ""),
            f"{step.duration:.2f}s",
        )
    return table
