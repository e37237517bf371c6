"""Prefect work pools: deployments any number of workers run, the workers, and flow-run state.

A deployment on a pool names its flow by a module path (`conveyor.ops.pool_flows.<attribute>`)
rather than a file, so a worker on any machine with conveyor installed rebuilds it; the
project's folder reaches the worker as CONVEYOR_PROJECT_ROOT (the worker's own, else the one
the deployment was registered from, sent as a job variable). Workers are Prefect's process
workers; `run_worker` adds what `prefect worker start` lacks: SIGTERM stops it in seconds and
releases its in-flight runs, and each flow run it takes is tagged with the worker's name and
HOST:PID (and conveyor's run records the name, from CONVEYOR_WORKER).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from conveyor.engine.processes import release_children

log = logging.getLogger("conveyor.prefect")

POOL_TYPE = "process"
WORKER_TAG = "worker:"  # flow-run tag naming the worker that took it
PROCESS_TAG = "worker-process:"  # and the worker's HOST:PID, to tell whether it still lives
STOP_GRACE_SECONDS = 4.0  # SIGTERM -> SIGKILL for a stopping worker's runs (all within 10 s)


def flow_entrypoint(kind: str, name: str) -> str:
    """The module-path entrypoint of a pool deployment (see conveyor.ops.pool_flows)."""
    return f"conveyor.ops.pool_flows.{kind}__{name}"


def worker_name() -> str:
    """This process's name as a worker: host (the container's, in a container) and pid."""
    return f"{socket.gethostname()}-{os.getpid()}"


async def _ensure_pool(client: Any, pool: str) -> None:
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    try:
        await client.read_work_pool(pool)
    except ObjectNotFound:
        try:
            await client.create_work_pool(WorkPoolCreate(name=pool, type=POOL_TYPE))
        except ObjectAlreadyExists:  # workers started together: another one just made it
            pass


def ensure_pool(pool: str) -> None:
    """Create the work pool (a process pool) unless it exists."""
    from prefect.client.orchestration import get_client

    async def main() -> None:
        async with get_client() as client:
            await _ensure_pool(client, pool)

    asyncio.run(main())


def register(
    flow: Any,
    *,
    name: str,
    pool: str,
    entrypoint: str,
    env: Mapping[str, str],
    tags: Sequence[str],
    description: str,
    cron: str | None = None,
    timezone: str = "UTC",
) -> str:
    """Register `flow` on `pool` as deployment `name`, rebuilt by workers from `entrypoint`
    (a module path); returns the deployment's id."""
    from prefect.schedules import Cron

    ensure_pool(pool)
    options: dict[str, Any] = {
        "name": name,
        "work_pool_name": pool,
        "job_variables": {"env": dict(env)},
        "description": description,
        "tags": list(tags),
        "parameters": {},
    }
    if cron:
        options["schedules"] = [Cron(cron, timezone=timezone)]
    built = flow.to_deployment(**options)
    built.entrypoint = entrypoint
    return str(built.apply())


# ------------------------------------------------------------------------------ the worker


def run_worker(
    pool: str,
    *,
    name: str | None = None,
    limit: int | None = None,
    env: Mapping[str, str] | None = None,
    on_start: Callable[[str], None] | None = None,
) -> None:
    """Run a Prefect process worker on `pool` until SIGTERM or Ctrl-C; creates the pool."""
    name = name or worker_name()
    # the flow runs' processes inherit this environment (the process worker passes it on)
    os.environ.update({"CONVEYOR_WORKER": name, **(env or {})})
    asyncio.run(_work(pool, name, limit, on_start))


async def _work(
    pool: str, name: str, limit: int | None, on_start: Callable[[str], None] | None
) -> None:
    from prefect.workers.process import ProcessWorker

    worker = ProcessWorker(
        work_pool_name=pool, name=name, limit=limit, create_pool_if_not_found=True
    )
    run_flow = worker.run
    identity = [WORKER_TAG + name, f"{PROCESS_TAG}{socket.gethostname()}:{os.getpid()}"]

    async def tagged_run(flow_run: Any, configuration: Any, task_status: Any = None) -> Any:
        # labelled before its process starts: a backfill watching the run can tell which
        # worker took it, and whether that worker still lives, even if it dies right away
        try:
            tags = [*flow_run.tags, *(t for t in identity if t not in flow_run.tags)]
            await worker.client.update_flow_run(flow_run.id, tags=tags)
        except Exception:  # a label, never worth failing the run for
            log.warning("could not tag flow run %s", flow_run.id, exc_info=True)
        return await run_flow(flow_run, configuration, task_status)

    worker.run = tagged_run  # type: ignore[method-assign]
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    work = asyncio.create_task(worker.start(printer=on_start or log.info))
    stop = asyncio.create_task(stopping.wait())
    done, _ = await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
    if work in done:
        stop.cancel()
        work.result()
        return
    log.info("worker %s stopping: releasing its in-flight flow runs", name)
    # the runs' processes first: each records its run crashed and ends; then the polling loops
    released = await asyncio.to_thread(release_children, STOP_GRACE_SECONDS)
    await _hand_back_unstarted(worker, name)
    work.cancel()
    try:
        await asyncio.wait_for(work, timeout=3)
    except (asyncio.CancelledError, TimeoutError):
        pass
    except Exception:  # a worker torn down mid-request; it is stopping anyway
        log.debug("worker teardown", exc_info=True)
    log.info("worker %s stopped (%d run process(es) released)", name, len(released))


