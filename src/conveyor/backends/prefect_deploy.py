"""Deployments on Prefect: a scheduled pipeline's flow, served by this process or sent to workers.

What a schedule means (which partition a tick processes, which upstreams it waits for) is
`conveyor.ops.schedules`; this module only speaks Prefect: cron validation by Prefect's own
schedule model, the deployment object, `serve` and `apply`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from conveyor.backends.prefect_flow import build_flow
from conveyor.dsl.pipeline import Pipeline
from conveyor.engine.core import Engine


def cron_problem(cron: str, timezone: str) -> str | None:
    """Why Prefect would refuse this cron expression in this time zone, or None if it accepts it."""
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    try:
        CronSchedule(cron=cron, timezone=timezone)
    except (ValidationError, ValueError) as exc:
        errors = getattr(exc, "errors", None)
        if callable(errors):
            return "; ".join(str(e.get("msg", e)) for e in errors())
        return str(exc)
    return None


def next_fire_times(
    cron: str, timezone: str, count: int = 3, after: datetime | None = None
) -> list[datetime]:
    """The next `count` times Prefect's scheduler will fire this cron, in its time zone."""
    import asyncio

    from prefect.server.schemas.schedules import CronSchedule

    schedule = CronSchedule(cron=cron, timezone=timezone)
    dates = asyncio.run(schedule.get_dates(n=count, start=after))
    return [datetime.fromisoformat(d.isoformat()) for d in dates]


def scheduled_flow(
    engine: Engine, pipeline: Pipeline, resolve: Callable[[dict[str, Any], Any], dict[str, Any]]
) -> Any:
    """The flow a deployment runs: `resolve(params, scheduled_time)` fills in its partition."""
    from prefect.runtime import flow_run

    def resolve_params(params: dict[str, Any]) -> dict[str, Any]:
        scheduled = flow_run.scheduled_start_time or datetime.now().astimezone()
        return resolve(params, scheduled)

    return build_flow(engine, pipeline, tags=("scheduled",), resolve_params=resolve_params)


def deployment(
    flow: Any,
    *,
    name: str,
    cron: str,
    timezone: str,
    description: str,
    entrypoint: str,
    work_pool: str | None = None,
) -> Any:
    """A Prefect RunnerDeployment of `flow` on `cron`, rebuilt by workers from `entrypoint`."""
    from prefect.schedules import Cron

    options: dict[str, Any] = {
        "name": name,
        "schedules": [Cron(cron, timezone=timezone)],
        "parameters": {},
        "description": description,
        "tags": ["conveyor", "scheduled"],
    }
    if work_pool:
        options["work_pool_name"] = work_pool
    built = flow.to_deployment(**options)
    built.entrypoint = entrypoint
    return built


def serve(deployments: Sequence[Any], limit: int | None = None) -> None:
    """Serve deployments from this process until it is stopped."""
    from prefect import serve as prefect_serve

    prefect_serve(*deployments, limit=limit)


def apply(built: Any) -> str:
    """Register a deployment with the Prefect API; returns its id."""
    return str(built.apply())
