"""`features`: NYSE raw rows -> validated -> raw_nyse -> point-in-time lag features -> features.

Ranged: one run processes a range of trading days; a scheduled run is the one-day range, a
backfill groups many. The lags of a date need the raw rows of the five trading days before it,
which the run reads back from `raw_nyse` after writing its own range; when an earlier range has
not been written yet, `build_features` says so instead of computing short lags. The trading days
come from the exchange's calendar (`components/nyse_calendar.py`), not from the source: a
source missing a day fails validation naming it, before anything is written, and no lag ever
spans a gap. Partitions read the five before them (`depends_on_past`), so backfills run in order.
Both tables are declared (`flows/tables.py`): every write is checked against its schema.
"""

from datetime import date, timedelta

from components.features import build_features
from components.nyse import DEFAULT_SOURCE, ingest, trading_days, validate
from conveyor import after, host_step, load_table, pipeline, write_table
from flows.tables import FEATURES, RAW_NYSE

LAGS = 5  # trading days of look-back: each date's lags are the five trading days before it


@host_step
def trading_range(start: date, end: date) -> list:
    """The exchange's trading days of [start, end] (ISO dates): what the source must hold."""
    return [d.isoformat() for d in trading_days(start, end)]


@host_step
def trading_lookback(start: date) -> list:
    """The LAGS trading days before `start`: what the lags are taken from, whatever the source
    holds (a gap there is an error, never a lag that spans it)."""
    before = trading_days(start - timedelta(days=3 * LAGS + 14), start - timedelta(days=1))
    return [d.isoformat() for d in before[-LAGS:]]


@pipeline(name="features", partition=("start", "end"), calendar=trading_days, depends_on_past=LAGS)
def features(start: date, end: date, source: str = DEFAULT_SOURCE, lookback_days: int = 31):
    """Ingest and validate the range's raw rows, store them, and compute its features."""
    raw = ingest(source, start, end, name=source)
    rows = validate(raw.rows, source, trading_range(start, end))
    written = write_table(rows, RAW_NYSE, partition=(start, end), partition_col="date",
                          min_rows=1)  # fmt: skip
    with after(written):
        history = load_table(RAW_NYSE, start=start, end=end, days=lookback_days)
    lags = build_features(history, start, end, trading_lookback(start))
    write_table(lags, FEATURES, partition=(start, end), partition_col="date")
