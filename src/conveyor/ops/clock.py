"""Data clocks: which dates of the data a scheduled tick stands for.

The wall clock (the default) says a tick stands for its scheduled date, in the entry's time
zone: right for live data. A replay clock maps ticks onto the data's own timeline instead, so
history plays back as if it were arriving: the first tick stands for `replay_start`, each
later one for the next `replay_pace` dates of the pipeline's calendar (the trading calendar of
the reference flows), up to `replay_end`. Its position lives in conveyor's database
(`conveyor.db.clocks`), claimed under a row lock, so it survives restarts and two workers never
replay the same date twice. A tick whose run failed is repeated by the clock's next tick before
it moves on, so a failed date is retried rather than skipped.

What a tick covers: a ranged pipeline (`partition=("start", "end")`) processes every date the
clock moved over; a one-date pipeline processes the date the clock landed on. Either way
`partition_offset` shifts it, as it does for the wall clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from conveyor.dsl.pipeline import Pipeline
from conveyor.engine.settings import Settings
from conveyor.errors import ScheduleError

if TYPE_CHECKING:  # the db layer is imported only when a clock ticks (schedules import this)
    from conveyor.db.clocks import Claim, TickRecord
    from conveyor.ops.schedules import ScheduleEntry


@dataclass(frozen=True, slots=True)
class TickDates:
    """What one tick stands for: the data dates the clock moved over and the partition run."""

    first: date
    last: date
    partition: tuple[date, date] | None


@dataclass(frozen=True, slots=True)
class Tick:
    """A claimed tick: its dates, and its record (None when runs are not recorded)."""

    dates: TickDates
    scheduled_at: datetime
    record: TickRecord | None

    def describe(self) -> str:
        """`replay tick 12: 2026-12-03 13:31 UTC -> 1980-01-21`: the tick's data date, and its
        partition when the offset moves it (a retry says so)."""
        when = f"{self.scheduled_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
        stands = _span(self.dates.first, self.dates.last)
        if self.dates.partition and _span(*self.dates.partition) != stands:
            stands += f" (partition {_span(*self.dates.partition)})"
        if self.record is None or self.record.kind == "wall":
            return f"wall clock: {when} -> {stands}"
        retry = f", repeating failed tick {self.record.retry_of}" if self.record.retry_of else ""
        return f"replay tick {self.record.tick}{retry}: {when} -> {stands}"


def _span(first: date, last: date) -> str:
    return str(first) if first == last else f"{first} .. {last}"


@dataclass(frozen=True, slots=True)
class ClockView:
    """Where a replay clock stands, for `conveyor replay status`."""

    entry: ScheduleEntry
    position: date | None  # the last date a tick claimed (None: not started)
    ticks: int
    counts: dict[str, int]
    next: TickDates | None  # what the next tick will stand for (None: the replay is over)
    updated_at: datetime | None


def partition_of(
    entry: ScheduleEntry, pipeline: Pipeline, first: date, last: date
) -> tuple[date, date] | None:
    """The partition a tick standing for `first..last` processes (offset applied)."""
    if pipeline.partition is None:
        return None
    calendar, offset = pipeline.calendar, entry.partition_offset
    if isinstance(pipeline.partition, tuple):
        return calendar.shift(first, offset), calendar.shift(last, offset)
    day = calendar.shift(last, offset)
    return day, day


def advance(entry: ScheduleEntry, pipeline: Pipeline, position: date | None) -> TickDates:
    """The dates a replay clock standing at `position` moves over on its next tick."""
    assert entry.replay_start is not None  # a replay entry always has one
    calendar = pipeline.calendar
    first = entry.replay_start if position is None else calendar.shift(position, 1)
    if entry.replay_end is not None and first > entry.replay_end:
        raise ScheduleError(
            f"{entry.where}: the replay is over: it reached replay_end {entry.replay_end}. "
            f"`conveyor replay reset {entry.name}` starts it over from {entry.replay_start}"
        )
    last = calendar.shift(first, entry.replay_pace - 1)
    if entry.replay_end is not None and last > entry.replay_end:
        last = calendar.dates(first, entry.replay_end)[-1]
    return TickDates(first, last, partition_of(entry, pipeline, first, last))


def claim_tick(
    entry: ScheduleEntry,
    pipeline: Pipeline,
    settings: Settings,
    scheduled: datetime,
    flow_run_id: str | None = None,
) -> Tick:
    """The dates the tick scheduled at `scheduled` stands for; recorded in the database.

    A replay clock advances (atomically, once per tick: the same tick asked again gets the same
    dates); the wall clock takes the scheduled date and records the mapping when runs are
    recorded.
    """
    from conveyor.db import clocks

    scheduled = scheduled.astimezone(UTC)
    if entry.clock == "wall":
        day = entry.partition_for(pipeline, scheduled)
        local = scheduled.astimezone(ZoneInfo(entry.timezone)).date()
        dates = TickDates(local, local, (day, day) if pipeline.partition else None)
        record = None
        if settings.uses_database:
            record = clocks.record_wall_tick(
                settings, entry.name, scheduled_at=scheduled, flow_run_id=flow_run_id,
                day=local, partition=dates.partition,
            )  # fmt: skip
        return Tick(dates, scheduled, record)
    if not settings.uses_database:
        raise ScheduleError(
            f"{entry.where}: a replay clock keeps its position in conveyor's database, and "
            f"CONVEYOR_DATABASE_URL=none turns the database off; unset it"
        )
    assert entry.replay_start is not None  # a replay entry always has one

    def next_claim(position: date | None) -> Claim:
        dates = advance(entry, pipeline, position)
        return clocks.Claim(dates.first, dates.last, dates.partition)

    record = clocks.claim_replay_tick(
        settings, entry.name, pipeline=entry.pipeline, start=entry.replay_start,
        pace=entry.replay_pace, scheduled_at=scheduled, flow_run_id=flow_run_id,
        advance=next_claim,
    )  # fmt: skip
    partition = None
    if record.partition_start is not None and record.partition_end is not None:
        partition = (record.partition_start, record.partition_end)
    return Tick(TickDates(record.first_date, record.last_date, partition), scheduled, record)


def preview(
    entry: ScheduleEntry, pipeline: Pipeline, settings: Settings, count: int = 3
) -> list[TickDates]:
    """What the next `count` ticks of a replay clock will stand for (nothing is claimed); fewer
    when the replay ends first. Read from the clock's stored position when there is one."""
    position = None
    if settings.uses_database:
        from conveyor.db import clocks

        state = clocks.clock_states(settings).get(entry.name)
        if state is not None and state.start == entry.replay_start:
            position = state.position
    coming = []
    for _ in range(count):
        try:
            dates = advance(entry, pipeline, position)
        except ScheduleError:  # the replay is over
            break
        coming.append(dates)
        position = dates.last
    return coming


