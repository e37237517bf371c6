"""The model registry: versions, the stage each holds, and when it held it.

A registered version starts as `candidate`. Promoting a version makes it `production` and
archives the previous production version; rolling back re-promotes the version that was in
production before the current one. Every stage a version holds is a span in
`conveyor_model_stages` (from, until), so `resolve(..., as_of=d)` can answer "which version was
in production on date d" long after later promotions.

Stage spans are in *effective* time, which `at=` sets (default: now). Pipelines register and
promote in data time: the register_model host step of a partitioned run registers its version
as of the run's training cutoff (the start of its last partition date, UTC), so replaying
history resolves the models that existed at each point of it. `created_at` stays the wall-clock
time of registration, for the record.

`as_of=d` means the version in production at the **end** of day d (UTC): a version promoted
during d serves d. Runs for a day are normally made after it ends (a partition offset of -1),
so by then the answer no longer changes and re-running the day gives the same model.

Registration is idempotent: registering an artifact already registered under the same name
returns the existing version instead of adding one (a re-run with a cached training step).
The registry stores references only; it never loads a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from conveyor.db.database import Database, lock_key, using
from conveyor.db.models import STAGES, ModelLoad, ModelStage, ModelVersion, table_of
from conveyor.dsl.artifacts import ArtifactRef, Codec
from conveyor.engine.settings import Settings
from conveyor.errors import RegistryError

VERSIONS = table_of(ModelVersion)
SPANS = table_of(ModelStage)
LOADS = table_of(ModelLoad)


@dataclass(frozen=True, slots=True)
class NewModel:
    """What registering a model version records (all but the artifact are optional)."""

    name: str
    artifact: ArtifactRef
    location: str
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    train_start: date | None = None
    train_end: date | None = None
    training_data: list[dict[str, Any]] = field(default_factory=list)
    git_sha: str | None = None
    git_dirty: bool | None = None
    code_hash: str | None = None
    environment_key: str | None = None
    environment_lock_path: str | None = None
    environment_lock: str | None = None
    interpreter: str | None = None
    run_id: str | None = None
    pipeline: str | None = None
    step: str | None = None
    producing_step: str | None = None


@dataclass(frozen=True, slots=True)
class ModelRecord:
    """A registered model version as stored."""

    id: int
    name: str
    version: int
    stage: str
    artifact: ArtifactRef
    location: str
    metrics: dict[str, float]
    params: dict[str, Any]
    train_start: date | None
    train_end: date | None
    training_data: list[dict[str, Any]]
    git_sha: str | None
    git_dirty: bool | None
    code_hash: str | None
    environment_key: str | None
    environment_lock_path: str | None
    environment_lock: str | None
    interpreter: str | None
    run_id: str | None
    pipeline: str | None
    step: str | None
    producing_step: str | None
    created_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> ModelRecord:
        data = dict(row._mapping)
        artifact = ArtifactRef(
            data.pop("artifact_sha256"),
            Codec(data.pop("artifact_format"), data.pop("artifact_type")),
            int(data.pop("artifact_size")),
        )
        location = data.pop("artifact_location")
        return cls(artifact=artifact, location=location, **data)

    @property
    def pins(self) -> tuple[str, ...]:
        """The pinned requirements of the environment that produced the model."""
        return tuple((self.environment_lock or "").split())


@dataclass(frozen=True, slots=True)
class StageSpan:
    """A stage one version held, from `started_at` until `ended_at` (None: still holds it)."""

    version: int
    stage: str
    started_at: datetime
    ended_at: datetime | None
    note: str


def _now(at: datetime | None) -> datetime:
    if at is None:
        return datetime.now(UTC)
    if at.tzinfo is None:
        raise ValueError(f"at={at!r} has no time zone; pass an aware datetime")
    return at


def _lock_name(conn: Connection, db: Database, name: str) -> None:
    if db.dialect == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key("model", name)})


def _get(conn: Connection, name: str, version: int) -> ModelRecord:
    row = conn.execute(
        sa.select(VERSIONS).where(VERSIONS.c.name == name, VERSIONS.c.version == version)
    ).first()
    if row is None:
        known = conn.execute(
            sa.select(VERSIONS.c.version).where(VERSIONS.c.name == name).order_by("version")
        ).scalars()
        listed = ", ".join(f"v{v}" for v in known)
        raise RegistryError(
            f"model {name!r} has no version {version}"
            + (f"; its versions are {listed}" if listed else "; no version is registered")
        )
    return ModelRecord.from_row(row)


def _set_stage(conn: Connection, record: ModelRecord, stage: str, at: datetime, note: str) -> None:
    conn.execute(
        sa.update(SPANS)
        .where(SPANS.c.model_version_id == record.id, SPANS.c.ended_at.is_(None))
        .values(ended_at=at)
    )
    conn.execute(sa.update(VERSIONS).where(VERSIONS.c.id == record.id).values(stage=stage))
    conn.execute(
        sa.insert(SPANS).values(
            model_version_id=record.id,
            name=record.name,
            version=record.version,
            stage=stage,
            started_at=at,
            ended_at=None,
            note=note,
        )
    )


def register(target: Settings | Database, model: NewModel, *, at: datetime | None = None) -> int:
    """Record a model version as `candidate` from `at` (effective time; default now); return
    its version number (the existing one if this artifact is already registered under this
    name)."""
    at = _now(at)
    with using(target) as db, db.write() as conn:
        _lock_name(conn, db, model.name)
        same = conn.execute(
            sa.select(VERSIONS.c.version).where(
                VERSIONS.c.name == model.name, VERSIONS.c.artifact_sha256 == model.artifact.sha256
            )
        ).scalar()
        if same is not None:
            return int(same)
        latest = conn.execute(
            sa.select(sa.func.max(VERSIONS.c.version)).where(VERSIONS.c.name == model.name)
        ).scalar()
        version = (latest or 0) + 1
        values = {k: getattr(model, k) for k in NewModel.__dataclass_fields__}
        artifact, location = values.pop("artifact"), values.pop("location")
        inserted = conn.execute(
            sa.insert(VERSIONS)
            .values(
                **values,
                version=version,
                stage="candidate",
                artifact_sha256=artifact.sha256,
                artifact_format=artifact.codec.format,
                artifact_type=artifact.codec.json_type,
                artifact_size=artifact.size,
                artifact_location=location,
                created_at=datetime.now(UTC),
            )
            .returning(VERSIONS.c.id)
        ).scalar_one()
        record = _get(conn, model.name, version)
        assert record.id == inserted
        _set_stage(conn, record, "candidate", at, "registered")
        return version


def promote(
    target: Settings | Database,
    name: str,
    version: int,
    *,
    at: datetime | None = None,
    note: str = "promoted",
) -> ModelRecord:
    """Make `version` the production version of `name`; the previous one is archived."""
    at = _now(at)
    with using(target) as db, db.write() as conn:
        _lock_name(conn, db, name)
        record = _get(conn, name, version)
        if record.stage == "production":
            return record
        registered = conn.execute(
            sa.select(sa.func.min(SPANS.c.started_at)).where(SPANS.c.model_version_id == record.id)
        ).scalar()
        if registered is not None and at < registered:
            raise RegistryError(
                f"model {name!r} v{version} was registered as of {registered:%Y-%m-%d %H:%M} "
                f"UTC; it cannot be promoted before that ({at:%Y-%m-%d %H:%M} UTC)"
            )
        for current in _in_stage(conn, name, "production"):
            _set_stage(conn, current, "archived", at, f"replaced by v{version}")
        _set_stage(conn, record, "production", at, note)
        return _get(conn, name, version)


def rollback(target: Settings | Database, name: str, *, at: datetime | None = None) -> ModelRecord:
    """Re-promote the version that was in production before the current one."""
    at = _now(at)
    with using(target) as db:
        with db.read() as conn:
            current = _in_stage(conn, name, "production")
            if not current:
                _get_any(conn, name)
                raise RegistryError(f"model {name!r} has no production version to roll back")
            previous = conn.execute(
                sa.select(SPANS.c.version)
                .where(
                    SPANS.c.name == name,
                    SPANS.c.stage == "production",
                    SPANS.c.ended_at.is_not(None),
                    SPANS.c.version != current[0].version,
                )
                .order_by(SPANS.c.ended_at.desc(), SPANS.c.id.desc())
                .limit(1)
            ).scalar()
        if previous is None:
            raise RegistryError(
                f"model {name!r}: v{current[0].version} is the first production version; there "
                f"is no earlier one to roll back to"
            )
        return promote(db, name, previous, at=at, note=f"rollback from v{current[0].version}")


def _in_stage(conn: Connection, name: str, stage: str) -> list[ModelRecord]:
    rows = conn.execute(
        sa.select(VERSIONS)
        .where(VERSIONS.c.name == name, VERSIONS.c.stage == stage)
        .order_by(VERSIONS.c.version.desc())
    )
    return [ModelRecord.from_row(r) for r in rows]


def _get_any(conn: Connection, name: str) -> None:
    found = conn.execute(sa.select(VERSIONS.c.id).where(VERSIONS.c.name == name).limit(1)).first()
    if found is None:
        names = conn.execute(sa.select(VERSIONS.c.name).distinct().order_by("name")).scalars()
        listed = ", ".join(names) or "none yet"
        raise RegistryError(f"no model named {name!r} is registered (registered: {listed})")


def resolve(
    target: Settings | Database,
    name: str,
    *,
    stage: str | None = "production",
    version: int | None = None,
    as_of: date | None = None,
) -> ModelRecord:
    """The version `load_model` means: `version=N` exactly, else the latest version holding
    `stage` now, or at the end of day `as_of` (UTC)."""
    with using(target) as db, db.read() as conn:
        _get_any(conn, name)
        if version is not None:
            return _get(conn, name, version)
        stage = stage or "production"
        if stage not in STAGES:
            raise RegistryError(f"stage {stage!r} is not one of {', '.join(STAGES)}")
        if as_of is None:
            found = _in_stage(conn, name, stage)
            if not found:
                raise RegistryError(
                    f"model {name!r} has no {stage} version; promote one with "
                    f"`conveyor models promote {name} VERSION`"
                )
            return found[0]
        instant = datetime.combine(as_of + timedelta(days=1), time.min, UTC)
        held = conn.execute(
            sa.select(SPANS.c.version)
            .where(
                SPANS.c.name == name,
                SPANS.c.stage == stage,
                SPANS.c.started_at < instant,
                sa.or_(SPANS.c.ended_at.is_(None), SPANS.c.ended_at >= instant),
            )
            .order_by(SPANS.c.version.desc())
            .limit(1)
        ).scalar()
        if held is None:
            first = conn.execute(
                sa.select(SPANS.c.version, SPANS.c.started_at)
                .where(SPANS.c.name == name, SPANS.c.stage == stage)
                .order_by(SPANS.c.started_at)
                .limit(1)
            ).first()
            since = (
                f"; its first {stage} version, v{first[0]}, took the stage on "
                f"{first[1]:%Y-%m-%d %H:%M} UTC"
                if first
                else f"; no version has been {stage} yet"
            )
            raise RegistryError(
                f"model {name!r}: no version was {stage} on {as_of} (at the end of that day, "
                f"UTC){since}. Drop as_of= to use the current {stage} version, or see "
                f"`conveyor models show {name}` for the stage history."
            )
        return _get(conn, name, held)


def versions(target: Settings | Database, name: str) -> list[ModelRecord]:
    """Every version of `name`, newest first."""
    with using(target) as db, db.read() as conn:
        _get_any(conn, name)
        rows = conn.execute(
            sa.select(VERSIONS).where(VERSIONS.c.name == name).order_by(VERSIONS.c.version.desc())
        )
        return [ModelRecord.from_row(r) for r in rows]


def history(target: Settings | Database, name: str) -> list[StageSpan]:
    """The stage spans of every version of `name`, in the order they began."""
    with using(target) as db, db.read() as conn:
        rows = conn.execute(
            sa.select(SPANS.c.version, SPANS.c.stage, SPANS.c.started_at, SPANS.c.ended_at)
            .add_columns(SPANS.c.note)
            .where(SPANS.c.name == name)
            .order_by(SPANS.c.started_at, SPANS.c.id)
        )
        return [StageSpan(*r) for r in rows]


@dataclass(frozen=True, slots=True)
class ModelSummary:
    """One registered model name: how many versions, the latest, the one in production."""

    name: str
    versions: int
    latest: int
    production: int | None
    updated_at: datetime


def models(target: Settings | Database) -> list[ModelSummary]:
    """Every registered model name."""
    with using(target) as db, db.read() as conn:
        rows = conn.execute(
            sa.select(
                VERSIONS.c.name,
                sa.func.count(),
                sa.func.max(VERSIONS.c.version),
                sa.func.max(sa.case((VERSIONS.c.stage == "production", VERSIONS.c.version))),
                sa.func.max(VERSIONS.c.created_at),
            )
            .group_by(VERSIONS.c.name)
            .order_by(VERSIONS.c.name)
        )
        return [ModelSummary(*r) for r in rows]


def record_load(
    target: Settings | Database,
    record: ModelRecord,
    *,
    run_id: str,
    step: str,
    requested: dict[str, Any],
) -> None:
    """Remember that a run's step loaded this version (prediction -> model lineage)."""
    with using(target) as db, db.write() as conn:
        conn.execute(
            sa.insert(LOADS).values(
                run_id=run_id,
                step=step,
                model_version_id=record.id,
                name=record.name,
                version=record.version,
                requested=requested,
                created_at=datetime.now(UTC),
            )
        )
