"""Pipelines as Prefect flows: one flow run per pipeline run, one task run per executed step.

A step the cache holds is settled by the flow itself, without a task run: a task run is three
API round trips, and a fully cached re-run would otherwise pay them for every step. The run's
steps artifact lists every step, cached ones included, and the flow's log names each hit.

The flow is async on purpose: a sync Prefect flow waits for its heartbeat thread's one-second
tick when it ends, an async one does not. Steps still execute through conveyor's runner (venv,
docker, in-process) in worker threads; Prefect records them, retries them as their component
says, forwards their log lines and shows the run in its UI. Every run publishes a table artifact
of its steps (status, cached or why it ran, environment build, start, run and I/O time) and, when
steps report metrics, a table of those: published by a thread of the process, which a run
started here does not wait for (prefect_publishing).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import re
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

from conveyor.backends.prefect_clients import run_clients
from conveyor.backends.prefect_publishing import Table, publish_tables
from conveyor.backends.prefect_server import prefect_variables
from conveyor.dsl.pipeline import Pipeline, Step
from conveyor.engine.core import Engine, Execution, new_run_id
from conveyor.engine.results import CACHED, FAILED, RunResult, StepResult
from conveyor.errors import ParameterError

log = logging.getLogger("conveyor.prefect")


def configure(settings: Any) -> None:
    """Point Prefect at conveyor's managed server (if up) and switch its telemetry off."""
    from conveyor.backends.prefect_server import prefect_home

    prefect_home(settings).mkdir(parents=True, exist_ok=True)
    for key, value in prefect_variables(settings).items():
        os.environ.setdefault(key, value)


def api_settings(settings: Any) -> Any:
    """A context applying the API URL to an already-imported Prefect (it reads env on import)."""
    from contextlib import nullcontext

    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = os.environ.get("PREFECT_API_URL") or prefect_variables(settings).get("PREFECT_API_URL")
    if not url or PREFECT_API_URL.value() == url:
        return nullcontext()
    return temporary_settings(updates={PREFECT_API_URL: url})


def artifact_key(text: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-") or "conveyor"


def _flow_signature(
    pipeline: Pipeline, partition_optional: bool, extra: tuple[str, ...] = ()
) -> inspect.Signature:
    params = []
    for p in pipeline.params:
        annotation = {"date": date, "int": int, "float": float, "str": str, "bool": bool}.get(
            p.codec.json_type or p.annotation, Any
        )
        is_partition = p.name in _partition_names(pipeline)
        default = p.default if p.has_default else inspect.Parameter.empty
        if partition_optional and is_partition:
            default = None
        params.append(
            inspect.Parameter(p.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                              annotation=annotation)
        )  # fmt: skip
    for name in extra:
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                        annotation=Any))  # fmt: skip
    return inspect.Signature(params)


def _partition_names(pipeline: Pipeline) -> tuple[str, ...]:
    if pipeline.partition is None:
        return ()
    return pipeline.partition if isinstance(pipeline.partition, tuple) else (pipeline.partition,)


@dataclass(frozen=True)
class Resolved:
    """Parameters resolved at run time, with what the resolver wants to hear about the run.

    `on_run` gets conveyor's run id once the run exists; `on_end` gets the result (None when the
    run failed before it had one, e.g. in planning). A scheduled tick records both.
    """

    params: dict[str, Any]
    tags: tuple[str, ...] = ()
    on_run: Callable[[str], None] | None = None
    on_end: Callable[[RunResult | None], None] | None = None
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Start:
    """What `arun_with_prefect` wants back from the flow run it starts, passed in a context
    variable rather than built into the flow, so one flow object serves every run of a pipeline
    (building one costs ~4 ms: Prefect derives a parameter schema)."""

    run_name: str | None
    results: dict[str, RunResult] = field(default_factory=dict)
    tables: dict[str, list[Table]] = field(default_factory=dict)


_started: ContextVar[_Start | None] = ContextVar("conveyor_prefect_start", default=None)

# the flows arun_with_prefect built, per engine: (pipeline name, tags) -> (pipeline, flow)
_flows: WeakKeyDictionary[Engine, dict[tuple[str, tuple[str, ...]], tuple[Pipeline, Any]]] = (
    WeakKeyDictionary()
)


