"""Schedule clocks in the database: replay positions, claimed ticks, and how each tick ended.

A replay clock's position is one row of `conveyor_clocks`. A tick claims its dates inside one
write transaction that first locks that row (`SELECT ... FOR UPDATE` on PostgreSQL, the
database-wide write lock of `BEGIN IMMEDIATE` on SQLite), so two workers ticking at once get
consecutive dates, never the same one, and a restart continues where the clock stood. The same
tick asked for again (a Prefect retry of the flow run, or the same scheduled time) gets the
dates it claimed the first time.

What the next dates are is the caller's (the clock knows the pipeline's calendar); this module
only stores and serializes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from conveyor.db.database import Database, using
from conveyor.db.models import FAILED, RUNNING, Clock, ClockTick, table_of
from conveyor.engine.settings import Settings

CLOCKS = table_of(Clock)
TICKS = table_of(ClockTick)
CLAIMED = "claimed"


@dataclass(frozen=True, slots=True)
class ClockState:
    """Where a replay clock stands: its start, pace, last claimed date and ticks so far."""

    name: str
    pipeline: str
    kind: str
    start: date
    pace: int
    position: date | None  # the last date a tick advanced it to (None: no tick yet)
    ticks: int
    started_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class TickRecord:
    """One scheduled tick: when it was due, the data dates it stands for, and its run."""

    clock: str
    kind: str  # "replay" or "wall"
    tick: int | None  # the clock's tick number (replay clocks)
    scheduled_at: datetime
    flow_run_id: str | None
    first_date: date
    last_date: date
    partition_start: date | None
    partition_end: date | None
    retry_of: int | None
    status: str  # claimed, running, succeeded, failed
    run_id: str | None
    claimed_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class Claim:
    """What a new tick stands for: the dates the clock moves over, and the partition it runs."""

    first: date
    last: date
    partition: tuple[date, date] | None


def _now() -> datetime:
    return datetime.now(UTC)


def _tick(row: Any) -> TickRecord:
    return TickRecord(**{name: getattr(row, name) for name in TickRecord.__slots__})


def _state(row: Any) -> ClockState:
    return ClockState(**{name: getattr(row, name) for name in ClockState.__slots__})


def _lock_clock(conn: Connection, db: Database, name: str) -> Any:
    query = sa.select(CLOCKS).where(CLOCKS.c.name == name)
    if db.dialect == "postgresql":  # SQLite's BEGIN IMMEDIATE already holds the write lock
        query = query.with_for_update()
    return conn.execute(query).one_or_none()


def _insert_new(db: Database, name: str, values: dict[str, Any]) -> Any:
    """INSERT of a clock row that does nothing when another transaction inserted it first."""
    if db.dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(CLOCKS).values(name=name, **values).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(CLOCKS).values(name=name, **values).on_conflict_do_nothing()


def _existing(conn: Connection, name: str, scheduled_at: datetime, flow_run_id: str | None) -> Any:
    same = TICKS.c.scheduled_at == scheduled_at
    if flow_run_id is not None:
        same = sa.or_(same, TICKS.c.flow_run_id == flow_run_id)
    query = sa.select(TICKS).where(TICKS.c.clock == name, same).order_by(TICKS.c.id)
    return conn.execute(query.limit(1)).one_or_none()


def claim_replay_tick(
    target: Settings | Database,
    name: str,
    *,
    pipeline: str,
    start: date,
    pace: int,
    scheduled_at: datetime,
    flow_run_id: str | None,
    advance: Callable[[date | None], Claim],
) -> TickRecord:
    """Claim the dates of one tick of replay clock `name`, atomically.

    A tick first repeats the earliest failed tick nobody has repeated yet (so a failed date is
    retried, not skipped); otherwise `advance(position)` says which dates come next. A clock
    whose `start` changed in its entry starts over from the new start.
    """
    with using(target) as db, db.write() as conn:
        now = _now()
        row = _lock_clock(conn, db, name)
        values = dict(pipeline=pipeline, kind="replay", start=start, pace=pace,
                      position=None, ticks=0, started_at=now, updated_at=now)  # fmt: skip
        if row is None:  # the first tick: two workers may both get here, one inserts
            conn.execute(_insert_new(db, name, values))
            row = _lock_clock(conn, db, name)
        if row.start != start:  # a new start in the entry: the old ticks are the old replay's
            conn.execute(sa.update(CLOCKS).where(CLOCKS.c.name == name).values(**values))
            conn.execute(sa.delete(TICKS).where(TICKS.c.clock == name))
            row = _lock_clock(conn, db, name)
        existing = _existing(conn, name, scheduled_at, flow_run_id)
        if existing is not None:
            return _tick(existing)
        number = row.ticks + 1
        failed = conn.execute(
            sa.select(TICKS)
            .where(TICKS.c.clock == name, TICKS.c.status == FAILED, ~TICKS.c.retried)
            .order_by(TICKS.c.first_date, TICKS.c.id)
            .limit(1)
        ).one_or_none()
        position = row.position
        if failed is not None:
            claim = Claim(failed.first_date, failed.last_date,
                          (failed.partition_start, failed.partition_end)
                          if failed.partition_start else None)  # fmt: skip
            conn.execute(sa.update(TICKS).where(TICKS.c.id == failed.id).values(retried=True))
        else:
            claim = advance(position)
            position = claim.last
        conn.execute(
            sa.update(CLOCKS)
            .where(CLOCKS.c.name == name)
            .values(position=position, ticks=number, pace=pace, updated_at=now)
        )
        start_, end_ = claim.partition or (None, None)
        values = dict(
            clock=name, kind="replay", tick=number, scheduled_at=scheduled_at,
            flow_run_id=flow_run_id, first_date=claim.first, last_date=claim.last,
            partition_start=start_, partition_end=end_,
            retry_of=failed.tick if failed is not None else None, retried=False,
            status=CLAIMED, run_id=None, claimed_at=now, finished_at=None,
        )  # fmt: skip
        conn.execute(sa.insert(TICKS).values(**values))
        return _tick(_existing(conn, name, scheduled_at, flow_run_id))


def record_wall_tick(
    target: Settings | Database,
    name: str,
    *,
    scheduled_at: datetime,
    flow_run_id: str | None,
    day: date,
    partition: tuple[date, date] | None,
) -> TickRecord:
    """Record a wall-clock tick (its date is its scheduled date) so runs show their mapping."""
    with using(target) as db, db.write() as conn:
        existing = _existing(conn, name, scheduled_at, flow_run_id)
        if existing is not None:
            return _tick(existing)
        start, end = partition or (None, None)
        values = dict(
            clock=name, kind="wall", tick=None, scheduled_at=scheduled_at,
            flow_run_id=flow_run_id, first_date=day, last_date=day, partition_start=start,
            partition_end=end, retry_of=None, retried=False, status=CLAIMED, run_id=None,
            claimed_at=_now(), finished_at=None,
        )  # fmt: skip
        conn.execute(sa.insert(TICKS).values(**values))
        return _tick(_existing(conn, name, scheduled_at, flow_run_id))


def _where(tick: TickRecord) -> Any:
    return (TICKS.c.clock == tick.clock) & (TICKS.c.scheduled_at == tick.scheduled_at)


def link_run(target: Settings | Database, tick: TickRecord, run_id: str) -> None:
    """The conveyor run that processes a tick's dates (shown by `conveyor runs show`)."""
    with using(target) as db, db.write() as conn:
        conn.execute(sa.update(TICKS).where(_where(tick)).values(run_id=run_id, status=RUNNING))


