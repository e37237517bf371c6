"""`conveyor envs list | lock | prune`."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import typer
from rich.table import Table

from conveyor.cli import app
from conveyor.cli.common import console, settings
from conveyor.engine.settings import Settings

envs_app = typer.Typer(help="Step environments (uv virtual environments).", no_args_is_help=True)
app.add_typer(envs_app, name="envs")


def _size(path: Path) -> int:
    return sum(f.lstat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def project_environment_keys(config: Settings) -> set[str]:
    """Keys of the venvs this project's pipelines use, from their existing locks."""
    import platform

    from conveyor.engine.environments import environment_key
    from conveyor.ops.discovery import discover
    from conveyor.runners.base import requirement_spec
    from conveyor.runners.locks import Locker

    locker = Locker(config.lock_dir)
    keys = set()
    for candidates in discover(config).pipelines.values():
        for pipeline, _ in candidates:
            for step in pipeline.steps:
                if step.component is None or step.component.spec is None:
                    continue
                lock = locker.existing(requirement_spec(step.component.spec))
                if lock is not None:
                    keys.add(environment_key("venv", platform.python_version(), lock.sha256))
    return keys


@envs_app.command("list")
def list_envs() -> None:
    """Built environments, their packages, size, when they were last used and by which
    projects."""
    from conveyor.runners.env_users import env_users, needed_by
    from conveyor.runners.venv import list_environments

    config = settings()
    used = project_environment_keys(config)
    table = Table(title=f"environments in {config.env_dir}", title_justify="left")
    for column in ("key", "python", "requirements", "size", "last used", "used by"):
        table.add_column(column)
    for env in list_environments(config.env_dir):
        age = time.time() - env["last_used"]
        users = needed_by(env, env_users(Path(env["path"])))
        if env["key"] in used and str(config.project_root) not in users:
            users.insert(0, str(config.project_root))
        table.add_row(
            env["key"],
            env.get("python", "?"),
            ", ".join(env.get("requirements", [])) or "(none)",
            f"{_size(Path(env['path'])) / 1e6:.0f} MB",
            f"{age / 86400:.1f} days ago" if age > 86400 else f"{age / 3600:.1f} h ago",
            "\n".join("this project" if u == str(config.project_root) else u for u in users),
        )
    console.print(table)


@envs_app.command("lock")
def lock(
    names: list[str] = typer.Argument(None, help="Pipelines to lock (default: all)."),
) -> None:
    """Re-resolve the locks of every step environment (`uv pip compile`)."""
    from conveyor.ops.discovery import discover, resolve_pipeline
    from conveyor.runners.base import requirement_spec
    from conveyor.runners.locks import Locker

    config = settings()
    if names:
        pipelines = [resolve_pipeline(n, config) for n in names]
    else:
        pipelines = [p for found in discover(config).pipelines.values() for p, _ in found]
    locker = Locker(config.lock_dir)
    done = set()
    for pipeline in pipelines:
        for step in pipeline.steps:
            if step.component is None or step.component.spec is None:
                continue
            spec = requirement_spec(step.component.spec)
            if spec in done:
                continue
            done.add(spec)
            result = locker.lock(spec, refresh=True, who=f"step {step.name}")
            console.print(f"locked {spec.describe()} -> {result.path} ({len(result.pins)} pins)")


@envs_app.command("prune")
def prune(
    older_than: float = typer.Option(
        None, "--older-than", help="Remove only environments unused for this many days."
    ),
    all_envs: bool = typer.Option(
        False, "--all", help="Also remove environments existing projects still use."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only print what would go."),
) -> None:
    """Remove environments no existing project uses any more (and leftovers of failed builds).

    Each environment records the projects that used it; one is kept while any of them still
    exists and one of its locks resolves to it (this project's too, by its locks)."""
    from conveyor.runners.env_users import env_users, needed_by
    from conveyor.runners.venv import list_environments

    config = settings()
    ours = set() if all_envs else project_environment_keys(config)
    removed = 0
    for leftover in config.env_dir.glob(".*.building"):
        if not dry_run:
            shutil.rmtree(leftover, ignore_errors=True)
        console.print(f"removed unfinished build {leftover.name}")
    for env in list_environments(config.env_dir):
        users = needed_by(env, env_users(Path(env["path"]))) if not all_envs else []
        if env["key"] in ours or users:
            if dry_run:
                console.print(f"keep {env['key']}: used by {', '.join(users) or 'this project'}")
            continue
        if older_than is not None and time.time() - env["last_used"] < older_than * 86400:
            continue
        removed += 1
        console.print(f"{'would remove' if dry_run else 'removed'} {env['key']} "
                      f"({', '.join(env.get('requirements', [])) or 'no packages'})")  # fmt: skip
        if not dry_run:  # rename first, so no half-deleted environment looks usable
            doomed = Path(env["path"]).with_name(f".{env['key']}.building")
            Path(env["path"]).rename(doomed)
            shutil.rmtree(doomed, ignore_errors=True)
    console.print(f"{removed} environment(s) {'to remove' if dry_run else 'removed'}")
