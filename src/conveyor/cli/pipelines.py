"""`conveyor run | plan | dag | demo`."""

from __future__ import annotations

import importlib
import inspect

import typer
from rich.table import Table

from conveyor.cli import app
from conveyor.cli.common import (
    RUNNER_HELP,
    console,
    fail,
    parse_params,
    settings,
    step_table,
)

PARAM_HELP = "Pipeline parameter NAME=VALUE (repeatable)."


@app.command()
def run(
    name: str = typer.Argument(..., help="Pipeline name (from flows/) or PATH.py:ATTRIBUTE."),
    param: list[str] = typer.Option(None, "--param", "-p", help=PARAM_HELP),
    runner: str | None = typer.Option(None, help=RUNNER_HELP),
    engine: str = typer.Option("auto", help="local, prefect, or auto."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Run every step."),
    force_step: list[str] = typer.Option(None, "--force-step", help="Run STEP even if cached."),
    max_parallel: int = typer.Option(None, "--max-parallel", help="Steps running at once."),
) -> None:
    """Run a pipeline once."""
    from conveyor.ops.run import run as run_pipeline

    result = run_pipeline(
        name,
        parse_params(param),
        runner=runner,
        engine=engine,
        cache=not no_cache,
        force_steps=force_step or (),
        max_parallel=max_parallel,
        settings=settings(),
    )
    from conveyor.cli.values import metrics_text, returned_summaries

    console.print(step_table(result))
    for step in result.steps.values():
        if step.metrics:
            console.print(f"metrics of {step.name}: {metrics_text(step.metrics)}")
    if result.ok:
        for label, shown in returned_summaries(result):
            console.print(f"returned {label}: {shown}", soft_wrap=True)
    if not result.ok:
        fail(result.error or f"run {result.run_id} failed")
    console.print(result.summary(), style="green")


@app.command()
def plan(
    name: str = typer.Argument(..., help="Pipeline name or PATH.py:ATTRIBUTE."),
    param: list[str] = typer.Option(None, "--param", "-p", help=PARAM_HELP),
    runner: str | None = typer.Option(None, help=RUNNER_HELP),
    no_cache: bool = typer.Option(False, "--no-cache"),
    force_step: list[str] = typer.Option(None, "--force-step"),
) -> None:
    """Resolve and build every environment a run needs, and show what the cache will skip."""
    from conveyor.ops.discovery import resolve_pipeline
    from conveyor.ops.run import build_engine

    config = settings()
    pipeline = resolve_pipeline(name, config)
    engine = build_engine(
        config, runner=runner, cache=not no_cache, force_steps=force_step or (), hooks=[]
    )
    result = engine.plan(pipeline, parse_params(param))
    table = Table(title=f"plan of {pipeline.name} ({result.seconds:.2f}s)", title_justify="left")
    for column in ("step", "will", "why", "environment", "notes"):
        table.add_column(column)
    for step in result.steps.values():
        env = step.environment
        where = "orchestrator" if env is None else f"{env.key[:12]} ({env.spec.describe()})"
        table.add_row(step.name, step.state, step.reason, where, "; ".join(step.notes))
    console.print(table)


@app.command()
def dag(
    name: str = typer.Argument(..., help="Pipeline name or PATH.py:ATTRIBUTE."),
    mermaid: bool = typer.Option(False, "--mermaid", help="Print a Mermaid flowchart."),
) -> None:
    """Print a pipeline's DAG."""
    from conveyor.dsl.render import render_mermaid, render_text
    from conveyor.ops.discovery import resolve_pipeline

    pipeline = resolve_pipeline(name, settings())
    text = render_mermaid(pipeline) if mermaid else render_text(pipeline)
    print(text)


@app.command()
def demo(
    runner: str | None = typer.Option(None, help=RUNNER_HELP),
) -> None:
    """Run the project's demo (declared as `demo = "module:function"` under [tool.conveyor])."""
    from conveyor.ops.discovery import ensure_importable

    config = settings()
    target = config.demo
    if not target or ":" not in target:
        fail(
            f'no demo is declared for {config.project_root}; add `demo = "module:function"` '
            f"under [tool.conveyor] in pyproject.toml"
        )
    module_name, _, attr = target.partition(":")
    ensure_importable(config.project_root)
    function = getattr(importlib.import_module(module_name), attr)
    accepted = inspect.signature(function).parameters
    options = {"settings": config, "runner": runner or config.runner}
    code = function(**{k: v for k, v in options.items() if k in accepted})
    raise typer.Exit(code or 0)
