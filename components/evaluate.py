"""Holdout metrics of predictions against the actual target."""

from __future__ import annotations

from typing import TYPE_CHECKING

from components.design import TARGET, as_dates
from conveyor import Metrics, component

if TYPE_CHECKING:
    import pandas as pd


@component
def evaluate(predictions: pd.DataFrame, features: pd.DataFrame) -> Metrics:
    """R² (1 − RSS/TSS around the evaluated rows' mean), MAE and rows, joined on date."""
    if predictions["date"].duplicated().any():
        raise ValueError("evaluate: predictions have duplicate dates; evaluate one model at a time")
    actual = features[["date", TARGET]].assign(date=as_dates(features["date"]))
    predicted = predictions[["date", "prediction"]].assign(date=as_dates(predictions["date"]))
    joined = predicted.merge(actual, on="date", how="inner", validate="one_to_one")
    rows = len(joined)
    if rows == 0:
        return Metrics(rows=0)  # no r2: NaN is not JSON
    y = joined[TARGET].to_numpy(dtype="float64")
    error = y - joined["prediction"].to_numpy(dtype="float64")
    metrics = Metrics(mae=float(abs(error).mean()), rows=rows)
    tss = float(((y - y.mean()) ** 2).sum())
    if tss > 0:
        metrics["r2"] = 1.0 - float((error**2).sum()) / tss
    return metrics
