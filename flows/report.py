"""What the reference flows produced, read back from the database (the demo's report, the tests)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from conveyor import ConveyorError, Registry, Settings, read_table

TABLES = ("raw_nyse", "features", "predictions", "drift")


@dataclass(frozen=True, slots=True)
class FlowReport:
    """Counts, test scores and the promoted model."""

    rows: dict[str, int]
    production_rows: int
    shadow_rows: int
    scores: dict[str, dict[str, float]]  # model_name -> r2, mae, rows (test rows only)
    promoted: dict[str, Any] | None
    drifted_dates: int


def _frame(settings: Settings, table: str):
    return read_table(table, settings=settings)


def model_scores(settings: Settings) -> dict[str, dict[str, float]]:
    """Test R² and MAE per model, from the predictions joined to the actual log_volume."""
    predictions = _frame(settings, "predictions")
    actual = _frame(settings, "features")[["date", "log_volume"]]
    joined = predictions.merge(actual, on="date", how="inner")
    scores = {}
    for name, group in joined.groupby("model_name", sort=True):
        error = group["log_volume"] - group["prediction"]
        total = ((group["log_volume"] - group["log_volume"].mean()) ** 2).sum()
        scores[str(name)] = {
            "r2": float(1 - (error**2).sum() / total),
            "mae": float(error.abs().mean()),
            "rows": len(group),
        }
    return scores


def build_report(settings: Settings) -> FlowReport:
    """Everything the demo prints, computed from the database."""
    rows = {table: len(_frame(settings, table)) for table in TABLES}
    predictions = _frame(settings, "predictions")
    drift = _frame(settings, "drift")
    try:
        record = Registry(settings).get("nyse-volume", stage="production")
        promoted = {"name": record.name, "version": record.version,
                    "kind": record.params.get("kind"), "metrics": record.metrics}  # fmt: skip
    except ConveyorError:  # nothing promoted yet
        promoted = None
    return FlowReport(
        rows=rows,
        production_rows=int((~predictions["shadow"]).sum()),
        shadow_rows=int(predictions["shadow"].sum()),
        scores=model_scores(settings),
        promoted=promoted,
        drifted_dates=int(drift["drift_flag"].sum()) if len(drift) else 0,
    )
