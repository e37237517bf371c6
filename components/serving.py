"""Assembling what batch prediction writes: prediction rows, model descriptions, drift summary."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

from components.design import as_dates
from conveyor import Metrics, component

if TYPE_CHECKING:
    import pandas as pd

KINDS = ("linear", "linear_dow", "xgboost")


@component
def describe_model(kind: str, profile: dict, hyperparameters: dict) -> dict:
    """What a registered version carries as params: its kind, settings and drift reference."""
    return {"kind": kind, "hyperparameters": hyperparameters, "profile": profile}


@component
def prediction_rows(
    production: pd.DataFrame,
    linear: pd.DataFrame,
    linear_dow: pd.DataFrame,
    xgboost: pd.DataFrame,
    models: dict,
    start: date,
    end: date,
) -> pd.DataFrame:
    """Rows (date, model_name, model_version, prediction, shadow) for dates in [start, end].

    Production predictions have shadow false; every candidate of the latest training run is
    written beside them with shadow true, so candidates meet live data without touching what
    consumers read.
    """
    import pandas as pd

    frames = []
    for role, frame, shadow in (
        ("production", production, False),
        ("linear", linear, True),
        ("linear_dow", linear_dow, True),
        ("xgboost", xgboost, True),
    ):
        model = models.get(role)
        if model is None or frame.empty:
            continue
        dates = as_dates(frame["date"])
        keep = ((dates >= pd.Timestamp(start)) & (dates <= pd.Timestamp(end))).to_numpy()
        frames.append(
            pd.DataFrame(
                {
                    "date": dates[keep].reset_index(drop=True),
                    "model_name": model["name"],
                    "model_version": int(model["version"]),
                    "prediction": frame["prediction"][keep].to_numpy(dtype="float64"),
                    "shadow": shadow,
                }
            )
        )
    if not frames:
        return pd.DataFrame(
            {
                "date": pd.Series([], dtype="datetime64[ns]"),
                "model_name": pd.Series([], dtype="str"),
                "model_version": pd.Series([], dtype="int64"),
                "prediction": pd.Series([], dtype="float64"),
                "shadow": pd.Series([], dtype="bool"),
            }
        )
    rows = pd.concat(frames, ignore_index=True)
    return rows.sort_values(["date", "shadow", "model_name"], kind="stable").reset_index(drop=True)


@component
def drift_summary(drift: pd.DataFrame) -> Metrics:
    """How many dates drifted past the threshold, and the largest PSI seen."""
    if drift.empty:
        return Metrics(dates=0, drifted_dates=0)
    return Metrics(
        dates=len(drift),
        drifted_dates=int(drift["drift_flag"].sum()),
        psi_max=float(drift["psi_max"].max()),
    )
