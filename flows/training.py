"""`training`: fit three candidates, score them on a validation window, refit, register, gate.

Candidates: linear regression on the 15 lags, the same plus day of week (scikit-learn), and
XGBoost (xgboost-cpu, no scikit-learn) — each in its own environment. Each is fitted on the
training window minus its last `validation_days`, scored there, refitted on the whole window and
registered as a candidate of its own name (`nyse-volume-<kind>`) with the environment lock that
produced it. The gate promotes the best candidate to `nyse-volume` only if it passes `floor` and
beats the production model on the same validation window. Registration waits for every fit and
score: a run that fails anywhere registers nothing (no partial set of candidates).
"""

from datetime import UTC, date, datetime, time

from components.drift import profile
from components.evaluate import evaluate
from components.features import split_window
from components.gate import choose_promotion
from components.nyse import trading_days
from components.predict import predict
from components.serving import describe_model
from components.train_linear import train_linear
from components.train_xgboost import train_xgboost
from conveyor import (
    HostContext,
    Metrics,
    after,
    host_step,
    load_model,
    load_table,
    pipeline,
    register_model,
)

MODEL = "nyse-volume"
KINDS = ("linear", "linear_dow", "xgboost")
SKLEARN = ["scikit-learn>=1.5,<2"]
XGBOOST = ["xgboost-cpu>=2,<4"]
XGB_SETTINGS = {"n_estimators": 200, "max_depth": 3, "learning_rate": 0.05, "subsample": 0.8,
                "colsample_bytree": 0.8, "seed": 0}  # fmt: skip


def cutoff(day: date) -> datetime:
    """Registrations and promotions take effect at the training cutoff (data time, UTC)."""
    return datetime.combine(day, time.min, UTC)


@host_step
def promotion_gate(
    ctx: HostContext,
    as_of: date,
    floor: float,
    linear: Metrics,
    linear_dow: Metrics,
    xgboost: Metrics,
    production: Metrics,
    linear_version: int,
    linear_dow_version: int,
    xgboost_version: int,
) -> dict:
    """Promote the best candidate to `nyse-volume` if it passes the floor and beats production."""
    decision = choose_promotion(
        {"linear": linear, "linear_dow": linear_dow, "xgboost": xgboost},
        production if production.get("rows") else None,
        floor,
    )
    ctx.log.info("promotion gate: %s", decision.reason)
    if decision.candidate is None:
        return {"promoted": None, "reason": decision.reason}
    versions = {"linear": linear_version, "linear_dow": linear_dow_version,
                "xgboost": xgboost_version}  # fmt: skip
    candidate = f"{MODEL}-{decision.candidate}"
    version = ctx.registry.copy(candidate, versions[decision.candidate], to=MODEL,
                                at=cutoff(as_of))  # fmt: skip
    ctx.registry.promote(MODEL, version, at=cutoff(as_of), note=f"gate: {decision.reason}")
    return {"promoted": decision.candidate, "version": version, "reason": decision.reason}


@pipeline(name="training", partition="as_of", calendar=trading_days)
def training(as_of: date, window_days: int = 36500, validation_days: int = 730, floor: float = 0.3):
    """Train, score, refit and register three candidates; promote the best if it is better."""
    window = load_table("features", end=as_of, days=window_days)
    split = split_window(window, validation_days)
    fitted = {
        "linear": train_linear.with_options(name="fit_linear")(split.fit, day_of_week=False),
        "linear_dow": train_linear.with_options(name="fit_linear_dow")(split.fit, True),
        "xgboost": train_xgboost.with_options(name="fit_xgboost")(split.fit, **XGB_SETTINGS),
    }
    final = {
        "linear": train_linear(window, day_of_week=False),
        "linear_dow": train_linear.with_options(name="train_linear_dow")(window, True),
        "xgboost": train_xgboost(window, **XGB_SETTINGS),
    }
    packages = {"linear": SKLEARN, "linear_dow": SKLEARN, "xgboost": XGBOOST}
    scores, params = {}, {}
    for kind in KINDS:
        held_out = predict.with_options(name=f"validate_{kind}", packages=packages[kind])(
            fitted[kind], split.validation
        )
        scores[kind] = evaluate.with_options(name=f"score_{kind}")(held_out, split.validation)
        in_sample = predict.with_options(name=f"profile_{kind}", packages=packages[kind])(
            final[kind], window
        )
        params[kind] = describe_model(kind, profile(window, in_sample),
                                      XGB_SETTINGS if kind == "xgboost" else {})  # fmt: skip
    production = load_model(MODEL, stage="production", as_of=as_of, required=False)
    production_score = evaluate.with_options(name="score_production")(
        predict.with_options(name="validate_production")(production, split.validation),
        split.validation,
    )
    # All or nothing: a candidate is registered only once every candidate is fitted, scored and
    # profiled and production is scored, so a failure anywhere registers no version at all.
    with after(*scores.values(), *params.values(), production_score):
        versions = {
            kind: register_model(
                f"{MODEL}-{kind}", final[kind], metrics=scores[kind], params=params[kind]
            )
            for kind in KINDS
        }
    return promotion_gate(
        as_of, floor, scores["linear"], scores["linear_dow"], scores["xgboost"], production_score,
        versions["linear"], versions["linear_dow"], versions["xgboost"],
    )  # fmt: skip
