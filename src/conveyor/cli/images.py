"""`conveyor images list | build | push | prune`: the docker runner's step images."""

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
    """Keys of the images this project's pipelines use, from their existing locks (with the
    host image compiled Kubeflow pipelines run their host steps in)."""
    pipelines = _pipelines(config, None)
    specs = [runner.environment_spec(component) for _, component in _components(pipelines)]
    if any(step.host is not None for pipeline in pipelines for step in pipeline.steps):
        from conveyor.ops.compile import host_environment

        specs.append(host_environment(runner, config.artifact_store))
    keys = set()
    for spec in specs:
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
        copies = image["copies"]
        table.add_row(
            image["key"] + (f" (+{copies} untagged)" if copies else ""),
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
        console.print(
            f"{env.location} {_origin(runner, env)}: {spec.describe()} ({_who(needs[spec])})"
        )
    console.print(f"{runner.builder.builds} image(s) built, {len(needs)} needed")


def _who(steps: list[str]) -> str:
    return ("step " if len(steps) == 1 else "steps ") + ", ".join(steps)


def _origin(runner: Any, env: Any) -> str:
    if env.built:
        return f"built in {env.build_seconds:.1f}s"
    if env.key in runner.builder.pulled:
        return f"pulled in {env.build_seconds:.1f}s"
    return "exists"


@images_app.command("push")
def push(
    names: list[str] = typer.Argument(None, help="Pipelines whose images to push (default: all)."),
    registry: str = typer.Option(
        None,
        "--registry",
        help="HOST[:PORT]/prefix to push to (default: CONVEYOR_REGISTRY or [tool.conveyor] "
        "registry).",
    ),
    param: list[str] = typer.Option(
        None,
        "--param",
        "-p",
        help="Pipeline parameter NAME=VALUE: which models load_model steps resolve to, as "
        "`conveyor compile` resolves them.",
    ),
) -> None:
    """Build if needed, push each step image to a registry, record its digest in the store.

    Another machine sharing the artifact store then pulls the image by digest instead of
    building it, and `conveyor compile` names it in a Kubeflow spec: so the images pushed are
    those of a compiled run, including the host image (conveyor's dependencies with its db
    extra) of pipelines with host steps, and steps fed a model get its environment's pins.
    """
    from conveyor.cli.common import parse_params
    from conveyor.ops.compile import remote_environments
    from conveyor.runners.docker import DockerRunner
    from conveyor.runners.images import resolve_registry

    config = settings()
    target = resolve_registry(registry, config)  # before any build: a missing one fails fast
    runner = DockerRunner(config)
    needs = remote_environments(config, runner, _pipelines(config, names), parse_params(param))
    uploaded = 0
    for spec, env in runner.prepare(needs).items():
        pushed = runner.builder.push(env.key, target)
        uploaded += pushed.pushed
        state = f"pushed in {pushed.seconds:.1f}s" if pushed.pushed else "already in the registry"
        console.print(  # unwrapped: a digest reference is copied, never read across lines
            f"{pushed.reference} ({_origin(runner, env)}, {state}): {spec.describe()} "
            f"({_who(needs[spec])})",
            soft_wrap=True,
        )
    console.print(
        f"{len(needs)} image(s) in {target}: {runner.builder.builds} built, {uploaded} pushed; "
        f"recorded in {runner.builder.store.url if runner.builder.store else 'no store'}/images/"
    )


@images_app.command("prune")
def prune(
    all_images: bool = typer.Option(False, "--all", help="Also remove this project's images."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only print what would go."),
) -> None:
    """Remove step images this project's pipelines no longer use, and install stages left by
    interrupted builds (only those over an hour old whose build lock is free: younger ones may
    belong to a build in progress, of this project or another on the same engine)."""
    from conveyor.runners.docker import DockerRunner
    from conveyor.runners.images import prune_images

    config = settings()
    runner = DockerRunner(config)
    client = runner.builder.client  # first use removes containers of dead orchestrators
    used = set() if all_images else project_image_keys(config, runner)
    removed = 0
    found = prune_images(client, keep=used, dry_run=dry_run, lock_dir=config.env_dir)
    for what, refused in found:
        if refused:
            console.print(f"kept {what}: {refused}")
            continue
        removed += 1
        console.print(f"{'would remove' if dry_run else 'removed'} {what}")
    console.print(f"{removed} image(s) {'to remove' if dry_run else 'removed'}")
