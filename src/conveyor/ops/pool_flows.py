"""The flows Prefect workers import for deployments on a work pool, by module path.

A deployment's entrypoint is `conveyor.ops.pool_flows.<kind>__<name>`: `pipeline__NAME` runs
one partition (or batch) of a pipeline with the parameters of its flow run (distributed
backfills), `schedule__ENTRY` a deployments/*.toml entry. Importing the attribute builds the
flow in the worker's flow-run process: it changes into the project (the worker's
CONVEYOR_PROJECT_ROOT, else CONVEYOR_DEPLOYED_ROOT: where the deployment was registered from),
reads how to run from the run's environment (CONVEYOR_RUNNER, CONVEYOR_CACHE,
CONVEYOR_FORCE_STEPS, CONVEYOR_MAX_PARALLEL, set per flow run by the backfill); its conveyor
run is tagged with the worker that executes it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from conveyor.engine.settings import Settings
from conveyor.errors import ConveyorError

SEPARATOR = "__"  # as in conveyor.backends.prefect_pool.flow_entrypoint


def worker_tags() -> tuple[str, ...]:
    """Tags naming the worker and the Prefect flow run a conveyor run executes in."""
    from conveyor.backends.prefect_pool import WORKER_TAG

    tags = []
    if os.environ.get("CONVEYOR_WORKER"):
        tags.append(WORKER_TAG + os.environ["CONVEYOR_WORKER"])
    if os.environ.get("PREFECT__FLOW_RUN_ID"):
        tags.append("flow-run:" + os.environ["PREFECT__FLOW_RUN_ID"])
    return tuple(tags)


def enter_project() -> Settings:
    """Change into the project a pool deployment runs: the worker's CONVEYOR_PROJECT_ROOT, else
    the folder it was registered from (CONVEYOR_DEPLOYED_ROOT, a job variable)."""
    root = os.environ.get("CONVEYOR_PROJECT_ROOT") or os.environ.get("CONVEYOR_DEPLOYED_ROOT")
    if root:
        if not Path(root, "pyproject.toml").is_file():
            raise ConveyorError(
                f"CONVEYOR_PROJECT_ROOT={root} holds no pyproject.toml on worker "
                f"{os.environ.get('CONVEYOR_WORKER', '?')}; mount or copy the project there, or "
                f"set CONVEYOR_PROJECT_ROOT to where it is on this machine"
            )
        os.chdir(root)
    return Settings.load()


def pipeline_flow(name: str) -> Any:
    """The flow of one backfill batch of pipeline `name`, as this worker runs it."""
    from conveyor.backends.prefect_flow import build_flow, configure
    from conveyor.ops.discovery import resolve_pipeline
    from conveyor.ops.run import build_engine

    settings = enter_project()
    configure(settings)
    pipeline = resolve_pipeline(name, settings)
    forced = [s for s in os.environ.get("CONVEYOR_FORCE_STEPS", "").split(",") if s]
    parallel = os.environ.get("CONVEYOR_MAX_PARALLEL")
    tags = ("backfill", *worker_tags())
    engine = build_engine(
        settings,
        cache=os.environ.get("CONVEYOR_CACHE", "1") != "0",
        force_steps=forced,
        max_parallel=int(parallel) if parallel else None,
        tags=tags,
    )
    return build_flow(engine, pipeline, tags=tags)


def schedule_flow(name: str) -> Any:
    """The flow of deployments/*.toml entry `name`, as this worker runs it."""
    from conveyor.ops.schedules import scheduled_flow

    return scheduled_flow(name, enter_project())


def __getattr__(attribute: str) -> Any:
    kind, separator, name = attribute.partition(SEPARATOR)
    if attribute.startswith("__") or not separator or not name:
        raise AttributeError(attribute)
    if kind == "pipeline":
        return pipeline_flow(name)
    if kind == "schedule":
        return schedule_flow(name)
    raise AttributeError(attribute)
