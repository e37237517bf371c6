"""The NYSE columns and the model design matrix, shared by features, training and prediction.

Plain functions (no steps): training and prediction build their inputs here, so the columns a
model was fitted on and the columns it is asked to predict from always agree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

SERIES = ("DJ_return", "log_volume", "log_volatility")
DAYS = ("mon", "tues", "wed", "thur", "fri")
LAGS = (1, 2, 3, 4, 5)
TARGET = "log_volume"
# Lag k outer, series inner: the ISLP lab's order (it matters to colsample_bytree, not to OLS).
LAG_COLUMNS = tuple(f"{series}_lag{k}" for k in LAGS for series in SERIES)
DOW_COLUMNS = tuple(f"dow_{day}" for day in DAYS)


def design_matrix(features: pd.DataFrame, day_of_week: bool) -> pd.DataFrame:
    """The 15 lag columns in a fixed order, plus day_of_week one-hot (all five days) if asked."""
    missing = [c for c in (*LAG_COLUMNS, "day_of_week") if c not in features.columns]
    if missing:
        raise ValueError(
            f"features lack column(s) {', '.join(map(repr, missing))}; build them with "
            f"components.features.build_features"
        )
    matrix = features[list(LAG_COLUMNS)].astype("float64").reset_index(drop=True)
    if day_of_week:
        days = features["day_of_week"].astype(str).reset_index(drop=True)
        unknown = sorted(set(days) - set(DAYS))
        if unknown:
            raise ValueError(f"day_of_week has unknown value(s) {unknown}; expected {DAYS}")
        for day, column in zip(DAYS, DOW_COLUMNS, strict=True):
            matrix[column] = (days == day).astype("float64")
    return matrix


def as_dates(values: pd.Series) -> pd.Series:
    """Dates as datetime64[ns] at midnight, from strings, dates or Timestamps."""
    import pandas as pd

    return pd.to_datetime(values).dt.normalize().astype("datetime64[ns]")