def views(settings: Settings, entries: list[ScheduleEntry]) -> list[ClockView]:
    """Where each replay clock among `entries` stands."""
    from conveyor.db import clocks
    from conveyor.ops.discovery import resolve_pipeline

    states = clocks.clock_states(settings)
    shown = []
    for entry in entries:
        if entry.clock != "replay":
            continue
        state = states.get(entry.name)
        if state is not None and state.start != entry.replay_start:
            state = None  # a new start in the entry: its next tick starts over
        pipeline = resolve_pipeline(entry.pipeline, settings)
        position = state.position if state else None
        try:
            coming: TickDates | None = advance(entry, pipeline, position)
        except ScheduleError:
            coming = None
        shown.append(
            ClockView(
                entry=entry,
                position=position,
                ticks=state.ticks if state else 0,
                counts=clocks.tick_counts(settings, entry.name) if state else {},
                next=coming,
                updated_at=state.updated_at if state else None,
            )
        )
    return shown


def reset(
    settings: Settings, entry: ScheduleEntry, pipeline: Pipeline, to: date | None = None
) -> date:
    """Start a replay clock over, at its `replay_start` or at `to`; returns its next date."""
    from conveyor.db import clocks

    assert entry.replay_start is not None
    if to is None:
        clocks.reset_clock(settings, entry.name)
        return entry.replay_start
    if not pipeline.calendar.dates(to, to):
        raise ScheduleError(
            f"{to} is not a date of pipeline {entry.pipeline!r}'s calendar; the next one is "
            f"{pipeline.calendar.shift(to, 1)}"
        )
    if to < entry.replay_start or (entry.replay_end is not None and to > entry.replay_end):
        raise ScheduleError(
            f"{to} is outside the replay of [{entry.name}] ({entry.replay_start} .. "
            f"{entry.replay_end or 'on'})"
        )
    position = None if to == entry.replay_start else pipeline.calendar.shift(to, -1)
    clocks.move_clock(settings, entry.name, pipeline=entry.pipeline, start=entry.replay_start,
                      pace=entry.replay_pace, position=position)  # fmt: skip
    return to