def finish_tick(target: Settings | Database, tick: TickRecord, status: str) -> None:
    """How a tick ended: succeeded, or failed (the clock's next tick repeats its dates)."""
    with using(target) as db, db.write() as conn:
        conn.execute(sa.update(TICKS).where(_where(tick)).values(status=status, finished_at=_now()))


def tick_of_run(target: Settings | Database, run_id: str) -> TickRecord | None:
    """The scheduled tick a run processed, if it was one."""
    with using(target) as db, db.read() as conn:
        row = conn.execute(
            sa.select(TICKS).where(TICKS.c.run_id == run_id).order_by(TICKS.c.id).limit(1)
        ).one_or_none()
    return _tick(row) if row is not None else None


def clock_states(target: Settings | Database) -> dict[str, ClockState]:
    """Every replay clock that has ticked, by deployment entry name."""
    with using(target) as db, db.read() as conn:
        rows = conn.execute(sa.select(CLOCKS).order_by(CLOCKS.c.name)).all()
    return {row.name: _state(row) for row in rows}


def recent_ticks(target: Settings | Database, name: str, limit: int = 5) -> list[TickRecord]:
    """The last `limit` ticks of a clock, newest first."""
    with using(target) as db, db.read() as conn:
        rows = conn.execute(
            sa.select(TICKS).where(TICKS.c.clock == name).order_by(TICKS.c.id.desc()).limit(limit)
        ).all()
    return [_tick(row) for row in rows]


def tick_counts(target: Settings | Database, name: str) -> dict[str, int]:
    """How many of a clock's ticks are in each status."""
    with using(target) as db, db.read() as conn:
        rows = conn.execute(
            sa.select(TICKS.c.status, sa.func.count())
            .where(TICKS.c.clock == name)
            .group_by(TICKS.c.status)
        ).all()
    return {status: count for status, count in rows}


def reset_clock(target: Settings | Database, name: str) -> bool:
    """Start a replay clock over: its next tick is its start; False if it never ticked.

    Its tick history goes too: what the old ticks wrote stays in the tables, and the replayed
    dates are written again (each write replaces its partition).
    """
    with using(target) as db, db.write() as conn:
        row = _lock_clock(conn, db, name)
        conn.execute(sa.delete(TICKS).where(TICKS.c.clock == name))
        conn.execute(sa.delete(CLOCKS).where(CLOCKS.c.name == name))
    return row is not None


def move_clock(
    target: Settings | Database,
    name: str,
    *,
    pipeline: str,
    start: date,
    pace: int,
    position: date | None,
) -> None:
    """Set where a replay clock stands (`position`: the last date done; its next tick advances
    from there), forgetting its tick history."""
    with using(target) as db, db.write() as conn:
        row = _lock_clock(conn, db, name)
        now = _now()
        values = dict(pipeline=pipeline, kind="replay", start=start, pace=pace,
                      position=position, ticks=0, started_at=now, updated_at=now)  # fmt: skip
        conn.execute(sa.delete(TICKS).where(TICKS.c.clock == name))
        if row is None:
            conn.execute(sa.insert(CLOCKS).values(name=name, **values))
        else:
            conn.execute(sa.update(CLOCKS).where(CLOCKS.c.name == name).values(**values))
