"""conveyor's initial schema: runs, steps, attempts, partitions, artifacts, tables, models.

Revision ID: 0001
Revises:
Create Date: 2026-11-22

Migrations spell their types out rather than importing conveyor.db.models, so they keep
describing the schema as it was when they were written.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIME = sa.DateTime()  # naive UTC; conveyor.db.models.UTCDateTime attaches the zone on read


def _id() -> sa.Column[int]:
    return sa.Column("id", ROW_ID, primary_key=True, autoincrement=True)


def _run_id(foreign: bool = True) -> sa.Column[str]:
    if foreign:
        return sa.Column(
            "run_id",
            sa.String(64),
            sa.ForeignKey("conveyor_runs.run_id", ondelete="CASCADE"),
            nullable=False,
        )
    return sa.Column("run_id", sa.String(64), nullable=True)


def upgrade() -> None:
    op.create_table(
        "conveyor_runs",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("pipeline", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("params", JSON, nullable=False),
        sa.Column("partition_start", sa.Date(), nullable=True),
        sa.Column("partition_end", sa.Date(), nullable=True),
        sa.Column("engine", sa.String(32), nullable=False),
        sa.Column("runner", sa.String(32), nullable=False),
        sa.Column("project_root", sa.Text(), nullable=False),
        sa.Column("tags", JSON, nullable=False),
        sa.Column("code_version", JSON, nullable=False),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", TIME, nullable=False),
        sa.Column("heartbeat_at", TIME, nullable=False),
        sa.Column("finished_at", TIME, nullable=True),
        sa.Column("duration", sa.Float(), nullable=True),
        sa.Column("plan_seconds", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
    )
    op.create_index("ix_conveyor_runs_pipeline", "conveyor_runs", ["pipeline"])
    op.create_index("ix_conveyor_runs_started_at", "conveyor_runs", ["started_at"])
    op.create_index("ix_conveyor_runs_status", "conveyor_runs", ["status"])

    op.create_table(
        "conveyor_step_runs",
        _id(),
        _run_id(),
        sa.Column("step", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("cache_key", sa.String(128), nullable=True),
        sa.Column("environment", sa.String(128), nullable=True),
        sa.Column("inputs", JSON, nullable=False),
        sa.Column("outputs", JSON, nullable=False),
        sa.Column("metrics", JSON, nullable=True),
        sa.Column("timings", JSON, nullable=False),
        sa.Column("started_at", TIME, nullable=True),
        sa.Column("finished_at", TIME, nullable=True),
        sa.Column("duration", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("log_path", sa.Text(), nullable=True),
        sa.UniqueConstraint("run_id", "step", name="uq_conveyor_step_runs_run_step"),
    )
    op.create_index("ix_conveyor_step_runs_run_id", "conveyor_step_runs", ["run_id"])

    op.create_table(
        "conveyor_step_attempts",
        _id(),
        _run_id(),
        sa.Column("step", sa.String(200), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("started_at", TIME, nullable=False),
        sa.Column("heartbeat_at", TIME, nullable=False),
        sa.Column("finished_at", TIME, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.UniqueConstraint("run_id", "step", "attempt", name="uq_conveyor_step_attempts"),
    )
    op.create_index("ix_conveyor_step_attempts_run_id", "conveyor_step_attempts", ["run_id"])

    op.create_table(
        "conveyor_partitions",
        sa.Column("pipeline", sa.String(200), primary_key=True),
        sa.Column("partition_date", sa.Date(), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
    )
    op.create_index("ix_conveyor_partitions_status", "conveyor_partitions", ["status"])

    op.create_table(
        "conveyor_artifact_refs",
        _id(),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("json_type", sa.String(16), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        _run_id(),
        sa.Column("step", sa.String(200), nullable=False),
        sa.Column("role", sa.String(8), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.UniqueConstraint("run_id", "step", "role", "name", name="uq_conveyor_artifact_refs"),
    )
    op.create_index("ix_conveyor_artifact_refs_run_id", "conveyor_artifact_refs", ["run_id"])
    op.create_index("ix_conveyor_artifact_refs_sha256", "conveyor_artifact_refs", ["sha256"])

    op.create_table(
        "conveyor_tables",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("partition_col", sa.String(63), nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("created_by_run", sa.String(64), nullable=True),
    )

    op.create_table(
        "conveyor_model_versions",
        _id(),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("artifact_sha256", sa.String(64), nullable=False),
        sa.Column("artifact_format", sa.String(16), nullable=False),
        sa.Column("artifact_type", sa.String(16), nullable=True),
        sa.Column("artifact_size", sa.BigInteger(), nullable=False),
        sa.Column("artifact_location", sa.Text(), nullable=False),
        sa.Column("metrics", JSON, nullable=False),
        sa.Column("params", JSON, nullable=False),
        sa.Column("train_start", sa.Date(), nullable=True),
        sa.Column("train_end", sa.Date(), nullable=True),
        sa.Column("training_data", JSON, nullable=False),
        sa.Column("git_sha", sa.String(64), nullable=True),
        sa.Column("git_dirty", sa.Boolean(), nullable=True),
        sa.Column("code_hash", sa.String(128), nullable=True),
        sa.Column("environment_key", sa.String(128), nullable=True),
        sa.Column("environment_lock_path", sa.Text(), nullable=True),
        sa.Column("environment_lock", sa.Text(), nullable=True),
        sa.Column("interpreter", sa.String(32), nullable=True),
        _run_id(foreign=False),
        sa.Column("pipeline", sa.String(200), nullable=True),
        sa.Column("step", sa.String(200), nullable=True),
        sa.Column("producing_step", sa.String(200), nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.UniqueConstraint("name", "version", name="uq_conveyor_model_versions"),
    )
    for column in ("artifact_sha256", "name", "run_id"):
        op.create_index(f"ix_conveyor_model_versions_{column}", "conveyor_model_versions", [column])

    op.create_table(
        "conveyor_model_stages",
        _id(),
        sa.Column(
            "model_version_id",
            ROW_ID,
            sa.ForeignKey("conveyor_model_versions.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("started_at", TIME, nullable=False),
        sa.Column("ended_at", TIME, nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
    )
    op.create_index(
        "ix_conveyor_model_stages_model_version_id", "conveyor_model_stages", ["model_version_id"]
    )
    op.create_index(
        "ix_conveyor_model_stages_name_stage", "conveyor_model_stages", ["name", "stage"]
    )

    op.create_table(
        "conveyor_model_loads",
        _id(),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("step", sa.String(200), nullable=False),
        sa.Column(
            "model_version_id",
            ROW_ID,
            sa.ForeignKey("conveyor_model_versions.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("requested", JSON, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
    )
    op.create_index("ix_conveyor_model_loads_run_id", "conveyor_model_loads", ["run_id"])


def downgrade() -> None:
    for table in (
        "conveyor_model_loads",
        "conveyor_model_stages",
        "conveyor_model_versions",
        "conveyor_tables",
        "conveyor_artifact_refs",
        "conveyor_partitions",
        "conveyor_step_attempts",
        "conveyor_step_runs",
        "conveyor_runs",
    ):
        op.drop_table(table)
