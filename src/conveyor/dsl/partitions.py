"""Partition calendars: which dates a pipeline has, and how dates group into ranged runs."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, timedelta

DateSource = Callable[[date, date], Iterable[date]]


@dataclass(frozen=True, slots=True)
class Calendar:
    """The partition dates of a pipeline: every day, weekdays, or what a function returns."""

    name: str
    source: DateSource | None = None

    def dates(self, start: date, end: date) -> list[date]:
        """Partition dates in [start, end], ascending."""
        if end < start:
            return []
        if self.source is not None:
            return sorted({d for d in self.source(start, end) if start <= d <= end})
        days = [start + timedelta(n) for n in range((end - start).days + 1)]
        if self.name == "weekdays":
            return [d for d in days if d.weekday() < 5]
        return days

    def shift(self, day: date, offset: int) -> date:
        """The partition `offset` calendar units from `day` (negative: earlier)."""
        if offset == 0:
            return day
        span = timedelta(days=abs(offset) * 7 + 14)
        while True:
            if offset < 0:
                candidates = [d for d in self.dates(day - span, day) if d < day]
                if len(candidates) >= -offset:
                    return candidates[offset]
            else:
                candidates = [d for d in self.dates(day, day + span) if d > day]
                if len(candidates) >= offset:
                    return candidates[offset - 1]
            if span > timedelta(days=366 * 50):
                raise ValueError(f"calendar {self.name!r} has no date {offset} units from {day}")
            span *= 2


DAILY = Calendar("daily")
WEEKDAYS = Calendar("weekdays")


def resolve_calendar(spec: str | DateSource | Calendar) -> Calendar:
    """Turn `"daily"`, `"weekdays"` or a `(start, end) -> dates` function into a Calendar."""
    if isinstance(spec, Calendar):
        return spec
    if spec == "daily":
        return DAILY
    if spec == "weekdays":
        return WEEKDAYS
    if callable(spec):
        return Calendar(getattr(spec, "__name__", "custom"), spec)
    raise ValueError(
        f"calendar {spec!r} is not known; use 'daily', 'weekdays' or a function "
        f"(start: date, end: date) -> iterable of dates"
    )
