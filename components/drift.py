"""Population stability index (PSI) of the features and predictions against a reference profile.

PSI = Σ_bins (a − e) · ln(a / e) over the reference's decile bins, where e is the reference share
of rows in a bin and a the share in the window. A bin share of 0 would make the logarithm
infinite, so both shares are floored at EPSILON = 1e-4 (a tenth of a row in 1,000) first; a bin
the window leaves empty then adds a finite, large term instead of an infinite one.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

from components.design import LAG_COLUMNS, as_dates
from conveyor import component

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

EPSILON = 1e-4
BINS = 10
COLUMNS = (*LAG_COLUMNS, "prediction")


@component
def profile(features: pd.DataFrame, predictions: pd.DataFrame) -> dict:
    """The reference: decile edges and share of rows per bin, for each lag and the predictions."""
    import numpy as np

    rows = _joined(features, predictions)
    if rows.empty:
        raise ValueError("profile: no rows with both features and a prediction")
    columns = {}
    for column in COLUMNS:
        values = rows[column].to_numpy(dtype="float64")
        edges = np.unique(np.quantile(values, np.arange(1, BINS) / BINS))
        counts = np.bincount(_bin(values, edges), minlength=len(edges) + 1)
        columns[column] = {
            "edges": [float(e) for e in edges],  # inner edges: bins (-inf, e1], (e1, e2], ...
            "proportions": [float(c) for c in counts / len(values)],
        }
    return {"rows": len(rows), "epsilon": EPSILON, "columns": columns}


@component
def drift(
    features: pd.DataFrame,
    predictions: pd.DataFrame,
    reference: dict | None,
    start: date,
    end: date,
    window: int = 250,
    threshold: float = 0.2,
    flag_on: str = "any",
) -> pd.DataFrame:
    """Per date in [start, end]: PSI of each lag and of the predictions over the trailing window.

    `flag_on="any"` flags a date when any PSI passes `threshold`; `"prediction"` only when the
    predictions' does (slow-moving inputs such as volatility shift between regimes by design).

    The window is the `window` rows of `features` ending at the date, so both frames must start
    at least `window - 1` trading days before `start`; a reference of None (no model) gives an
    empty frame.
    """
    import numpy as np
    import pandas as pd

    if window < 1:
        raise ValueError(f"drift: window must be at least 1 row, got {window}")
    if flag_on not in ("any", "prediction"):
        raise ValueError(f"drift: flag_on must be 'any' or 'prediction', got {flag_on!r}")
    names = ["date", *(f"psi_{c}" for c in COLUMNS), "psi_max", "drift_flag"]
    if reference is None:  # no model yet, so no reference: nothing to compare
        empty = pd.DataFrame({n: pd.Series([], dtype="float64") for n in names})
        return empty.astype({"date": "datetime64[ns]", "drift_flag": bool})
    if set(reference.get("columns", ())) != set(COLUMNS):
        raise ValueError(
            "drift: reference is not a profile of "
            f"{', '.join(COLUMNS)}; build it with components.drift.profile"
        )
    rows = _joined(features, predictions)
    ends = np.flatnonzero(rows["date"].between(pd.Timestamp(start), pd.Timestamp(end)))
    if len(ends) and ends[0] + 1 < window:
        first = rows["date"][ends[0]].date()
        raise ValueError(
            f"drift: {first} has only {ends[0] + 1} rows up to and including it, the trailing "
            f"window needs {window}; pass features and predictions from {window - 1} trading "
            f"days before {start} onwards"
        )
    out = {"date": rows["date"].iloc[ends].reset_index(drop=True)}
    for column in COLUMNS:
        ref = reference["columns"][column]
        edges = np.asarray(ref["edges"], dtype="float64")
        expected = np.maximum(np.asarray(ref["proportions"], dtype="float64"), EPSILON)
        bins = _bin(rows[column].to_numpy(dtype="float64"), edges)
        # counts per bin over rows [i - window + 1, i], from cumulative one-hot counts
        cumulative = np.vstack([np.zeros(len(expected)), np.cumsum(np.eye(len(expected))[bins], 0)])
        counts = cumulative[ends + 1] - cumulative[ends + 1 - window]
        actual = np.maximum(counts / window, EPSILON)
        out[f"psi_{column}"] = ((actual - expected) * np.log(actual / expected)).sum(axis=1)
    result = pd.DataFrame(out)
    psi = result[[f"psi_{c}" for c in COLUMNS]]
    flagged = psi.max(axis=1) if flag_on == "any" else result["psi_prediction"]
    return result.assign(psi_max=psi.max(axis=1), drift_flag=flagged > threshold)


def _joined(features: pd.DataFrame, predictions: pd.DataFrame) -> pd.DataFrame:
    """Features and predictions on the same dates, sorted; every features row needs a prediction."""
    left = features[["date", *LAG_COLUMNS]].assign(date=as_dates(features["date"]))
    right = predictions[["date", "prediction"]].assign(date=as_dates(predictions["date"]))
    rows = left.merge(right, on="date", how="left", validate="one_to_one")
    missing = rows["date"][rows["prediction"].isna()]
    if len(missing):
        raise ValueError(
            f"{len(missing)} features row(s) have no prediction, first {missing.min().date()}; "
            f"predict every row of the window first"
        )
    return rows.sort_values("date", kind="stable").reset_index(drop=True)


def _bin(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index per value for the bins (-inf, e1], (e1, e2], ..., (e_last, inf)."""
    import numpy as np

    return np.searchsorted(edges, values, side="left")