def _flow_for(engine: Engine, pipeline: Pipeline, tags: tuple[str, ...]) -> Any:
    """The flow of `pipeline` under `engine`, built on first use."""
    flows = _flows.setdefault(engine, {})
    cached = flows.get((pipeline.name, tags))
    if cached is None or cached[0] is not pipeline:
        cached = (pipeline, build_flow(engine, pipeline, tags=tags))
        flows[(pipeline.name, tags)] = cached
    return cached[1]


# flow-run id -> the conveyor run id its name carries, from naming the flow run (Prefect does
# that before the flow's body runs) until the body starts the run under that id
_run_ids: dict[str, str] = {}


def conveyor_run_id(flow_run_id: str) -> str | None:
    """The conveyor run id a starting flow run was named with (None: not named by conveyor)."""
    return _run_ids.get(flow_run_id)


def build_flow(
    engine: Engine,
    pipeline: Pipeline,
    *,
    tags: tuple[str, ...] = (),
    resolve_params: Callable[[dict[str, Any]], dict[str, Any] | Resolved] | None = None,
    extra_params: tuple[str, ...] = (),
) -> Any:
    """A Prefect flow named after the pipeline whose parameters are the pipeline's.

    `resolve_params` fills in parameters at run time (a scheduled run derives its partition from
    its scheduled time) and may wait for upstream partitions. `extra_params` are optional flow
    parameters the pipeline does not have (a scheduled run's `conveyor_tick`, which shows its
    clock's mapping in the UI); they never reach the pipeline. A run started by
    `arun_with_prefect` hands its RunResult back through `_started`.
    """
    from prefect import flow
    from prefect.runtime import flow_run
    from prefect.settings import get_current_settings
    from prefect.states import Failed

    def name_run() -> str:
        run_id = new_run_id()
        _run_ids[str(flow_run.id)] = run_id
        started = _started.get()
        return f"{(started and started.run_name) or pipeline.name} · {run_id}"

    async def run_pipeline(**params: Any) -> Any:
        resolved = Resolved(params=dict(params))
        if resolve_params is not None:
            got = await asyncio.to_thread(resolve_params, dict(params))
            resolved = got if isinstance(got, Resolved) else Resolved(params=got)
        params = {
            k: v
            for k, v in resolved.params.items()
            if (v is not None or k not in _partition_names(pipeline)) and k not in extra_params
        }
        result = None
        try:
            plan = await asyncio.to_thread(engine.plan, pipeline, params)
            run_id = _run_ids.pop(str(flow_run.id), None)
            execution = engine.execution(
                pipeline, plan, tags + resolved.tags, engine="prefect", run_id=run_id
            )
            if resolved.on_run is not None:
                await asyncio.to_thread(resolved.on_run, execution.state.info.run_id)
            result = await drive_with_prefect(execution, engine.max_parallel)
        finally:
            if resolved.on_end is not None:
                try:
                    await asyncio.to_thread(resolved.on_end, result)
                except Exception as exc:  # recording how it ended must not hide how it ended
                    log.warning("could not record the end of the run: %s", exc)
        assert result is not None  # drive_with_prefect returned, or the finally re-raised
        tables = _tables(execution, result)
        started = _started.get()
        if started is None:  # a worker's or a served flow run: its process may end with it
            await asyncio.wrap_future(publish_tables(str(flow_run.id), tables))
        else:  # arun_with_prefect's: published once Prefect recorded the run's end
            started.results[str(flow_run.id)] = result
            started.tables[str(flow_run.id)] = tables
        if not result.ok:
            return Failed(message=(result.error or "a step failed")[:2000])
        return {"run_id": result.run_id, "status": result.status}

    run_pipeline.__name__ = pipeline.name.replace("-", "_")
    run_pipeline.__qualname__ = run_pipeline.__name__
    run_pipeline.__doc__ = pipeline.description or f"conveyor pipeline {pipeline.name}"
    # Prefect reads the flow's parameters from inspect.signature, which honours __signature__
    # (an attribute functions accept but their type does not declare)
    run_pipeline.__signature__ = _flow_signature(  # type: ignore[attr-defined]
        pipeline, resolve_params is not None, extra_params
    )
    return flow(
        name=pipeline.name,
        flow_run_name=name_run,
        validate_parameters=False,
        persist_result=False,
        # Nothing is persisted (persist_result=False), but without a storage Prefect asks the
        # server for its default one twice a run; this is the folder it would fall back to.
        result_storage=Path(get_current_settings().results.local_storage_path),
        log_prints=False,
    )(run_pipeline)


