"""The NYSE source: ingest one date range as it would have arrived, validate it, and its calendar.

Every component here moves DataFrames, so pandas is in each of their environments; it is still
imported inside the functions, so that importing this module (to trace a flow, `conveyor dag`,
`conveyor plan`) costs no pandas. The NamedTuple's `pd.DataFrame` field hint stays a string,
which conveyor reads as a DataFrame.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from components.design import DAYS, as_dates
from components.nyse_calendar import CLOSED, FIRST, LAST
from conveyor import component

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_SOURCE = "flows/data/NYSE.csv"  # relative: resolved against the step's cwd (project root)
PROJECT_ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ("date", "day_of_week", "DJ_return", "log_volume", "log_volatility", "train")
# Allowed ranges, with wide margins over the data (DJ_return -0.047..0.050, log_volume
# -1.32..1.04, log_volatility -13.1..-7.5); ±0.3 still admits the 1987 crash (-0.23).
RANGES = {"DJ_return": (-0.3, 0.3), "log_volume": (-5.0, 5.0), "log_volatility": (-20.0, 5.0)}
_TRUTH = {"true": True, "false": False, "1": True, "0": False}
_MAX_LISTED = 20


class Ingested(NamedTuple):
    rows: pd.DataFrame
    lookback: list


def resolve_source(source: str) -> Path:
    """An absolute path as is; a relative one against the cwd, else against the project root."""
    path = Path(source)
    if path.is_absolute():
        return path
    for base in (Path.cwd(), PROJECT_ROOT):
        if (base / path).exists():
            return base / path
    return Path.cwd() / path


@component
def ingest(source: Path, start: date, end: date, name: str = "") -> Ingested:
    """The raw text rows of the source's dates in [start, end], and the 5 dates before start.

    `source` is a Path parameter: its content is part of the cache key (an edited CSV re-runs
    the step) and it reaches the step through the artifact store; `name` is how errors call it.
    """
    import pandas as pd

    if start > end:
        raise ValueError(f"ingest: start {start} is after end {end}")
    shown = name or str(source)
    raw = _read_raw(source, shown)
    dates = _parse_dates(raw, shown)
    in_range = ((dates >= pd.Timestamp(start)) & (dates <= pd.Timestamp(end))).to_numpy()
    order = dates[in_range].sort_values(kind="stable").index
    rows = raw.loc[order].reset_index(drop=True)
    before = sorted(set(dates[dates < pd.Timestamp(start)]))[-5:]
    return Ingested(rows, [d.date().isoformat() for d in before])


@component
def validate(raw: pd.DataFrame, source: str, calendar: list | None = None) -> pd.DataFrame:
    """Check schema, types, values and dates; the rows with canonical dtypes, sorted by date.

    With `calendar` (the trading days the rows should cover, ISO dates), every one of them must
    be there and no other date: a source missing a trading day fails naming it.
    """
    import pandas as pd

    missing = [c for c in COLUMNS if c not in raw.columns]
    extra = [c for c in raw.columns if c not in COLUMNS]
    if missing or extra:
        raise ValueError(
            f"{source}: "
            + "; ".join(
                [f"missing column {c!r}" for c in missing]
                + [f"unexpected column {c!r}" for c in extra]
            )
            + f"; expected exactly the columns {', '.join(COLUMNS)}"
        )
    raw = raw.reset_index(drop=True)
    problems: list[str] = []
    dates = pd.to_datetime(raw["date"].map(_text), format="%Y-%m-%d", errors="coerce")

    def report(column: str, bad: pd.Series, what: Callable[[int], str]) -> None:
        for i in bad.index[bad.to_numpy(dtype=bool)]:
            where = f"date {dates[i].date()}" if not pd.isna(dates[i]) else f"row {i + 1}"
            problems.append(f"{source}: column {column!r}, {where}: {what(i)}")

    report(
        "date", dates.isna(), lambda i: _bad(raw["date"][i], "is not a date (expected YYYY-MM-DD)")
    )
    out = {"date": dates}
    for column, (low, high) in RANGES.items():
        text = raw[column].map(_text)
        numbers = pd.to_numeric(text, errors="coerce").astype("float64")
        report(column, numbers.isna(), lambda i, t=text: _bad(t[i], "is not a number"))
        report(
            column,
            numbers.notna() & ~numbers.between(low, high),
            lambda i, t=text, r=(low, high): f"value {t[i]} is outside the range [{r[0]}, {r[1]}]",
        )
        out[column] = numbers
    days = raw["day_of_week"].map(_text)
    known = days.isin(DAYS)
    report("day_of_week", ~known, lambda i: _bad(days[i], f"is not one of {', '.join(DAYS)}"))
    weekday = dates.dt.day_of_week.map(dict(enumerate(DAYS)))
    report(
        "day_of_week",
        known & dates.notna() & (days != weekday),
        lambda i: f"value {days[i]!r} does not match the date (a {dates[i].day_name()})",
    )
    out["day_of_week"] = days
    truth = raw["train"].map(lambda v: _TRUTH.get(_text(v).lower()))
    report("train", truth.isna(), lambda i: _bad(raw["train"][i], "is not TRUE or FALSE"))
    out["train"] = truth
    counts = dates.dropna().value_counts()
    for day, count in sorted(counts[counts > 1].items()):
        problems.append(f"{source}: column 'date': date {day.date()} appears {count} times")
    if calendar is not None:
        expected = {date.fromisoformat(str(d)) for d in calendar}
        if expected:
            low, high = min(expected), max(expected)
            present = {d.date() for d in dates.dropna() if low <= d.date() <= high}
            for day in sorted(expected - present):
                problems.append(f"{source}: trading day {day} is missing (the calendar has it)")
            for day in sorted(present - expected):
                problems.append(f"{source}: date {day} is not a trading day of the calendar")
    if problems:
        listed = problems[:_MAX_LISTED] + (["..."] if len(problems) > _MAX_LISTED else [])
        head = problems[0] if len(problems) == 1 else f"{len(problems)} problems in {source}:"
        raise ValueError(head if len(problems) == 1 else "\n  ".join([head, *listed]))
    frame = pd.DataFrame({c: out[c] for c in COLUMNS})
    return _canonical(frame.sort_values("date", kind="stable"))


def trading_days(start: date, end: date) -> list[date]:
    """The partition calendar: the exchange's trading days in [start, end] (nyse_calendar's
    weekdays without its closures), and weekdays after its last date."""
    start, end = _day(start), _day(end)
    days = []
    day = max(start, FIRST)
    while day <= end:
        if day.weekday() < 5 and (day > LAST or day not in CLOSED):
            days.append(day)
        day += timedelta(days=1)
    return days


def _read_raw(source: Path | str, shown: str) -> pd.DataFrame:
    import pandas as pd

    path = resolve_source(str(source))
    if not path.is_file():
        raise FileNotFoundError(f"{shown}: source file not found (looked at {path})")
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ValueError(f"{shown}: not a readable CSV file ({exc})") from exc
    missing = [c for c in COLUMNS if c not in raw.columns]
    if missing:
        raise ValueError(
            f"{shown}: missing column(s) {', '.join(map(repr, missing))}; "
            f"expected the columns {', '.join(COLUMNS)}"
        )
    return raw[list(COLUMNS)]


def _parse_dates(raw: pd.DataFrame, source: str) -> pd.Series:
    import pandas as pd

    dates = pd.to_datetime(raw["date"], format="%Y-%m-%d", errors="coerce")
    bad = dates.index[dates.isna()]
    if len(bad):
        i = bad[0]
        raise ValueError(
            f"{source}: column 'date', line {i + 2}: value {raw['date'][i]!r} is not a date "
            f"(expected YYYY-MM-DD)" + (f"; {len(bad) - 1} more bad dates" if len(bad) > 1 else "")
        )
    return dates


def _canonical(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.reset_index(drop=True)
    return frame.assign(
        date=as_dates(frame["date"]),
        day_of_week=frame["day_of_week"].astype(str),
        train=frame["train"].astype(bool),
        **{c: frame[c].astype("float64") for c in RANGES},
    )[list(COLUMNS)]


def _text(value: object) -> str:
    import pandas as pd

    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    if isinstance(value, datetime | pd.Timestamp):
        return value.strftime("%Y-%m-%d")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).strip()


def _bad(value: object, what: str) -> str:
    text = _text(value)
    return "missing value" if text == "" else f"value {text!r} {what}"


def _day(value: date) -> date:
    return value.date() if isinstance(value, datetime) else value
