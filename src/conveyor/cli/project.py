"""`conveyor init`."""

from __future__ import annotations

from pathlib import Path

import typer

from conveyor.cli import app
from conveyor.cli.common import console


@app.command()
def init(
    path: Path = typer.Argument(Path(), help="Folder of the new project (created if needed)."),
) -> None:
    """Start a project: a pipeline, its steps, a schedule, a test and a docker-compose stack."""
    from conveyor.ops.scaffold import scaffold

    written = scaffold(path)
    root = path.resolve()
    for file in written:
        console.print(f"  wrote {file.relative_to(root)}")
    where = "" if root == Path.cwd() else f"cd {path} && "
    console.print(f"project ready in {root}; try:")
    console.print(f"  {where}conveyor run sensors -p day=2026-01-05 && conveyor runs show")
    console.print("  pytest                       # tests/test_sensors.py")
    console.print("  conveyor deploy --check      # the schedule in deployments/sensors.toml")
