"""Schedule clocks: where each replay clock stands, and every scheduled tick's data dates.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03

A replay clock maps a deployment's ticks onto the dates of the data's own timeline; its
position is a row here so it survives restarts and is advanced under a row lock, so two workers
never claim the same date. Every scheduled tick (replay or wall clock) is recorded with the
time it was scheduled for, the dates it stands for and the run that processed them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIME = sa.DateTime()  # naive UTC; conveyor.db.models.UTCDateTime attaches the zone on read


def upgrade() -> None:
    op.create_table(
        "conveyor_clocks",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("pipeline", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("start", sa.Date(), nullable=False),
        sa.Column("pace", sa.Integer(), nullable=False),
        sa.Column("position", sa.Date(), nullable=True),
        sa.Column("ticks", sa.Integer(), nullable=False),
        sa.Column("started_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
    )
    op.create_table(
        "conveyor_clock_ticks",
        sa.Column("id", ROW_ID, primary_key=True, autoincrement=True),
        sa.Column("clock", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("tick", sa.Integer(), nullable=True),
        sa.Column("scheduled_at", TIME, nullable=False),
        sa.Column("flow_run_id", sa.String(64), nullable=True),
        sa.Column("first_date", sa.Date(), nullable=False),
        sa.Column("last_date", sa.Date(), nullable=False),
        sa.Column("partition_start", sa.Date(), nullable=True),
        sa.Column("partition_end", sa.Date(), nullable=True),
        sa.Column("retry_of", sa.Integer(), nullable=True),
        sa.Column("retried", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=True),
        sa.Column("claimed_at", TIME, nullable=False),
        sa.Column("finished_at", TIME, nullable=True),
        sa.UniqueConstraint("clock", "scheduled_at", name="uq_conveyor_clock_ticks_scheduled"),
    )
    op.create_index("ix_conveyor_clock_ticks_clock", "conveyor_clock_ticks", ["clock"])
    op.create_index("ix_conveyor_clock_ticks_run_id", "conveyor_clock_ticks", ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_conveyor_clock_ticks_run_id", table_name="conveyor_clock_ticks")
    op.drop_index("ix_conveyor_clock_ticks_clock", table_name="conveyor_clock_ticks")
    op.drop_table("conveyor_clock_ticks")
    op.drop_table("conveyor_clocks")