async def drive_with_prefect(execution: Execution, max_parallel: int) -> RunResult:
    """Run every step as a Prefect task, independent ones concurrently (at most `max_parallel`)."""
    state = execution.state
    state.start()
    slots = asyncio.Semaphore(max_parallel)
    states: dict[str, Any] = {}  # final Prefect states, so downstream task runs link upstream
    pending = {s.name: s for s in state.pipeline.steps}
    running: dict[asyncio.Task[StepResult], str] = {}
    skips: list[asyncio.Task[None]] = []
    try:
        while pending or running:
            waiting = dict(pending)
            state.skip_blocked(pending)
            for name in waiting.keys() - pending.keys():  # skipped: shown, never run
                step = waiting[name]
                upstream = [states[u] for u in step.upstream if u in states]
                reason = state.results[name].reason
                skips.append(asyncio.create_task(_skipped_task(step, reason, upstream, states)))
            for step in state.ready(pending):
                del pending[step.name]
                state.begin(step)
                upstream = [states[u] for u in step.upstream if u in states]
                task = asyncio.create_task(_step_task(execution, step, slots, upstream, states))
                running[task] = step.name
            if not running:
                break
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                running.pop(task)
                state.finish(task.result())
        await asyncio.gather(*skips)
    except BaseException:
        execution.services.runner.close()
        for task in running:
            task.cancel()
        state.interrupt(list(pending) + list(running.values()))
        state.complete()
        raise
    return state.complete()


async def _skipped_task(
    step: Step, reason: str, upstream: list[Any], states: dict[str, Any]
) -> None:
    """A task run for a step conveyor skipped, so the UI shows it and why (Prefect has no
    skipped state type: a Completed state named "Skipped")."""
    from prefect import allow_failure, task
    from prefect.cache_policies import NO_CACHE
    from prefect.states import Completed

    async def skip() -> Any:
        return Completed(name="Skipped", message=reason)

    skipped = task(name=step.name, task_run_name=step.name, cache_policy=NO_CACHE,
                   persist_result=False)(skip)  # fmt: skip
    edges = [allow_failure(s) for s in upstream]
    states[step.name] = await skipped(wait_for=edges, return_state=True)  # type: ignore[misc]


async def _step_task(
    execution: Execution,
    step: Step,
    slots: asyncio.Semaphore,
    upstream: list[Any],
    states: dict[str, Any],
) -> StepResult:
    from prefect import allow_failure, get_run_logger, task
    from prefect.cache_policies import NO_CACHE
    from prefect.runtime import task_run
    from prefect.states import Completed
    from prefect.states import Failed as FailedState

    plan = execution.state.plan.steps.get(step.name)
    if plan is not None and plan.state != "run":
        # A cache hit is settled here, without a task run: a task run costs API round trips
        # (create, running, completed) that dwarf reading the cache index, and a fully cached
        # re-run would pay them per step. The run's steps artifact still lists every step.
        hit = await asyncio.to_thread(execution.steps.cached, step)
        if hit is not None:
            get_run_logger().info("step %s: cached (%s)", step.name, hit.reason)
            return hit
    retries = step.component.spec.retries if step.component and step.component.spec else 0
    holder: dict[str, StepResult] = {}

    async def run_step() -> Any:
        logger = get_run_logger()
        attempt = task_run.run_count or 1
        only = attempt if step.component is not None else None
        result = await asyncio.to_thread(execution.steps.execute, step, only, logger.info)
        holder["result"] = result
        if result.status == FAILED:
            if step.component is not None and attempt <= retries:
                raise RuntimeError((result.error or "failed").splitlines()[0])  # Prefect retries
            return FailedState(message=(result.error or "failed")[:2000])
        return Completed(message="cached" if result.status == CACHED else result.reason)

    step_task = task(
        name=step.name,
        task_run_name=step.name,
        retries=retries,
        retry_delay_seconds=execution.services.retry.delays(retries) or 0,
        cache_policy=NO_CACHE,
        persist_result=False,  # no tags: tagged task runs each ask the API for concurrency slots
    )(run_step)
    async with slots:
        # wait_for on finished states only records the edges the UI's run graph draws; conveyor
        # decided already whether the step may run (a collector that allows failed items runs
        # after one), so a failed upstream must not stop Prefect from starting it. (Prefect
        # types return_state=True as giving a State even for an async task, whose call gives a
        # coroutine of one.)
        edges = [allow_failure(state) for state in upstream]
        states[step.name] = await step_task(wait_for=edges, return_state=True)  # type: ignore[misc]
    return holder.get("result") or StepResult(step.name, step.kind, FAILED, "no result")


