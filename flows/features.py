"""`features`: NYSE raw rows -> validated -> raw_nyse -> point-in-time lag features -> features.

Ranged: one run processes a range of trading days; a scheduled run is the one-day range, a
backfill groups many. The lags of a date need the raw rows of the five trading days before it,
which the run reads back from `raw_nyse` after writing its own range; when an earlier range has
not been written yet, `build_features` says so instead of computing short lags.
"""

from datetime import date

from components.features import build_features
from components.nyse import DEFAULT_SOURCE, ingest, trading_days, validate
from conveyor import after, load_table, pipeline, write_table


@pipeline(name="features", partition=("start", "end"), calendar=trading_days, depends_on_past=5)
def features(start: date, end: date, source: str = DEFAULT_SOURCE, lookback_days: int = 31):
    """Ingest and validate the range's raw rows, store them, and compute its features."""
    raw = ingest(source, start, end, name=source)
    rows = validate(raw.rows, source)
    written = write_table(rows, "raw_nyse", partition=(start, end), partition_col="date")
    with after(written):
        history = load_table("raw_nyse", start=start, end=end, days=lookback_days)
    lags = build_features(history, start, end, raw.lookback)
    write_table(lags, "features", partition=(start, end), partition_col="date")
