"""Distributed backfills: one Prefect flow run per batch on a work pool, watched to the end.

The partitions are selected and grouped exactly as for a local backfill (`backfill.prepare`),
then each batch becomes a flow run of the pipeline's `backfill` deployment on the pool, which
any number of workers (`conveyor worker start --pool P`) execute. A batch is submitted only
once the batches it reads from (look-back, `depends_on_past`) have succeeded, and at most
`max_active` at once. A batch whose worker died is noticed through conveyor's own records (the
run's heartbeat stops, or its process is gone) or the worker's (its process is gone, Prefect
sees it offline): its flow run is marked crashed and the batch is submitted again, for the
remaining workers, up to `retries` times. The result is the local backfill's BackfillResult.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from conveyor.dsl.pipeline import Pipeline
from conveyor.engine.processes import process_alive
from conveyor.engine.settings import Settings
from conveyor.ops.backfill import (
    BackfillResult,
    Batch,
    BatchOutcome,
    _partition_params,
    batch_dependencies,
    prepare,
)
from conveyor.ops.discovery import resolve_pipeline

POLL_SECONDS = 2.0
DEPLOYMENT = "backfill"
FLOW_RUN_TAG = "flow-run:"


@dataclass(slots=True)
class PoolProgress:
    """Partitions per worker: done, running, failed; and how many wait for a worker."""

    done: dict[str, int] = field(default_factory=dict)
    running: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    waiting: int = 0
    retried: int = 0

    def line(self) -> str:
        """`w1: 4 done, 1 running · w2: 3 done · 6 waiting`."""
        workers = sorted(set(self.done) | set(self.running) | set(self.failed))
        parts = []
        for name in workers:
            counts = [f"{self.done.get(name, 0)} done"]
            if self.running.get(name):
                counts.append(f"{self.running[name]} running")
            if self.failed.get(name):
                counts.append(f"{self.failed[name]} failed")
            parts.append(f"{name}: {', '.join(counts)}")
        if self.waiting:
            parts.append(f"{self.waiting} waiting")
        if self.retried:
            parts.append(f"{self.retried} retried")
        return " · ".join(parts)


def register_deployment(pipeline: Pipeline, settings: Settings, pool: str) -> str:
    """The pipeline's `backfill` deployment on `pool` (registered again each time: cheap, and
    it follows the pipeline's parameters); returns its id."""
    from conveyor.backends.prefect_flow import build_flow
    from conveyor.backends.prefect_pool import flow_entrypoint, register
    from conveyor.ops.run import build_engine

    engine = build_engine(settings, runner="inprocess", hooks=[])  # for the flow's signature
    flow = build_flow(engine, pipeline, tags=("backfill",))
    return register(
        flow,
        name=DEPLOYMENT,
        pool=pool,
        entrypoint=flow_entrypoint("pipeline", pipeline.name),
        env={"CONVEYOR_DEPLOYED_ROOT": str(settings.project_root)},
        tags=["conveyor", "backfill"],
        description=f"one backfill batch of {pipeline.name}, for the workers of pool {pool}",
    )


