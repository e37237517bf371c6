"""`conveyor images list | build | prune`: the docker runner's step images."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import typer
from rich.table import Table

from conveyor.cli import app
from conveyor.cli.common import console, settings
from conveyor.engine.settings import Settings

images_app = typer.Typer(
    help="Step images of the docker runner (one per environment).", no_args_is_help=True
)
app.add_typer(images_app, name="images")


def _pipelines(config: Settings, names: list[str] | None) -> list[Any]:
    from conveyor.ops.discovery import discover, resolve_pipeline

    if names:
        return [resolve_pipeline(n, config) for n in names]
    return [p for found in discover(config).pipelines.values() for p, _ in found]


def _components(pipelines: list[Any]) -> list[tuple[str, Any]]:
    return [
        (step.name, step.component.spec)
        for pipeline in pipelines
        for step in pipeline.steps
        if step.component is not None and step.component.spec is not None
    ]


def project_image_keys(config: Settings, runner: Any) -> set[str]:
    """Keys of the images this project's pipelines use, from their existing locks."""
    keys = set()
    for _, component in _components(_pipelines(config, None)):
        spec = runner.environment_spec(component)
        lock = runner.locker.existing(spec)
        if lock is not None:
            keys.add(runner.builder.key(runner.builder.base(spec.image), lock))
    return keys


def _age(created: str) -> str:
    try:
        when = datetime.fromisoformat(created[:26].rstrip("Z") + "+00:00")
    except ValueError:
        return created
    hours = (datetime.now(when.tzinfo) - when).total_seconds() / 3600
    return f"{hours / 24:.1f} days ago" if hours > 24 else f"{hours:.1f} h ago"


@images_app.command("list")
def list_images_command() -> None:
    """Step images on the Docker engine, their packages, size and age."""
    from conveyor.runners.docker import DockerRunner
    from conveyor.runners.images import list_images

    config = settings()
    runner = DockerRunner(config)
    used = project_image_keys(config, runner)
    table = Table(title="conveyor step images", title_justify="left")
    for column in ("key", "python", "base", "requirements", "size", "built", "this project"):
        table.add_column(column)
    for image in list_images(runner.builder.client):
        table.add_row(
            image["key"],
            image["python"],
            image["base"],
            ", ".join(image["requirements"]) or "(none)",
            f"{image['size'] / 1e6:.0f} MB",
            _age(image["created"]),
            "yes" if image["key"] in used else "",
        )
    console.print(table)


@images_app.command("build")
def build(
    names: list[str] = typer.Argument(None, help="Pipelines to build for (default: all)."),
) -> None:
    """Build (or find) the image of every step of the given pipelines, ahead of a run."""
    from conveyor.runners.docker import DockerRunner

    config = settings()
    runner = DockerRunner(config)
    needs: dict[Any, list[str]] = {}
    for step, component in _components(_pipelines(config, names)):
        needs.setdefault(runner.environment_spec(component), []).append(step)
    for spec, env in runner.prepare(needs).items():
        verb = f"built in {env.build_seconds:.1f}s" if env.built else "exists"
        steps = needs[spec]
        who = ("step " if len(steps) == 1 else "steps ") + ", ".join(steps)
        console.print(f"{env.location} {verb}: {spec.describe()} ({who})")
    console.print(f"{runner.builder.builds} image(s) built, {len(needs)} needed")


@images_app.command("prune")
def prune(
    all_images: bool = typer.Option(False, "--all", help="Also remove this project's images."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only print what would go."),
) -> None:
    """Remove step images this project's pipelines no longer use (and stopped leftovers)."""
    from conveyor.runners.docker import DockerRunner
    from conveyor.runners.images import prune_images

    config = settings()
    runner = DockerRunner(config)
    client = runner.builder.client  # first use removes containers of dead orchestrators
    used = set() if all_images else project_image_keys(config, runner)
    removed = 0
    for what, refused in prune_images(client, keep=used, dry_run=dry_run):
        if refused:
            console.print(f"kept {what}: {refused}")
            continue
        removed += 1
        console.print(f"{'would remove' if dry_run else 'removed'} {what}")
    console.print(f"{removed} image(s) {'to remove' if dry_run else 'removed'}")
