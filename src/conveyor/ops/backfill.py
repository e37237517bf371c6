"""Backfills: run a pipeline over a date range, partition by partition, resumably.

Partition status lives in conveyor's database, so a backfill skips what already succeeded (unless
`reprocess="all"`), and an interrupted or crashed backfill resumes when the same command runs
again. A ranged pipeline (`partition=("start", "end")`) gets consecutive partitions grouped into
one run each (`batch` dates per run); every date's status is still recorded. Within a run the step
cache applies, so a re-backfill after a code change re-runs only the changed step and what
follows it. Under the Prefect engine every run is a flow run tagged `backfill`.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from conveyor.dsl.pipeline import Pipeline
from conveyor.engine.core import Engine
from conveyor.engine.results import RunResult
from conveyor.engine.settings import Settings
from conveyor.errors import ConveyorError, ParameterError
from conveyor.ops.discovery import resolve_pipeline
from conveyor.ops.run import build_engine, resolve_engine

REPROCESS = ("missing", "failed", "all")
DEFAULT_BATCH = 250


@dataclass(frozen=True, slots=True)
class Batch:
    """The partition dates one run processes (one date unless the pipeline is ranged)."""

    dates: tuple[date, ...]

    @property
    def start(self) -> date:
        return self.dates[0]

    @property
    def end(self) -> date:
        return self.dates[-1]

    def label(self) -> str:
        return str(self.start) if len(self.dates) == 1 else f"{self.start}..{self.end}"


@dataclass(slots=True)
class BatchOutcome:
    batch: Batch
    status: str  # "succeeded" | "failed"
    run_id: str | None = None
    error: str | None = None
    seconds: float = 0.0
    run: RunResult | None = field(default=None, repr=False)


@dataclass(slots=True)
class BackfillResult:
    """What a backfill did: runs, and per-partition counts."""

    pipeline: str
    selected: list[date]
    skipped: list[date]
    batches: list[Batch]
    outcomes: list[BatchOutcome] = field(default_factory=list)
    interrupted: bool = False
    seconds: float = 0.0

    def dates_with(self, status: str) -> list[date]:
        return [d for o in self.outcomes if o.status == status for d in o.batch.dates]

    @property
    def ok(self) -> bool:
        return (
            not self.interrupted
            and not self.dates_with("failed")
            and len(self.outcomes) == len(self.batches)
        )

    def summary(self) -> str:
        lines = [
            f"backfill of {self.pipeline}: {len(self.dates_with('succeeded'))} partitions "
            f"succeeded, {len(self.skipped)} skipped (already succeeded), "
            f"{len(self.dates_with('failed'))} failed"
            + (", interrupted" if self.interrupted else "")
            + f" in {self.seconds:.1f}s ({len(self.outcomes)} of {len(self.batches)} runs)"
        ]
        for outcome in self.outcomes:
            if outcome.status == "failed":
                first = (outcome.error or "failed").strip().splitlines()[0]
                lines.append(f"  failed {outcome.batch.label()}: {first}")
        return "\n".join(lines)


def select_partitions(
    pipeline: Pipeline,
    start: date,
    end: date,
    statuses: Mapping[date, str],
    reprocess: str = "missing",
) -> tuple[list[date], list[date]]:
    """(partitions to run, partitions skipped) of the pipeline's calendar in [start, end].

    `missing` runs every partition that has not succeeded (never run, failed, interrupted);
    `failed` only those recorded as failed; `all` every partition.
    """
    if reprocess not in REPROCESS:
        raise ParameterError(f"--reprocess {reprocess!r}: choose one of {', '.join(REPROCESS)}")
    if end < start:
        raise ParameterError(f"--end {end} is before --start {start}")
    dates = pipeline.calendar.dates(start, end)
    if reprocess == "all":
        return dates, []
    if reprocess == "failed":
        chosen = [d for d in dates if statuses.get(d) == "failed"]
    else:
        chosen = [d for d in dates if statuses.get(d) != "succeeded"]
    chosen_set = set(chosen)
    return chosen, [d for d in dates if d not in chosen_set]


def group_batches(
    pipeline: Pipeline, selected: Sequence[date], batch: int | None, reverse: bool = False
) -> list[Batch]:
    """One batch per date, or for ranged pipelines runs of consecutive calendar dates."""
    if not selected:
        return []
    if not pipeline.ranged:
        batches = [Batch((d,)) for d in selected]
    else:
        size = DEFAULT_BATCH if batch is None else batch
        if size < 1:
            raise ParameterError(f"--batch must be at least 1, got {size}")
        calendar = pipeline.calendar.dates(selected[0], selected[-1])
        position = {d: i for i, d in enumerate(calendar)}
        batches, current = [], [selected[0]]
        for day in selected[1:]:
            contiguous = position[day] == position[current[-1]] + 1
            if contiguous and len(current) < size:
                current.append(day)
            else:
                batches.append(Batch(tuple(current)))
                current = [day]
        batches.append(Batch(tuple(current)))
    return list(reversed(batches)) if reverse else batches


def dates_before(pipeline: Pipeline, day: date, count: int) -> list[date]:
    """The `count` calendar dates before `day` (fewer at the start of the calendar)."""
    if count <= 0:
        return []
    window = max(31, 3 * count + 14)  # calendar days that surely hold `count` partitions
    return pipeline.calendar.dates(day - timedelta(days=window), day - timedelta(days=1))[-count:]


def batch_dependencies(pipeline: Pipeline, batches: Sequence[Batch]) -> list[set[int]]:
    """For each batch, the batches holding the look-back dates of its partitions: with
    `depends_on_past`, a partition reads what the ones before it wrote, so those run first."""
    owner = {day: i for i, one in enumerate(batches) for day in one.dates}
    needs: list[set[int]] = []
    for i, one in enumerate(batches):
        before = dates_before(pipeline, one.start, pipeline.depends_on_past)
        needs.append({owner[d] for d in before if d in owner and owner[d] != i})
    return needs


def missing_lookback(
    pipeline: Pipeline, batches: Sequence[Batch], statuses: Mapping[date, str]
) -> list[date]:
    """Look-back dates the backfill neither runs nor finds succeeded: it cannot start."""
    chosen = {day for one in batches for day in one.dates}
    missing: set[date] = set()
    for one in batches:
        for day in dates_before(pipeline, one.start, pipeline.depends_on_past):
            if day not in chosen and statuses.get(day) != "succeeded":
                missing.add(day)
    return sorted(missing)


def _partition_params(pipeline: Pipeline, batch: Batch) -> dict[str, Any]:
    if isinstance(pipeline.partition, tuple):
        return {pipeline.partition[0]: batch.start, pipeline.partition[1]: batch.end}
    if pipeline.partition is None:
        raise ParameterError(
            f"pipeline {pipeline.name!r} has no partition parameter; only partitioned pipelines "
            f"(a `date` parameter, or partition=...) can be backfilled"
        )
    return {pipeline.partition: batch.start}


def prepare(
    target: Pipeline | str,
    start: date,
    end: date,
    *,
    concurrency: int,
    reprocess: str,
    batch: int | None,
    reverse: bool,
    params: Mapping[str, Any] | None,
    settings: Settings,
) -> tuple[Pipeline, BackfillResult]:
    """Check the options, select the partitions and group them: the backfill before it runs
    (the same for a local backfill and one on a work pool)."""
    from conveyor.db.lineage import partition_status

    pipeline = resolve_pipeline(target, settings)
    if concurrency < 1:
        raise ParameterError(f"--concurrency must be at least 1, got {concurrency}")
    if reverse and pipeline.depends_on_past:
        raise ParameterError(
            f"--reverse: pipeline {pipeline.name!r} reads what its earlier partitions wrote "
            f"(depends_on_past={pipeline.depends_on_past}), so they must run first"
        )
    lookback = dates_before(pipeline, start, pipeline.depends_on_past)
    statuses = partition_status(settings, pipeline.name, lookback[0] if lookback else start, end)
    selected, skipped = select_partitions(pipeline, start, end, statuses, reprocess)
    batches = group_batches(pipeline, selected, batch, reverse)
    for one in batches[:1]:  # parameters are checked before anything runs
        pipeline.bind({**(params or {}), **_partition_params(pipeline, one)})
    missing = missing_lookback(pipeline, batches, statuses)
    if missing:  # checked before anything runs or writes
        raise ParameterError(
            f"backfill of {pipeline.name} from {start}: its partitions read what the "
            f"{pipeline.depends_on_past} partition(s) before each wrote (depends_on_past), and "
            f"{', '.join(map(str, missing[:5]))}{' ...' if len(missing) > 5 else ''} have not "
            f"succeeded; start the backfill at {missing[0]} or earlier"
        )
    return pipeline, BackfillResult(pipeline.name, selected, skipped, batches)


def backfill(
    target: Pipeline | str,
    start: date,
    end: date,
    *,
    concurrency: int = 1,
    reprocess: str = "missing",
    batch: int | None = None,
    dry_run: bool = False,
    reverse: bool = False,
    params: Mapping[str, Any] | None = None,
    engine: str = "auto",
    runner: str | None = None,
    cache: bool = True,
    force_steps: Sequence[str] = (),
    max_parallel: int | None = None,
    settings: Settings | None = None,
    on_progress: Callable[[BatchOutcome], None] | None = None,
) -> BackfillResult:
    """Run a pipeline for every partition date in [start, end] that needs it; resumable.

    Args:
        target: a `@pipeline` object, a pipeline name, or `path.py:attr`.
        start, end: the first and last partition dates (inclusive).
        concurrency: runs at once.
        reprocess: "missing" (every date not yet succeeded), "failed", or "all".
        batch: dates per run for a ranged pipeline (default: its own batching).
        dry_run: select and group the partitions, run nothing.
        reverse: newest partitions first.
        params: the pipeline's other parameters.
        engine, runner, cache, force_steps, max_parallel, settings: as for `conveyor.run`.
        on_progress: called with each finished batch's outcome.

    Returns:
        A BackfillResult: the runs, and the partition dates by status.
    """
    settings = settings or Settings.load()
    pipeline, result = prepare(
        target, start, end, concurrency=concurrency, reprocess=reprocess, batch=batch,
        reverse=reverse, params=params, settings=settings,
    )  # fmt: skip
    batches = result.batches
    if dry_run or not batches:
        return result
    needs = batch_dependencies(pipeline, batches)
    chosen = resolve_engine(engine, settings)
    per_run = max_parallel or max(1, (os.cpu_count() or 2) // concurrency)
    local = build_engine(
        settings, runner=runner, cache=cache, force_steps=force_steps,
        max_parallel=per_run, tags=("backfill",),
    )  # fmt: skip
    started = time.perf_counter()

    def record(outcome: BatchOutcome) -> None:
        result.outcomes.append(outcome)
        if on_progress is not None:
            on_progress(outcome)

    try:
        if chosen == "prefect":
            asyncio.run(
                _with_prefect(local, pipeline, batches, needs, params or {}, concurrency, record)
            )
        else:
            _with_threads(local, pipeline, batches, needs, params or {}, concurrency, record)
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        local.runner.close()
        result.seconds = time.perf_counter() - started
    return result


def _outcome(
    batch: Batch, run: RunResult | None, error: BaseException | None, began: float
) -> BatchOutcome:
    seconds = time.perf_counter() - began
    if run is not None:
        status = "succeeded" if run.ok else "failed"
        return BatchOutcome(batch, status, run.run_id, run.error, seconds, run)
    return BatchOutcome(batch, "failed", None, f"{type(error).__name__}: {error}", seconds)


def _blocked(batch: Batch, needs: set[int], batches: Sequence[Batch], began: float) -> BatchOutcome:
    labels = ", ".join(batches[i].label() for i in sorted(needs))
    return _outcome(
        batch, None, ParameterError(f"not run: the partitions it reads ({labels}) failed"), began
    )


def _with_threads(
    engine: Engine,
    pipeline: Pipeline,
    batches: list[Batch],
    needs: list[set[int]],
    params: Mapping[str, Any],
    concurrency: int,
    record: Callable[[BatchOutcome], None],
) -> None:
    """Run batches on a thread pool, each once the batches it depends on have succeeded."""

    def one(batch: Batch) -> BatchOutcome:
        began = time.perf_counter()
        try:
            run = engine.run(pipeline, {**params, **_partition_params(pipeline, batch)})
        except ConveyorError as exc:
            return _outcome(batch, None, exc, began)
        return _outcome(batch, run, None, began)

    pending = list(range(len(batches)))
    status: dict[int, str] = {}
    running: dict[Future[BatchOutcome], int] = {}
    pool = ThreadPoolExecutor(concurrency, thread_name_prefix="conveyor-backfill")
    try:
        while pending or running:
            for i in list(pending):
                if any(status.get(d) == "failed" for d in needs[i]):
                    pending.remove(i)
                    status[i] = "failed"
                    record(_blocked(batches[i], needs[i], batches, time.perf_counter()))
            for i in list(pending):
                if len(running) >= concurrency:
                    break
                if all(status.get(d) == "succeeded" for d in needs[i]):
                    pending.remove(i)
                    running[pool.submit(one, batches[i])] = i
            if not running:  # every pending batch waits on one settled above: loop again
                if pending and not any(all(d in status for d in needs[i]) for i in pending):
                    raise AssertionError(f"backfill batches wait on each other: {pending}")
                continue
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                i = running.pop(future)
                outcome = future.result()
                status[i] = outcome.status
                record(outcome)
    except BaseException:
        engine.runner.close()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


async def _with_prefect(
    engine: Engine,
    pipeline: Pipeline,
    batches: list[Batch],
    needs: list[set[int]],
    params: Mapping[str, Any],
    concurrency: int,
    record: Callable[[BatchOutcome], None],
) -> None:
    """Run batches as Prefect flow runs, each once the batches it depends on have succeeded."""
    from conveyor.backends.prefect_flow import arun_with_prefect

    slots = asyncio.Semaphore(concurrency)
    finished = [asyncio.Event() for _ in batches]
    status: dict[int, str] = {}

    async def one(i: int) -> None:
        batch = batches[i]
        for dependency in needs[i]:
            await finished[dependency].wait()
        try:
            if any(status.get(d) != "succeeded" for d in needs[i]):
                outcome = _blocked(batch, needs[i], batches, time.perf_counter())
            else:
                async with slots:
                    began = time.perf_counter()
                    try:
                        run = await arun_with_prefect(
                            engine,
                            pipeline,
                            {**params, **_partition_params(pipeline, batch)},
                            tags=("backfill",),
                            flow_run_name=f"{pipeline.name} {batch.label()}",
                        )
                    except ConveyorError as exc:
                        outcome = _outcome(batch, None, exc, began)
                    else:
                        outcome = _outcome(batch, run, None, began)
            status[i] = outcome.status
            record(outcome)
        finally:
            finished[i].set()

    await asyncio.gather(*(one(i) for i in range(len(batches))))