def backfill_on_pool(
    target: Pipeline | str,
    start: date,
    end: date,
    *,
    pool: str,
    max_active: int | None = None,
    reprocess: str = "missing",
    batch: int | None = None,
    dry_run: bool = False,
    reverse: bool = False,
    params: Mapping[str, Any] | None = None,
    runner: str | None = None,
    cache: bool = True,
    force_steps: Sequence[str] = (),
    max_parallel: int | None = None,
    retries: int = 2,
    settings: Settings | None = None,
    on_progress: Callable[[BatchOutcome], None] | None = None,
    on_status: Callable[[PoolProgress], None] | None = None,
) -> BackfillResult:
    """A backfill whose batches run as flow runs on the workers of work pool `pool`.

    Selection, dry run, resume (`reprocess="missing"`, the default) and the result are those
    of `conveyor.backfill`; `max_active` bounds the flow runs submitted at once (default: no
    bound, the workers' own limits apply); a batch whose worker died runs again up to
    `retries` times. `on_status` gets the per-worker progress every poll.
    """
    from conveyor.backends.prefect_flow import configure
    from conveyor.backends.prefect_server import connect

    settings = settings or Settings.load()
    pipeline = resolve_pipeline(target, settings)
    pipeline, result = prepare(
        pipeline, start, end, concurrency=1, reprocess=reprocess, batch=batch,
        reverse=reverse, params=params, settings=settings,
    )  # fmt: skip
    if dry_run or not result.batches:
        return result
    connect(settings)
    configure(settings)
    deployment_id = register_deployment(pipeline, settings, pool)
    env = {"CONVEYOR_CACHE": "1" if cache else "0"}
    if runner:  # else each worker's own default (the compose stack's: docker)
        env["CONVEYOR_RUNNER"] = runner
    if force_steps:
        env["CONVEYOR_FORCE_STEPS"] = ",".join(force_steps)
    if max_parallel:
        env["CONVEYOR_MAX_PARALLEL"] = str(max_parallel)
    watch = _Watch(
        settings, pipeline, result, dict(params or {}), env, max_active, retries,
        on_progress, on_status,
    )  # fmt: skip
    started = time.perf_counter()
    try:
        from conveyor.backends.prefect_pool import with_pool_client

        asyncio.run(with_pool_client(pool, deployment_id, watch.drive))
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        result.seconds = time.perf_counter() - started
    return result


# A worker tags a flow run it takes before starting its process; one still Pending and untagged
# this long was taken by a worker that stopped or died in between, and nothing else would run it
UNTAGGED_PENDING_SECONDS = 90.0


@dataclass(slots=True)
class _InFlight:
    flow_run_id: str
    began: float
    suspect: int = 0  # polls in a row its worker looked dead
    untagged_since: float | None = None  # first poll that saw it Pending with no worker tag


