"""`conveyor deploy --check`: every deployment entry validated, with its next fire times."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from conveyor.engine.settings import Settings
from conveyor.ops.schedules import ScheduleEntry, load_entries


@dataclass(frozen=True)
class FireTime:
    """One coming tick of a schedule and the partition it would process."""

    at: datetime  # in the entry's time zone
    partition: date | None  # its last date (a ranged pipeline's tick may cover several)
    stands_for: tuple[date, date] | None = None  # a replay tick's data dates
    first: date | None = None  # a ranged partition's first date, when it covers several


@dataclass(frozen=True)
class EntryCheck:
    """A validated entry and its next fire times."""

    entry: ScheduleEntry
    fires: tuple[FireTime, ...]


def check_entries(
    settings: Settings, count: int = 3, after: datetime | None = None
) -> list[EntryCheck]:
    """Validate every entry (raises ScheduleError naming file and entry) and list its next fires."""
    from conveyor.backends.prefect_deploy import next_fire_times
    from conveyor.ops.clock import preview
    from conveyor.ops.discovery import resolve_pipeline

    checks = []
    for entry in load_entries(settings):
        pipeline = resolve_pipeline(entry.pipeline, settings)
        zone = ZoneInfo(entry.timezone)
        times = next_fire_times(entry.cron, entry.timezone, count=count, after=after)
        fires = []
        if entry.clock == "replay":  # the clock's coming dates, from where it stands
            for at, dates in zip(times, preview(entry, pipeline, settings, count), strict=False):
                first, last = dates.partition or (None, None)
                fires.append(FireTime(at=at.astimezone(zone), partition=last,
                                      stands_for=(dates.first, dates.last),
                                      first=first if first != last else None))  # fmt: skip
        else:
            for at in times:
                partition = entry.partition_for(pipeline, at) if pipeline.partition else None
                fires.append(FireTime(at=at.astimezone(zone), partition=partition))
        checks.append(EntryCheck(entry=entry, fires=tuple(fires)))
    return checks
