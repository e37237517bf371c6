"""`batch_prediction`: production and shadow predictions per trading day, with drift.

The production model is the version of `nyse-volume` that was production as of the range's
first date; its environment's pins are the predicting step's environment. Every candidate of the
latest training run predicts too, written with `shadow = true`. Drift is the population
stability index of each feature and of the predictions over a trailing window of fixed length,
per date, against the reference profile registered with the model; dates over the threshold are
flagged in the `drift` table and in the run's metrics. The tables are declared in
`flows/tables.py`.
"""

from datetime import date

from components.drift import drift
from components.nyse import trading_days
from components.predict import predict
from components.serving import KINDS, drift_summary, prediction_rows
from conveyor import (
    HostContext,
    HostStepError,
    host_step,
    load_model,
    load_table,
    pipeline,
    write_table,
)
from flows.tables import DRIFT, FEATURES, PREDICTIONS

MODEL = "nyse-volume"


@host_step
def serving_models(ctx: HostContext, start: date, end: date) -> dict:
    """The versions the range is served by: production (the same for every date) and shadows."""
    first = ctx.registry.get(MODEL, stage="production", as_of=start)
    last = ctx.registry.get(MODEL, stage="production", as_of=end)
    if first.version != last.version:
        raise HostStepError(
            f"{MODEL}: production changed within {start}..{end} (v{first.version} -> "
            f"v{last.version}); backfill with smaller --batch so each run has one model"
        )
    models = {"production": {"name": MODEL, "version": first.version}}
    for kind in KINDS:
        candidate = ctx.registry.get(f"{MODEL}-{kind}", stage="candidate", as_of=start)
        models[kind] = {"name": candidate.name, "version": candidate.version}
    return models


@host_step
def production_profile(ctx: HostContext, as_of: date) -> dict:
    """The drift reference registered with the production model."""
    record = ctx.registry.get(MODEL, stage="production", as_of=as_of)
    return record.params.get("profile") or {}


@pipeline(name="batch_prediction", partition=("start", "end"), calendar=trading_days)
def batch_prediction(
    start: date,
    end: date,
    drift_window: int = 250,
    drift_days: int = 400,
    psi_threshold: float = 0.25,
):
    """Predict each date with the production model and every candidate; measure drift."""
    # the range plus `drift_days` before it: the trailing windows of the drift measure
    features = load_table(FEATURES, start=start, end=end, days=drift_days)
    models = serving_models(start, end)
    served = predict(load_model(MODEL, stage="production", as_of=start), features)
    shadows = {
        kind: predict.with_options(name=f"shadow_{kind}")(
            load_model(f"{MODEL}-{kind}", stage="candidate", as_of=start), features
        )
        for kind in KINDS
    }
    rows = prediction_rows(
        served, shadows["linear"], shadows["linear_dow"], shadows["xgboost"], models, start, end
    )
    write_table(rows, PREDICTIONS, partition=(start, end), partition_col="date", min_rows=1)
    reference = production_profile(start)
    drifted = drift(features, served, reference, start, end, window=drift_window,
                    threshold=psi_threshold, flag_on="prediction")  # fmt: skip
    write_table(drifted, DRIFT, partition=(start, end), partition_col="date")
    return drift_summary(drifted)
