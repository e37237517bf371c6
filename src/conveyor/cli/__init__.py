"""The `conveyor` command line (Typer). Each verb group lives in its own module."""

from __future__ import annotations

import importlib
import logging
import sys

import typer

from conveyor.cli.common import console, fail
from conveyor.errors import ConveyorError

APP_HELP = """ML pipelines of plain Python functions, each step in its own environment.

A project is the nearest folder upward with a pyproject.toml holding [tool.conveyor], else the
working directory.
"""

# rich_markup_mode=None: Typer's other modes read every help text and docstring as rich markup
# (or Markdown), which drops `[tool.conveyor]`; None prints them through Click, literally. The
# mode of this root app applies to the sub-groups (envs, db, ...) too.
app = typer.Typer(
    name="conveyor",
    help=APP_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

# Verb modules register their commands on `app` when imported.
_COMMAND_MODULES = (
    "project",
    "pipelines",
    "envs",
    "images",
    "database",
    "schedules",
    "replay",
    "compile",
    "artifacts",
)


def _register() -> None:
    for name in _COMMAND_MODULES:
        importlib.import_module(f"conveyor.cli.{name}")


@app.callback()
def _main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show debug logging."),
) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    from rich.logging import RichHandler

    handler = RichHandler(console=console, show_path=False, markup=False, rich_tracebacks=False)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("conveyor")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    if console.is_terminal:  # live spinners for every wait; a pipe or a log file gets none
        from conveyor.cli.waits import LiveWaits
        from conveyor.engine.progress import show_waits_on

        show_waits_on(LiveWaits(console))


def main() -> None:
    """Console-script entry point: run the app; ConveyorErrors print cleanly and exit 1."""
    _register()
    try:
        app()
    except ConveyorError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        console.print("interrupted", style="red")
        sys.exit(130)