async def _hand_back_unstarted(worker: Any, name: str) -> None:
    """Put flow runs this worker took but whose process never ran back in the pool's queue:
    left Pending, no other worker would take them."""
    from prefect.states import Scheduled

    # Prefect's worker keeps the runs it is between taking (Pending) and starting in this set
    for flow_run_id in list(getattr(worker, "_submitting_flow_run_ids", ())):
        try:
            flow_run = await worker.client.read_flow_run(flow_run_id)
            if flow_run.state is not None and flow_run.state.type.value == "PENDING":
                message = f"handed back by worker {name}, which stopped before starting it"
                await worker.client.set_flow_run_state(
                    flow_run_id, Scheduled(message=message), force=True
                )
                log.info("flow run %s %s", flow_run_id, message)
        except Exception:  # stopping anyway; a backfill watching the run resubmits it
            log.warning("could not hand back flow run %s", flow_run_id, exc_info=True)


# --------------------------------------------------------------------- submitting and watching


@dataclass(frozen=True, slots=True)
class FlowRunState:
    """What the API says about one submitted flow run."""

    id: str
    state: str  # SCHEDULED, PENDING, RUNNING, COMPLETED, FAILED, CRASHED, CANCELLED, ...
    message: str
    worker: str | None  # from the worker:NAME tag (`conveyor worker start`)
    process: str | None  # the worker's HOST:PID, from its worker-process: tag

    @property
    def final(self) -> bool:
        return self.state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


def _tagged(tags: Sequence[str], prefix: str) -> str | None:
    return next((t[len(prefix) :] for t in tags if t.startswith(prefix)), None)


class PoolClient:
    """Submits flow runs of one deployment and reads their states (one async client)."""

    def __init__(self, client: Any, pool: str, deployment_id: str) -> None:
        self._client = client
        self._pool = pool
        self._deployment = UUID(deployment_id)

    async def submit(
        self,
        parameters: Mapping[str, Any],
        *,
        name: str,
        env: Mapping[str, str],
        tags: Sequence[str],
    ) -> str:
        """Create a flow run for the pool's workers (run_deployment with timeout=0)."""
        flow_run = await self._client.create_flow_run_from_deployment(
            self._deployment,
            parameters=dict(parameters),
            name=name,
            tags=list(tags),
            job_variables={"env": dict(env)},
        )
        return str(flow_run.id)

    async def states(self, ids: Sequence[str]) -> dict[str, FlowRunState]:
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        if not ids:
            return {}
        runs = await self._client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(i) for i in ids])),
            limit=len(ids),
        )
        found = {}
        for run in runs:
            worker = _tagged(run.tags, WORKER_TAG)
            process = _tagged(run.tags, PROCESS_TAG)
            state = run.state.type.value if run.state else "SCHEDULED"
            message = (run.state.message if run.state else "") or ""
            found[str(run.id)] = FlowRunState(str(run.id), state, message, worker, process)
        return found

    async def worker_offline(self, name: str) -> bool:
        """Whether Prefect holds worker `name` of the pool offline (its heartbeats stopped)."""
        workers = await self._client.read_workers_for_work_pool(self._pool)
        return any(
            w.name == name and str(getattr(w.status, "value", w.status)).upper() == "OFFLINE"
            for w in workers
        )

    async def mark_crashed(self, flow_run_id: str, message: str) -> None:
        """Record a flow run whose worker died as crashed (Prefect cannot tell by itself)."""
        from prefect.states import Crashed

        await self._client.set_flow_run_state(
            UUID(flow_run_id), Crashed(message=message), force=True
        )


async def with_pool_client(pool: str, deployment_id: str, work: Callable[[PoolClient], Any]) -> Any:
    """Run `await work(PoolClient)` with one API client open."""
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return await work(PoolClient(client, pool, deployment_id))
