"""Point-in-time lag features of the NYSE series, and the date split for validation.

Every component here moves DataFrames, so pandas is in each of their environments; it is still
imported inside the functions, so that importing this module (to trace a flow, `conveyor dag`,
`conveyor plan`) costs no pandas. The NamedTuple's `pd.DataFrame` field hints stay strings,
which conveyor reads as DataFrames.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, NamedTuple

from components.design import LAG_COLUMNS, LAGS, SERIES, TARGET, as_dates
from conveyor import component

if TYPE_CHECKING:
    import pandas as pd

FEATURE_COLUMNS = ("date", "day_of_week", *LAG_COLUMNS, TARGET)


class Split(NamedTuple):
    fit: pd.DataFrame
    validation: pd.DataFrame


@component
def build_features(history: pd.DataFrame, start: date, end: date, lookback: list) -> pd.DataFrame:
    """For each date in [start, end]: the three series 1–5 trading days earlier, and the target.

    `lookback` names the trading days whose rows the lags need: the calendar's, not whatever
    the source happened to hold, so a lag never spans a missing day. Every one of those days
    and of [start, end] must be in `history`; rows on other dates are ignored.
    """
    import numpy as np
    import pandas as pd

    missing = [c for c in ("date", "day_of_week", *SERIES) if c not in history.columns]
    if missing:
        raise ValueError(f"history lacks column(s) {', '.join(map(repr, missing))}")
    rows = history.assign(date=as_dates(history["date"])).sort_values("date", kind="stable")
    rows = rows.reset_index(drop=True)
    duplicated = rows["date"][rows["date"].duplicated()]
    if len(duplicated):
        raise ValueError(f"history has duplicate date(s): {_iso(duplicated.unique())}")
    wanted = set(as_dates(pd.Series(list(lookback), dtype=object)))
    absent = sorted(wanted - set(rows["date"]))
    if absent:
        raise ValueError(
            f"the raw table lacks the look-back date(s) {_iso(absent)} that features for "
            f"{start}..{end} need (lags of 1–5 trading days); backfill those earlier dates "
            f"first, then rerun {start}..{end}"
        )
    in_range = (rows["date"] >= pd.Timestamp(start)) & (rows["date"] <= pd.Timestamp(end))
    # only the look-back days and the range: a stray earlier row must not become a lag
    rows = rows[rows["date"].isin(wanted) | in_range].reset_index(drop=True)
    values = rows[list(SERIES)].to_numpy(dtype="float64")
    keep = (rows["date"] >= pd.Timestamp(start)) & (rows["date"] <= pd.Timestamp(end))
    # rows without a full look-back occur only at the very start of the data (checked above)
    keep = keep.to_numpy() & (np.arange(len(rows)) >= len(LAGS))
    at = np.flatnonzero(keep)
    columns = {
        "date": rows["date"].to_numpy()[at],
        "day_of_week": rows["day_of_week"].to_numpy()[at],
    }
    for k in LAGS:  # row shifts: k trading days earlier
        for j, series in enumerate(SERIES):
            columns[f"{series}_lag{k}"] = values[at - k, j]
    columns[TARGET] = values[keep, SERIES.index(TARGET)]
    out = pd.DataFrame({c: columns[c] for c in FEATURE_COLUMNS})
    return out.assign(day_of_week=out["day_of_week"].astype(str))


@component
def split_window(features: pd.DataFrame, validation_days: int) -> Split:
    """Fit rows, and validation rows = the last `validation_days` calendar days of the range."""
    import pandas as pd

    if validation_days <= 0:
        raise ValueError(f"validation_days must be positive, got {validation_days}")
    rows = features.assign(date=as_dates(features["date"])).sort_values("date", kind="stable")
    rows = rows.reset_index(drop=True)
    if rows.empty:
        raise ValueError("split_window: the features frame is empty")
    cut = rows["date"].max() - pd.Timedelta(days=validation_days)
    late = rows["date"] > cut
    fit, validation = rows[~late].reset_index(drop=True), rows[late].reset_index(drop=True)
    if fit.empty:
        raise ValueError(
            f"split_window: no rows before the validation window (after {cut.date()}); "
            f"load a longer training window or use fewer than {validation_days} validation_days"
        )
    return Split(fit, validation)


def _iso(dates: object) -> str:
    import pandas as pd

    return ", ".join(pd.Timestamp(d).date().isoformat() for d in dates)
