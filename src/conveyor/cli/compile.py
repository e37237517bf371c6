"""`conveyor compile NAME --target kfp`: a pipeline as a Kubeflow Pipelines v2 spec."""

from __future__ import annotations

from pathlib import Path

import typer

from conveyor.cli import app
from conveyor.cli.common import console, parse_params, settings
from conveyor.cli.pipelines import PARAM_HELP


@app.command("compile")
def compile_command(
    name: str = typer.Argument(..., help="Pipeline name (from flows/) or PATH.py:ATTRIBUTE."),
    target: str = typer.Option("kfp", "--target", help="kfp (Kubeflow Pipelines v2)."),
    output: Path = typer.Option(
        None, "--output", "-o", help="Where to write the YAML (default: deployments/NAME.kfp.yaml)."
    ),
    registry: str = typer.Option(
        None, "--registry", help="Require the images pushed to this HOST[:PORT]/prefix."
    ),
    param: list[str] = typer.Option(
        None,
        "--param",
        "-p",
        help=PARAM_HELP + " Names the files Path inputs read and the models load_model "
        "resolves now; every parameter stays a pipeline parameter of the spec.",
    ),
    database_secret: str = typer.Option(
        "conveyor-database",
        "--database-secret",
        help="Kubernetes secret with the database URL (host tasks only).",
    ),
    database_secret_key: str = typer.Option(
        "url", "--database-secret-key", help="The key of the URL in that secret."
    ),
    store_secret: str = typer.Option(
        None, "--store-secret", help="Kubernetes secret with the artifact store's credentials."
    ),
    env_secret: str = typer.Option(
        None, "--env-secret", help="Kubernetes secret with the variables components list in env=."
    ),
) -> None:
    """Compile a pipeline for another engine: a Kubeflow Pipelines v2 spec (YAML).

    Every step runs its pushed image (by digest; `conveyor images push` first) and fetches its
    code from the artifact store, which the tasks must reach (CONVEYOR_ARTIFACTS).
    """
    from conveyor.ops.compile import compile as compile_pipeline

    config = settings()
    target_path = output or config.project_root / "deployments" / f"{name}.kfp.yaml"
    result = compile_pipeline(
        name,
        target=target,
        output=target_path,
        registry=registry,
        params=parse_params(param),
        database_secret=database_secret,
        database_secret_key=database_secret_key,
        store_secret=store_secret,
        env_secret=env_secret,
        settings=config,
    )
    for note in result.notes:
        console.print(f"note: {note}", style="yellow", soft_wrap=True)
    console.print(
        f"wrote {result.path} ({len(result.images)} tasks, {len(set(result.images.values()))} "
        f"images) in {result.seconds:.2f}s",
        soft_wrap=True,
    )
