"""Gradient-boosted trees on the lag features, with XGBoost's native API (no scikit-learn)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from components.design import TARGET, design_matrix
from conveyor import component

if TYPE_CHECKING:
    import pandas as pd


@component(packages=["xgboost-cpu>=2,<4"])
def train_xgboost(
    features: pd.DataFrame,
    n_estimators: int = 200,
    max_depth: int = 3,
    learning_rate: float = 0.05,
    subsample: float = 0.8,
    colsample_bytree: float = 0.8,
    seed: int = 0,
) -> object:
    """An XGBoost Booster on the 15 lags + day-of-week one-hot; one thread, reproducible."""
    import xgboost

    x = design_matrix(features, day_of_week=True)
    data = xgboost.DMatrix(x, label=features[TARGET].to_numpy(dtype="float64"), nthread=1)
    params = {
        "objective": "reg:squarederror",
        "tree_method": "hist",
        "max_depth": max_depth,
        "eta": learning_rate,
        "subsample": subsample,
        "colsample_bytree": colsample_bytree,
        "seed": seed,
        "nthread": 1,
    }
    return xgboost.train(params, data, num_boost_round=n_estimators)
