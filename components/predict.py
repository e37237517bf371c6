"""Predictions of a fitted model. Declares no ML package: it runs with the model's own pins."""

from __future__ import annotations

from typing import TYPE_CHECKING

from components.design import as_dates, design_matrix
from conveyor import component

if TYPE_CHECKING:
    import pandas as pd


@component
def predict(model: object, features: pd.DataFrame) -> pd.DataFrame:
    """Columns date, prediction for each features row; empty when there is no model (None)."""
    import pandas as pd

    dates = as_dates(features["date"]).reset_index(drop=True)
    if model is None or features.empty:
        return pd.DataFrame({"date": dates.iloc[:0], "prediction": pd.Series([], dtype="float64")})
    # all columns a model may use; each model picks the ones it was fitted on, in its order
    x = design_matrix(features, day_of_week=True)
    library = type(model).__module__.split(".")[0]
    if library == "sklearn":
        values = model.predict(x[list(model.feature_names_in_)])
    elif library == "xgboost":
        import xgboost

        values = model.predict(xgboost.DMatrix(x[list(model.feature_names)], nthread=1))
    else:
        raise TypeError(
            f"predict: no rule for a {type(model).__module__}.{type(model).__qualname__} model; "
            f"expected a scikit-learn estimator or an xgboost Booster"
        )
    return pd.DataFrame({"date": dates, "prediction": values.astype("float64")})