def _tables(execution: Execution, result: RunResult) -> list[Table]:
    """The run's steps table, and its metrics table when steps reported metrics."""
    rows = []
    for name, step in result.steps.items():
        plan = execution.state.plan.steps.get(name)
        env = plan.environment if plan else None
        timings = step.timings
        rows.append(
            {
                "step": name,
                "kind": step.kind,
                "status": step.status,
                "cached / why": step.reason,
                "attempts": step.attempts,
                "environment build (s)": round(env.build_seconds, 3) if env and env.built else 0,
                "start": step.started_at.isoformat(timespec="seconds") if step.started_at else "",
                "run (s)": round(timings.get("run", step.duration), 3),
                "I/O (s)": round(timings.get("load", 0) + timings.get("save", 0), 3),
                "total (s)": round(step.duration, 3),
            }
        )
    tables = [
        Table(
            key=artifact_key(f"{result.pipeline}-steps"),
            rows=rows,
            description=f"conveyor run {result.run_id}: {result.summary()}",
        )
    ]
    metrics = [
        {"step": name, "metric": metric, "value": value}
        for name, step in result.steps.items()
        for metric, value in (step.metrics or {}).items()
    ]
    if metrics:
        tables.append(
            Table(
                key=artifact_key(f"{result.pipeline}-metrics"),
                rows=metrics,
                description=f"metrics reported by the steps of run {result.run_id}",
            )
        )
    return tables


def run_with_prefect(
    engine: Engine,
    pipeline: Pipeline,
    params: Mapping[str, Any],
    *,
    tags: tuple[str, ...] = (),
    flow_run_name: str | None = None,
) -> RunResult:
    """Run a pipeline once as a Prefect flow run and return conveyor's RunResult."""
    return asyncio.run(
        arun_with_prefect(engine, pipeline, params, tags=tags, flow_run_name=flow_run_name)
    )


def _check_parameter_size(pipeline: Pipeline, bound: Mapping[str, Any]) -> None:
    """Prefect's server refuses a flow run whose parameters are larger than its limit (512 KiB
    by default) with a bare 422: say which parameter and what to do instead."""
    from prefect.settings import get_current_settings

    from conveyor._runtime.hashing import canonical_json

    limit = get_current_settings().server.api.max_parameter_size
    sizes = {name: len(canonical_json(value).encode()) for name, value in bound.items()}
    if limit <= 0 or sum(sizes.values()) <= limit:
        return
    largest = max(sizes, key=lambda name: sizes[name])
    raise ParameterError(
        f"pipeline {pipeline.name!r}: its parameters are {sum(sizes.values()):,} bytes as JSON "
        f"({largest!r} {sizes[largest]:,}), more than the {limit:,} bytes Prefect's server "
        f"accepts for a flow run (PREFECT_SERVER_API_MAX_PARAMETER_SIZE). Pass large data as a "
        f"file (a Path parameter: conveyor ships its content), or run with --engine local."
    )


async def arun_with_prefect(
    engine: Engine,
    pipeline: Pipeline,
    params: Mapping[str, Any],
    *,
    tags: tuple[str, ...] = (),
    flow_run_name: str | None = None,
) -> RunResult:
    """The async form, for running several flow runs concurrently (backfills)."""
    configure(engine.settings)  # before importing Prefect, which reads its settings on import
    import prefect

    flow = _flow_for(engine, pipeline, tags)
    bound = pipeline.bind(params)  # fail fast, before a flow run exists
    _check_parameter_size(pipeline, bound)
    started = _Start(run_name=flow_run_name)
    token = _started.set(started)
    try:
        with api_settings(engine.settings), prefect.tags(*tags):
            async with run_clients():
                state = await flow(**bound, return_state=True)
            flow_run_id = str(state.state_details.flow_run_id)
            if flow_run_id in started.tables:
                # queued once Prefect recorded the run's end (written alongside, they slowed
                # that write down as much as they took), and not waited for
                publish_tables(flow_run_id, started.tables[flow_run_id])
    finally:
        _started.reset(token)
    result = started.results.get(flow_run_id)
    if result is None:  # the flow failed before its steps ran (planning): raise that error
        await state.aresult()
        raise RuntimeError(f"Prefect flow run ended {state.type.value}: {state.message}")
    result.flow_run_id = flow_run_id
    return result
