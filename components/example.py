"""Small steps for the example pipeline: each declares only what it imports."""

from __future__ import annotations

from typing import TYPE_CHECKING

from conveyor import Metrics, component

if TYPE_CHECKING:  # hints are resolved by name; pandas is only needed where a step moves frames
    import pandas as pd


@component(packages=["six==1.16.0"])
def six_old() -> str:
    """The six version this step's environment pins."""
    import six

    return six.__version__


@component(packages=["six==1.17.0"])
def six_new() -> str:
    """The same package, another pin, another environment."""
    import six

    return six.__version__


@component(packages=["numpy>=1.26"])
def make_data(rows: int, seed: int = 0) -> pd.DataFrame:
    """A synthetic regression table: y = 3·x1 − 2·x2 + noise."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 2))
    y = 3 * x[:, 0] - 2 * x[:, 1] + rng.normal(scale=0.5, size=rows)
    return pd.DataFrame({"x1": x[:, 0], "x2": x[:, 1], "y": y})


@component(packages=["numpy>=1.26"])
def fit_least_squares(data: pd.DataFrame) -> Metrics:
    """Ordinary least squares with numpy; reports coefficients and R²."""
    import numpy as np

    x = np.column_stack([np.ones(len(data)), data["x1"], data["x2"]])
    coef, *_ = np.linalg.lstsq(x, data["y"].to_numpy(), rcond=None)
    residual = data["y"].to_numpy() - x @ coef
    r2 = 1 - residual.var() / data["y"].var(ddof=0)
    return Metrics(intercept=coef[0], x1=coef[1], x2=coef[2], r2=r2)


@component
def report(old: str, new: str, fit: Metrics) -> dict:
    """Everything the example found, as one JSON document."""
    return {"six_old": old, "six_new": new, "r2": round(fit["r2"], 4)}
