"""Deployments on Prefect: a scheduled pipeline's flow, served by this process or sent to workers.

What a schedule means (which partition a tick processes, which upstreams it waits for) is
`conveyor.ops.schedules`; this module only speaks Prefect: cron validation by Prefect's own
schedule model, the deployment object, `serve` and `apply`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from conveyor.backends.prefect_flow import Resolved, build_flow, conveyor_run_id
from conveyor.dsl.pipeline import Pipeline
from conveyor.engine.core import Engine
from conveyor.engine.processes import release_children

TICK_PARAM = "conveyor_tick"  # a scheduled flow's parameter showing its clock's mapping


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
    engine: Engine,
    pipeline: Pipeline,
    resolve: Callable[[dict[str, Any], datetime, str | None], Resolved],
) -> Any:
    """The flow a deployment runs: `resolve(params, scheduled_time, flow_run_id)` fills in its
    partition; the flow run then shows the resolved parameters (and `notes.name` as its name)."""
    from prefect.runtime import flow_run

    def resolve_params(params: dict[str, Any]) -> Resolved:
        scheduled = flow_run.scheduled_start_time or datetime.now().astimezone()
        run_id = str(flow_run.id) if flow_run.id else None
        params.pop(TICK_PARAM, None)  # a retried run gets it back; the tick is found by run id
        resolved = resolve(params, datetime.fromisoformat(scheduled.isoformat()), run_id)
        if run_id is not None:
            show_resolved(run_id, resolved)
        return resolved

    return build_flow(engine, pipeline, tags=("scheduled",), resolve_params=resolve_params,
                      extra_params=(TICK_PARAM,))  # fmt: skip


def show_resolved(flow_run_id: str, resolved: Resolved) -> None:
    """Write the parameters a tick resolved (its partition, its clock's mapping) into the flow
    run, so the UI's Parameters tab shows what the run processed; a failure only logs."""
    import logging
    from uuid import UUID

    from prefect.client.orchestration import get_client

    from conveyor._runtime.hashing import to_jsonable

    name = resolved.notes.get("name")
    run_id = conveyor_run_id(flow_run_id)
    if name and run_id:
        name = f"{name} · {run_id}"
    parameters = to_jsonable(resolved.params)
    if resolved.notes.get("tick"):
        parameters[TICK_PARAM] = resolved.notes["tick"]
    try:
        with get_client(sync_client=True) as client:
            current = client.read_flow_run(UUID(flow_run_id))
            client.update_flow_run(
                UUID(flow_run_id),
                parameters=parameters,
                name=str(name) if name else None,
                tags=sorted({*current.tags, *resolved.tags}),
            )
    except Exception as exc:  # the UI's view of a run must never fail the run
        logging.getLogger("conveyor.prefect").warning(
            "could not show the resolved parameters in flow run %s: %s", flow_run_id, exc
        )


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
    """Serve deployments from this process until SIGTERM or Ctrl-C stops it.

    Prefect's own `serve` cannot be stopped by SIGTERM (its handler calls the runner's async
    `stop` without awaiting it: "coroutine 'Runner.astop' was never awaited"), and SIGTERM is
    how `docker stop` and Kubernetes stop a container. Here SIGTERM stops the polling loop and
    releases in-flight runs (Prefect cancels their processes), so the process exits in seconds.
    """
    import asyncio
    import signal

    from prefect.runner import Runner

    class StoppableRunner(Runner):
        def handle_sigterm(self, *args: Any, **kwargs: Any) -> None:
            # runs in the signal handler, inside the event loop's thread: schedule, not await
            self._logger.info("SIGTERM received: stopping, releasing in-flight runs")
            loop = self._loop
            if loop is not None and self.started:
                loop.call_soon_threadsafe(lambda: loop.create_task(stop(self)))
            else:
                raise SystemExit(0)

    async def stop(runner: Runner) -> None:
        # the runs' processes first (Prefect's own cancellation waits on each in turn), then
        # the polling loops
        await asyncio.to_thread(release_children, 4.0)
        await runner.astop()

    async def main() -> None:
        runner = StoppableRunner(limit=limit)
        for built in deployments:
            await runner.aadd_deployment(built)
        loop = asyncio.get_running_loop()
        runner._loop = loop  # set by start() too; the handler may fire before it gets there
        # Runner.start installs handle_sigterm for SIGTERM (main thread only)
        await runner.start()

    def exit_now(*_: Any) -> None:  # SIGTERM before the runner is up: nothing to release
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, exit_now)
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass


def apply(built: Any) -> str:
    """Register a deployment with the Prefect API; returns its id."""
    return str(built.apply())