class _Watch:
    """Submits batches as their dependencies succeed and follows their flow runs."""

    def __init__(
        self,
        settings: Settings,
        pipeline: Pipeline,
        result: BackfillResult,
        params: dict[str, Any],
        env: dict[str, str],
        max_active: int | None,
        retries: int,
        on_progress: Callable[[BatchOutcome], None] | None,
        on_status: Callable[[PoolProgress], None] | None,
    ) -> None:
        self.settings, self.pipeline, self.result = settings, pipeline, result
        self.params, self.env, self.max_active, self.retries = params, env, max_active, retries
        self.on_progress, self.on_status = on_progress, on_status
        self.batches = result.batches
        self.needs = batch_dependencies(pipeline, self.batches)
        self.since = datetime.now(UTC) - timedelta(minutes=10)  # hosts' clocks differ
        self.progress = PoolProgress()
        self.hostname = socket.gethostname()

    def _record(self, outcome: BatchOutcome) -> None:
        self.result.outcomes.append(outcome)
        if self.on_progress is not None:
            self.on_progress(outcome)

    async def drive(self, client: Any) -> None:
        pending = list(range(len(self.batches)))
        status: dict[int, str] = {}
        attempts = dict.fromkeys(pending, 0)
        inflight: dict[int, _InFlight] = {}
        while pending or inflight:
            for i in list(pending):
                if any(status.get(d) == "failed" for d in self.needs[i]):
                    pending.remove(i)
                    status[i] = "failed"
                    self._record(_blocked(self.batches, i, self.needs[i]))
            for i in list(pending):
                if self.max_active and len(inflight) >= self.max_active:
                    break
                if all(status.get(d) == "succeeded" for d in self.needs[i]):
                    pending.remove(i)
                    attempts[i] += 1
                    flow_run_id = await self._submit(client, i, attempts[i])
                    inflight[i] = _InFlight(flow_run_id, time.perf_counter())
            if not inflight:
                if pending and not any(all(d in status for d in self.needs[i]) for i in pending):
                    raise AssertionError(f"backfill batches wait on each other: {pending}")
                continue
            states = await client.states([f.flow_run_id for f in inflight.values()])
            records = self._records()
            self.progress = PoolProgress(
                done=self.progress.done, failed=self.progress.failed,
                waiting=len(pending), retried=self.progress.retried,
            )  # fmt: skip
            for i, flight in list(inflight.items()):
                state = states.get(flight.flow_run_id)
                if state is None:
                    continue
                final, kind, message = state.final, state.state, state.message
                if not final:
                    why = await self._dead(flight, state, records, client)
                    if why is not None:
                        await client.mark_crashed(flight.flow_run_id, why)
                        final, kind, message = True, "CRASHED", why
                worker = state.worker or "(not started)"
                if not final:
                    if state.state == "RUNNING":
                        self.progress.running[worker] = self.progress.running.get(worker, 0) + 1
                    else:
                        self.progress.waiting += 1
                    continue
                del inflight[i]
                batch = self.batches[i]
                run = records.get(flight.flow_run_id)
                seconds = time.perf_counter() - flight.began
                if kind == "CRASHED" and attempts[i] <= self.retries:
                    self.progress.retried += 1
                    pending.insert(0, i)  # the remaining workers take it
                    continue
                ok = kind == "COMPLETED"
                outcome = BatchOutcome(
                    batch, "succeeded" if ok else "failed", run.run_id if run else None,
                    None if ok else f"{kind.lower()}: {message or (run.error if run else '')}",
                    seconds,
                )  # fmt: skip
                counts = self.progress.done if ok else self.progress.failed
                counts[worker] = counts.get(worker, 0) + len(batch.dates)
                status[i] = outcome.status
                self._record(outcome)
            if self.on_status is not None:
                self.on_status(self.progress)
            if inflight:
                await asyncio.sleep(POLL_SECONDS)

    async def _submit(self, client: Any, i: int, attempt: int) -> str:
        batch = self.batches[i]
        name = f"{self.pipeline.name} {batch.label()}"
        name += f" (try {attempt})" if attempt > 1 else ""
        parameters = {**self.params, **_partition_params(self.pipeline, batch)}
        parameters = {k: str(v) if isinstance(v, date) else v for k, v in parameters.items()}
        flow_run_id: str = await client.submit(
            parameters, name=name, env=self.env, tags=["conveyor", "backfill"]
        )
        return flow_run_id

    def _records(self) -> dict[str, Any]:
        from conveyor.db.lineage import runs_by_tag

        return runs_by_tag(self.settings, self.pipeline.name, FLOW_RUN_TAG, self.since)

    async def _dead(
        self,
        flight: _InFlight,
        state: Any,
        records: Mapping[str, Any],
        client: Any,
    ) -> str | None:
        """Why an unfinished flow run will never finish (its worker died), or None."""
        run = records.get(flight.flow_run_id)
        if run is not None and run.status == "crashed":
            return f"its worker died: conveyor's record says {run.error}"
        if state.state == "PENDING" and not state.worker:
            now = time.perf_counter()
            flight.untagged_since = flight.untagged_since or now
            if now - flight.untagged_since > UNTAGGED_PENDING_SECONDS:
                return (
                    f"no worker started it within {UNTAGGED_PENDING_SECONDS:g} s of taking it "
                    f"(its worker stopped or died in between)"
                )
            return None
        flight.untagged_since = None
        if state.state not in ("PENDING", "RUNNING") or not state.worker:
            return None
        host, _, pid = (state.process or "").rpartition(":")
        gone = False
        if host == self.hostname and pid.isdigit():
            gone = not process_alive(int(pid))
        elif run is None:  # no record yet: the worker's own heartbeat is all there is
            gone = bool(await client.worker_offline(state.worker))
        flight.suspect = flight.suspect + 1 if gone else 0
        if flight.suspect >= 2:  # two polls in a row: not a run that just finished
            return f"its worker {state.worker} is gone"
        return None


def _blocked(batches: Sequence[Batch], i: int, needs: set[int]) -> BatchOutcome:
    labels = ", ".join(batches[d].label() for d in sorted(needs))
    return BatchOutcome(
        batches[i], "failed", None, f"not run: the partitions it reads ({labels}) failed"
    )
