"""conveyor's own tables (SQLAlchemy 2 typed models); Alembic migrations create and change them.

    conveyor_runs            one row per pipeline run: status, params, partition, heartbeat, pid
    conveyor_step_runs       one row per step of a run: status, reason, cache key, environment,
                             inputs, outputs (artifact references), timings, error, log path
    conveyor_step_attempts   one row per attempt of a step (retries), with its own heartbeat
    conveyor_partitions      status of each (pipeline, partition date)
    conveyor_artifact_refs   which run and step read or wrote which artifact (for a garbage
                             collector: an artifact nothing references can go)
    conveyor_tables          tables write_table created, and their partition column
    conveyor_model_versions  the model registry: artifact, metrics, params, training range, code
                             version, environment lock, current stage
    conveyor_model_stages    stage history: which stage each version held, from when to when
    conveyor_model_loads     which run loaded which model version (prediction -> model lineage)
    conveyor_clocks          where each replay clock of a schedule stands (its last data date)
    conveyor_clock_ticks     every scheduled tick: when it was due, the data dates it stands
                             for, the run that processed them and how that ended

Changing a model means adding a migration under `migrations/versions/` and bumping
`SCHEMA_REVISION` in `revision.py` (a test checks both agree).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    inspect,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# The Alembic revision these models describe; the database is upgraded when it differs.
from conveyor.db.revision import SCHEMA_REVISION as SCHEMA_REVISION

RUNNING, SUCCEEDED, FAILED, CRASHED = "running", "succeeded", "failed", "crashed"
STAGES = ("candidate", "production", "archived")


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored as naive UTC and read back as aware UTC, on every back end."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: conveyor stores aware (UTC) times")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None else None


JSONDocument = JSON().with_variant(JSONB(), "postgresql")
RowId = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements INTEGER only


class Base(DeclarativeBase):
    type_annotation_map = {  # noqa: RUF012 (SQLAlchemy reads it from the class)
        datetime: UTCDateTime(),
        date: Date(),
        dict[str, Any]: JSONDocument,
        list[Any]: JSONDocument,
        float: Float(),
        str: Text(),
        bool: Boolean(),
    }


class PipelineRun(Base):
    __tablename__ = "conveyor_runs"

    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    pipeline: Mapped[str] = mapped_column(String(200), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    params: Mapped[dict[str, Any]]
    partition_start: Mapped[date | None]
    partition_end: Mapped[date | None]
    engine: Mapped[str] = mapped_column(String(32))
    runner: Mapped[str] = mapped_column(String(32))
    project_root: Mapped[str]
    tags: Mapped[list[Any]]
    code_version: Mapped[dict[str, Any]]
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int]
    started_at: Mapped[datetime] = mapped_column(index=True)
    heartbeat_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    duration: Mapped[float | None]
    plan_seconds: Mapped[float | None]
    error: Mapped[str | None]


class StepRun(Base):
    __tablename__ = "conveyor_step_runs"
    __table_args__ = (UniqueConstraint("run_id", "step", name="uq_conveyor_step_runs_run_step"),)

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("conveyor_runs.run_id", ondelete="CASCADE"), index=True
    )
    step: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str]
    attempts: Mapped[int]
    cache_key: Mapped[str | None] = mapped_column(String(128))
    environment: Mapped[str | None] = mapped_column(String(128))
    inputs: Mapped[dict[str, Any]]
    outputs: Mapped[dict[str, Any]]
    metrics: Mapped[dict[str, Any] | None]
    timings: Mapped[dict[str, Any]]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    duration: Mapped[float | None]
    error: Mapped[str | None]
    log_path: Mapped[str | None]


class StepAttempt(Base):
    __tablename__ = "conveyor_step_attempts"
    __table_args__ = (
        UniqueConstraint("run_id", "step", "attempt", name="uq_conveyor_step_attempts"),
    )

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("conveyor_runs.run_id", ondelete="CASCADE"), index=True
    )
    step: Mapped[str] = mapped_column(String(200))
    attempt: Mapped[int]
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str]
    started_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    error: Mapped[str | None]


class PartitionStatus(Base):
    __tablename__ = "conveyor_partitions"

    pipeline: Mapped[str] = mapped_column(String(200), primary_key=True)
    partition_date: Mapped[date] = mapped_column(primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    run_id: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime]


class ArtifactRefRow(Base):
    __tablename__ = "conveyor_artifact_refs"
    __table_args__ = (
        UniqueConstraint("run_id", "step", "role", "name", name="uq_conveyor_artifact_refs"),
    )

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    format: Mapped[str] = mapped_column(String(16))
    json_type: Mapped[str | None] = mapped_column(String(16))
    size: Mapped[int] = mapped_column(BigInteger)
    run_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("conveyor_runs.run_id", ondelete="CASCADE"), index=True
    )
    step: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(8))  # "input" | "output"
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]


class ManagedTable(Base):
    __tablename__ = "conveyor_tables"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    partition_col: Mapped[str | None] = mapped_column(String(63))
    created_at: Mapped[datetime]
    created_by_run: Mapped[str | None] = mapped_column(String(64))


class ModelVersion(Base):
    __tablename__ = "conveyor_model_versions"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_conveyor_model_versions"),)

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[int]
    stage: Mapped[str] = mapped_column(String(16))
    artifact_sha256: Mapped[str] = mapped_column(String(64), index=True)
    artifact_format: Mapped[str] = mapped_column(String(16))
    artifact_type: Mapped[str | None] = mapped_column(String(16))
    artifact_size: Mapped[int] = mapped_column(BigInteger)
    artifact_location: Mapped[str]
    metrics: Mapped[dict[str, Any]]
    params: Mapped[dict[str, Any]]
    train_start: Mapped[date | None]
    train_end: Mapped[date | None]
    training_data: Mapped[list[Any]]
    git_sha: Mapped[str | None] = mapped_column(String(64))
    git_dirty: Mapped[bool | None]
    code_hash: Mapped[str | None] = mapped_column(String(128))
    environment_key: Mapped[str | None] = mapped_column(String(128))
    environment_lock_path: Mapped[str | None]
    environment_lock: Mapped[str | None]
    interpreter: Mapped[str | None] = mapped_column(String(32))
    run_id: Mapped[str | None] = mapped_column(String(64), index=True)
    pipeline: Mapped[str | None] = mapped_column(String(200))
    step: Mapped[str | None] = mapped_column(String(200))
    producing_step: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime]


class ModelStage(Base):
    __tablename__ = "conveyor_model_stages"
    __table_args__ = (Index("ix_conveyor_model_stages_name_stage", "name", "stage"),)

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    model_version_id: Mapped[int] = mapped_column(
        ForeignKey("conveyor_model_versions.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[int]
    stage: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    note: Mapped[str]


class ModelLoad(Base):
    __tablename__ = "conveyor_model_loads"

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(64), index=True)
    step: Mapped[str] = mapped_column(String(200))
    model_version_id: Mapped[int] = mapped_column(
        ForeignKey("conveyor_model_versions.id", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[int]
    requested: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


class Clock(Base):
    __tablename__ = "conveyor_clocks"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    pipeline: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    start: Mapped[date]
    pace: Mapped[int]
    position: Mapped[date | None]
    ticks: Mapped[int]
    started_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class ClockTick(Base):
    __tablename__ = "conveyor_clock_ticks"
    __table_args__ = (
        UniqueConstraint("clock", "scheduled_at", name="uq_conveyor_clock_ticks_scheduled"),
    )

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    clock: Mapped[str] = mapped_column(String(200), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    tick: Mapped[int | None]
    scheduled_at: Mapped[datetime]
    flow_run_id: Mapped[str | None] = mapped_column(String(64))
    first_date: Mapped[date]
    last_date: Mapped[date]
    partition_start: Mapped[date | None]
    partition_end: Mapped[date | None]
    retry_of: Mapped[int | None]
    retried: Mapped[bool]
    status: Mapped[str] = mapped_column(String(16))
    run_id: Mapped[str | None] = mapped_column(String(64), index=True)
    claimed_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]


def table_of(model: type[Base]) -> Table:
    """The Table a model is mapped to, for Core statements (insert, update, delete)."""
    table = inspect(model).local_table
    # SQLAlchemy types it as any FromClause; a declarative model with __tablename__ maps a Table
    assert isinstance(table, Table)
    return table
