"""Reading runs back: what ran, with which inputs and outputs, and which models it used.

The chain a prediction run answers to: its load_model step -> the model version it resolved
-> the training run that registered it -> the table ranges that run read -> the code version
(git commit, dirty flag, code hash) and environment lock of the step that trained it.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa

from conveyor.db.database import Database, using
from conveyor.db.models import ModelLoad, PartitionStatus, PipelineRun, StepRun, table_of
from conveyor.db.registry import VERSIONS, ModelRecord
from conveyor.engine.settings import Settings
from conveyor.errors import DatabaseError

RUNS = table_of(PipelineRun)
STEPS = table_of(StepRun)
LOADS = table_of(ModelLoad)
PARTITIONS = table_of(PartitionStatus)


@dataclass(frozen=True, slots=True)
class RunRecord:
    """A pipeline run as recorded."""

    run_id: str
    pipeline: str
    status: str
    params: dict[str, Any]
    partition_start: date | None
    partition_end: date | None
    engine: str
    runner: str
    hostname: str
    pid: int
    started_at: datetime
    finished_at: datetime | None
    duration: float | None
    error: str | None
    heartbeat_at: datetime | None = None
    tags: list[Any] = field(default_factory=list)

    @property
    def worker(self) -> str | None:
        """The Prefect worker that ran it (`conveyor worker start`), if one did."""
        for tag in self.tags or []:
            if isinstance(tag, str) and tag.startswith("worker:"):
                return tag.removeprefix("worker:")
        return None


def as_seen(record: RunRecord, now: datetime | None = None) -> RunRecord:
    """The record as it stands now: a run recorded as running whose process is gone (this
    host) or whose heartbeat went quiet (another host) is shown crashed, without waiting for
    the next run to write that down."""
    from conveyor.db.recorder import HEARTBEAT_SECONDS, STALE_AFTER_BEATS, crash_reason

    if record.status != "running" or record.heartbeat_at is None:
        return record
    now = now or datetime.now(UTC)
    why = crash_reason(record.hostname, record.pid, record.heartbeat_at, record.started_at, now,
                       socket.gethostname(), HEARTBEAT_SECONDS * STALE_AFTER_BEATS)  # fmt: skip
    if why is None:
        return record
    return replace(record, status="crashed", error=f"crashed: {why}")


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One step of a recorded run."""

    step: str
    kind: str
    status: str
    reason: str
    attempts: int
    duration: float | None
    cache_key: str | None
    environment: str | None
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    metrics: dict[str, Any] | None
    error: str | None
    log_path: str | None


@dataclass(frozen=True, slots=True)
class ModelUse:
    """A model version a run loaded, and the run that trained it."""

    step: str
    requested: dict[str, Any]
    model: ModelRecord
    training_run: RunRecord | None


@dataclass(frozen=True, slots=True)
class Lineage:
    """Everything recorded about one run."""

    run: RunRecord
    steps: list[StepRecord]
    models_loaded: list[ModelUse] = field(default_factory=list)
    models_registered: list[ModelRecord] = field(default_factory=list)


def _run_fields() -> list[Any]:
    return [RUNS.c[name] for name in RunRecord.__dataclass_fields__]


def list_runs(
    target: Settings | Database,
    *,
    pipeline: str | None = None,
    status: str | None = None,
    limit: int = 20,
) -> list[RunRecord]:
    """The most recent runs first."""
    query = sa.select(*_run_fields()).order_by(RUNS.c.started_at.desc()).limit(limit)
    if pipeline:
        query = query.where(RUNS.c.pipeline == pipeline)
    if status:
        query = query.where(RUNS.c.status == status)
    with using(target) as db, db.read() as conn:
        return [as_seen(RunRecord(*row)) for row in conn.execute(query)]


def runs_by_tag(
    target: Settings | Database, pipeline: str, prefix: str, since: datetime
) -> dict[str, RunRecord]:
    """Runs of `pipeline` started since `since` carrying a tag `prefix<value>`, by value, as
    they stand now (a dead run shows crashed); the latest run wins per value."""
    query = (
        sa.select(*_run_fields())
        .where(RUNS.c.pipeline == pipeline, RUNS.c.started_at >= since)
        .order_by(RUNS.c.started_at)
    )
    found: dict[str, RunRecord] = {}
    with using(target) as db, db.read() as conn:
        for row in conn.execute(query):
            record = RunRecord(*row)
            for tag in record.tags or []:
                if isinstance(tag, str) and tag.startswith(prefix):
                    found[tag[len(prefix) :]] = as_seen(record)
    return found


