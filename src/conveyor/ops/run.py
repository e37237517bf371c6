"""`conveyor.run`: the one entry point that wires a pipeline to an engine, a runner and hooks."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from conveyor.dsl.pipeline import Pipeline
from conveyor.engine.core import Engine
from conveyor.engine.hooks import HookChain, RunHooks
from conveyor.engine.planning import CachePolicy, HostImplementations
from conveyor.engine.progress import waiting
from conveyor.engine.results import RunResult
from conveyor.engine.settings import Settings
from conveyor.engine.tasks import Runner
from conveyor.errors import ConveyorError, RunFailed
from conveyor.ops.discovery import resolve_pipeline
from conveyor.runners import get_runner

ENGINES = ("auto", "local", "prefect")
log = logging.getLogger("conveyor.run")


def _without_password(url: str) -> str:
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def resolve_engine(engine: str, settings: Settings) -> str:
    """`auto` -> `prefect` when a Prefect API is configured or the managed server is up."""
    if engine not in ENGINES:
        raise ConveyorError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if engine != "auto":
        return engine
    import importlib.util

    from conveyor.backends.prefect_server import api_configured

    if api_configured(settings) and importlib.util.find_spec("prefect") is not None:
        return "prefect"
    return "local"


def default_host_implementations(settings: Settings) -> HostImplementations:
    """The database-backed host steps, when conveyor's database layer is installed."""
    if not settings.uses_database:
        return {}
    try:
        from conveyor.db.host_steps import implementations
    except ImportError:
        return {}
    return implementations(settings)


def default_hooks(settings: Settings) -> list[RunHooks]:
    """Lineage recording into conveyor's database, when its layer is installed: the embedded
    SQLite file through the standard library (no SQLAlchemy import on a run's hot path), any
    other database through SQLAlchemy."""
    if not settings.uses_database:
        return []
    from conveyor.db.sqlite_recorder import SqliteRecorder, sqlite_path

    path = sqlite_path(settings)
    if path is not None:
        return [SqliteRecorder(settings, path)]
    try:
        from conveyor.db.recorder import Recorder
    except ImportError:
        return []
    return [Recorder(settings)]


def default_registry(settings: Settings) -> Any:
    """The model registry host steps see as `ctx.registry`, when there is a database."""
    if not settings.uses_database:
        return None
    try:
        from conveyor.db.api import Registry
    except ImportError:
        return None
    return Registry(settings)


def protections_off(runner: Runner) -> str | None:
    """What the runner's steps are not protected from (venv steps without their sandbox)."""
    said = getattr(runner, "protections_off", None)
    return said() if callable(said) else None


def build_engine(
    settings: Settings,
    *,
    runner: str | None = None,
    cache: bool = True,
    force_steps: Iterable[str] = (),
    max_parallel: int | None = None,
    hooks: Sequence[RunHooks] | None = None,
    host_impls: HostImplementations | None = None,
    tags: tuple[str, ...] = (),
) -> Engine:
    """A local engine with the project's defaults filled in; says first when its runner cannot
    isolate steps here (the plan, every run and backfill start with that line)."""
    chosen = get_runner(runner or settings.runner, settings)
    warning = protections_off(chosen)
    if warning:
        log.warning("%s", warning)
    return Engine(
        settings,
        chosen,
        hooks=HookChain(default_hooks(settings) if hooks is None else hooks),
        host_impls=default_host_implementations(settings) if host_impls is None else host_impls,
        registry=default_registry(settings),
        policy=CachePolicy(cache, frozenset(force_steps)),
        max_parallel=max_parallel,
        tags=tags,
    )


def run(
    pipeline_or_name: Pipeline | str,
    params: Mapping[str, Any] | None = None,
    *,
    runner: str | None = None,
    engine: str = "auto",
    cache: bool = True,
    force_steps: Iterable[str] = (),
    max_parallel: int | None = None,
    settings: Settings | None = None,
    hooks: Sequence[RunHooks] | None = None,
    host_impls: HostImplementations | None = None,
    raise_on_failure: bool = False,
) -> RunResult:
    """Run a pipeline and return its result.

    Args:
        pipeline_or_name: a `@pipeline` object, a pipeline name from the flow folders, or
            `path.py:attr`.
        params: pipeline parameters (strings are coerced to the hinted types).
        runner: "venv", "docker" or "inprocess" (default: CONVEYOR_RUNNER or
            `[tool.conveyor] runner`, else "venv").
        engine: "local", "prefect", or "auto" (Prefect when an API is configured or conveyor's
            managed server is up, else local).
        cache: reuse results of unchanged steps.
        force_steps: step names to run even if cached.
        max_parallel: how many independent steps run at once (default: CPU count).
        raise_on_failure: raise RunFailed instead of returning a failed result.
    """
    settings = settings or Settings.load()
    shown = pipeline_or_name if isinstance(pipeline_or_name, str) else pipeline_or_name.name
    with waiting(f"loading {shown} from {settings.project_root}"):
        pipeline = resolve_pipeline(pipeline_or_name, settings)
    chosen = resolve_engine(engine, settings)
    database = settings.database_url or f"sqlite (default) in {settings.home}"
    log.debug(
        "pipeline %s from %s; %s engine, %s runner; database %s; artifacts %s; environments %s",
        pipeline.name, settings.project_root, chosen, runner or settings.runner,
        _without_password(database),
        settings.artifact_store, settings.env_dir,
    )  # fmt: skip
    local = build_engine(
        settings,
        runner=runner,
        cache=cache,
        force_steps=force_steps,
        max_parallel=max_parallel,
        hooks=hooks,
        host_impls=host_impls,
    )
    try:
        if chosen == "prefect":
            from conveyor.backends.prefect_flow import run_with_prefect

            result = run_with_prefect(local, pipeline, params or {})
        else:
            result = local.run(pipeline, params or {})
    finally:
        local.runner.close()
    if raise_on_failure and not result.ok:
        raise RunFailed(f"pipeline {pipeline.name!r} failed: {result.error}")
    return result
