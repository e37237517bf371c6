"""`conveyor demo`: run the example pipeline, then again to show the cache."""

from __future__ import annotations

from conveyor.cli.common import console, step_table
from conveyor.launch import run
from conveyor.settings import Settings


def demo(settings: Settings, runner: str = "venv") -> int:
    """Run `example` twice (the second run is served from the cache) and once more with new data."""
    for title, params in (
        ("first run: builds each environment once, runs every step", {}),
        ("same parameters: every step is cached", {}),
        ("new seed: only the steps downstream of the change run", {"seed": 1}),
    ):
        console.rule(title)
        result = run("example", params, runner=runner, settings=settings)
        console.print(step_table(result))
        if not result.ok:
            console.print(f"[red]{result.error}[/red]")
            return 1
        console.print(f"output: {result.output}")
    return 0