def run_lineage(target: Settings | Database, run_id: str) -> Lineage:
    """A run's steps, and the models it loaded or registered. `run_id` may be a unique prefix."""
    with using(target) as db, db.read() as conn:
        matches = conn.execute(
            sa.select(*_run_fields())
            .where(RUNS.c.run_id.startswith(run_id, autoescape=True))
            .order_by(RUNS.c.started_at.desc())
            .limit(5)
        ).all()
        if not matches:
            raise DatabaseError(f"no run {run_id!r} is recorded; `conveyor runs list` shows runs")
        exact = [m for m in matches if m.run_id == run_id]
        if len(matches) > 1 and not exact:
            listed = ", ".join(m.run_id for m in matches)
            raise DatabaseError(f"run id {run_id!r} is ambiguous: {listed}")
        run = as_seen(RunRecord(*(exact or matches)[0]))
        steps = [
            StepRecord(*row)
            for row in conn.execute(
                sa.select(*[STEPS.c[n] for n in StepRecord.__dataclass_fields__])
                .where(STEPS.c.run_id == run.run_id)
                .order_by(STEPS.c.started_at.is_(None), STEPS.c.started_at, STEPS.c.id)
            )
        ]
        loads = conn.execute(
            sa.select(LOADS.c.step.label("load_step"), LOADS.c.requested, VERSIONS)
            .join(VERSIONS, VERSIONS.c.id == LOADS.c.model_version_id)
            .where(LOADS.c.run_id == run.run_id)
            .order_by(LOADS.c.id)
        ).all()
        used = []
        for row in loads:
            model = ModelRecord.from_row(_without(row, "load_step", "requested"))
            trained = None
            if model.run_id:
                found = conn.execute(
                    sa.select(*_run_fields()).where(RUNS.c.run_id == model.run_id)
                ).first()
                trained = RunRecord(*found) if found else None
            used.append(ModelUse(row.load_step, row.requested, model, trained))
        registered = [
            ModelRecord.from_row(r)
            for r in conn.execute(
                sa.select(VERSIONS).where(VERSIONS.c.run_id == run.run_id).order_by("id")
            )
        ]
    return Lineage(run, steps, used, registered)


def partition_status(
    target: Settings | Database, pipeline: str, start: date | None = None, end: date | None = None
) -> dict[date, str]:
    """Status of each recorded partition date of `pipeline` (running, succeeded, failed)."""
    query = sa.select(PARTITIONS.c.partition_date, PARTITIONS.c.status).where(
        PARTITIONS.c.pipeline == pipeline
    )
    if start is not None:
        query = query.where(PARTITIONS.c.partition_date >= start)
    if end is not None:
        query = query.where(PARTITIONS.c.partition_date <= end)
    with using(target) as db, db.read() as conn:
        return dict(conn.execute(query.order_by(PARTITIONS.c.partition_date)).tuples().all())


class _Row:
    """A row's mapping without some keys, for ModelRecord.from_row."""

    def __init__(self, mapping: dict[str, Any]) -> None:
        self._mapping = mapping


def _without(row: Any, *names: str) -> _Row:
    return _Row({k: v for k, v in row._mapping.items() if k not in names})


@dataclass(frozen=True, slots=True)
class RecordedOutput:
    """A step output as recorded: where it came from and its artifact reference (a dict)."""

    run_id: str
    step: str
    output: str
    ref: dict[str, Any]


def find_outputs(
    target: Settings | Database, sha256_prefix: str, limit: int = 20
) -> list[RecordedOutput]:
    """Recorded step outputs whose content hash starts with `sha256_prefix`, newest first."""
    prefix = sha256_prefix.lower()
    query = (
        sa.select(STEPS.c.run_id, STEPS.c.step, STEPS.c.outputs)
        .where(sa.cast(STEPS.c.outputs, sa.Text).contains(prefix, autoescape=True))
        .order_by(STEPS.c.id.desc())
        .limit(200)
    )
    found: list[RecordedOutput] = []
    with using(target) as db, db.read() as conn:
        for run_id, step, outputs in conn.execute(query):
            for name, ref in (outputs or {}).items():
                if str(ref.get("sha256", "")).startswith(prefix):
                    found.append(RecordedOutput(run_id, step, name, ref))
    return found[:limit]


def step_output(target: Settings | Database, run_id: str, step: str, output: str) -> RecordedOutput:
    """One step output of a run (`run_id` may be a unique prefix), or a DatabaseError naming
    what the run has."""
    lineage = run_lineage(target, run_id)
    steps = {s.step: s for s in lineage.steps}
    if step not in steps:
        raise DatabaseError(
            f"run {lineage.run.run_id} has no step {step!r}; its steps: {sorted(steps)}"
        )
    outputs = steps[step].outputs
    if output not in outputs:
        held = sorted(outputs) or "none (it failed, was skipped, or returns nothing)"
        raise DatabaseError(
            f"step {step!r} of run {lineage.run.run_id} has no output {output!r}; outputs: {held}"
        )
    return RecordedOutput(lineage.run.run_id, step, output, outputs[output])
