"""MkDocs hook: the CLI reference page (cli.md), rendered from the Typer app at build time.

Each command's text is exactly what `conveyor ... --help` prints (Click's plain formatter at a
fixed width), so the page cannot drift from the code; tests/unit/test_docs.py checks that.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

WIDTH = 80  # fits the page's code column without scrolling
PAGE = "cli.md"
INTRO = """# Command line

Every command of `conveyor`, as `conveyor COMMAND --help` prints it. This page is generated from
the command-line app when the site is built.
"""


def commands() -> Iterator[tuple[str, Any, Any]]:
    """(full name, click command, click context) for the app and every command under it."""
    import typer

    from conveyor.cli import _register, app

    _register()
    root = typer.main.get_command(app)

    # Typer carries its own copy of Click (typer._click): use the classes the command brings
    def walk(command: Any, name: str, parent: Any) -> Iterator[tuple[str, Any, Any]]:
        ctx = command.context_class(command, info_name=name.split()[-1], parent=parent,
                            terminal_width=WIDTH, max_content_width=WIDTH)  # fmt: skip
        yield name, command, ctx
        if hasattr(command, "list_commands"):
            for sub in command.list_commands(ctx):
                child = command.get_command(ctx, sub)
                if child is not None and not child.hidden:
                    yield from walk(child, f"{name} {sub}", ctx)

    yield from walk(root, "conveyor", None)


def help_text(command: Any, ctx: Any) -> str:
    """What `--help` prints for `command`."""
    return str(command.get_help(ctx)).rstrip()


def render() -> str:
    """The whole page as Markdown."""
    parts = [INTRO]
    for name, command, ctx in commands():
        level = "##" if name.count(" ") <= 1 else "###"
        parts.append(f"{level} `{name}`\n\n```text\n{help_text(command, ctx)}\n```\n")
    return "\n".join(parts)


def on_files(files: Any, config: Any) -> Any:
    """Add the generated page to the site."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, PAGE, content=render()))
    return files
