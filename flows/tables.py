"""The reference tables, declared once: what `features` and `batch_prediction` write and what
`training` and `batch_prediction` read back.

Every write is checked against its declaration before anything is written (the declared columns
and no others, each of its type, no missing values, no key twice), and the first write creates
the table from the declaration rather than from whatever the first frame held. `conveyor db
tables` shows them as the database holds them.
"""

from components.design import LAG_COLUMNS, TARGET
from components.drift import COLUMNS as DRIFT_COLUMNS
from conveyor import Table

# One row per trading day, as validated from the source.
RAW_NYSE = Table(
    "raw_nyse",
    columns={
        "date": "timestamp",
        "day_of_week": str,
        "DJ_return": float,
        "log_volume": float,
        "log_volatility": float,
        "train": bool,
    },
    key="date",
)

# One row per trading day: the 15 lags (three series, 1-5 trading days back) and the target.
FEATURES = Table(
    "features",
    columns={
        "date": "timestamp",
        "day_of_week": str,
        **dict.fromkeys(LAG_COLUMNS, float),
        TARGET: float,
    },
    key="date",
)

# Per trading day, the production model's prediction and every candidate's (shadow = true).
PREDICTIONS = Table(
    "predictions",
    columns={
        "date": "timestamp",
        "model_name": str,
        "model_version": int,
        "prediction": float,
        "shadow": bool,
    },
    key=("date", "model_name"),
)

# Per trading day, the population stability index of each lag and of the predictions.
DRIFT = Table(
    "drift",
    columns={
        "date": "timestamp",
        **{f"psi_{c}": float for c in DRIFT_COLUMNS},
        "psi_max": float,
        "drift_flag": bool,
    },
    key="date",
)
