"""Least squares on the lag features (scikit-learn only)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from components.design import TARGET, design_matrix
from conveyor import component

if TYPE_CHECKING:
    import pandas as pd


@component(packages=["scikit-learn>=1.5,<2"])
def train_linear(features: pd.DataFrame, day_of_week: bool = False) -> object:
    """LinearRegression (with intercept) on the 15 lags, plus day-of-week one-hot if asked."""
    from sklearn.linear_model import LinearRegression

    x = design_matrix(features, day_of_week)
    model = LinearRegression().fit(x, features[TARGET].to_numpy(dtype="float64"))
    # prediction selects the columns by `feature_names_in_`; this records the choice for people
    model.conveyor_day_of_week = day_of_week
    return model
