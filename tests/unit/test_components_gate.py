"""components.gate: the promotion decision table."""

from __future__ import annotations

import pytest

from components.gate import Promotion, choose_promotion

CANDIDATES = {
    "linear": {"r2": 0.5428, "mae": 0.12},
    "linear_dow": {"r2": 0.5711, "mae": 0.12},
    "xgboost": {"r2": 0.5847, "mae": 0.12},
}


@pytest.mark.parametrize(
    ("candidates", "production", "floor", "chosen", "why"),
    [
        (CANDIDATES, None, 0.3, "xgboost", "no production model"),
        (CANDIDATES, None, 0.6, None, "< floor 0.6000"),
        (CANDIDATES, {"r2": 0.59}, 0.3, None, "not above production's 0.5900"),
        (CANDIDATES, {"r2": 0.5847}, 0.3, None, "not above production's"),  # a tie keeps it
        (CANDIDATES, {"r2": 0.55}, 0.3, "xgboost", "> production's 0.5500"),
        (CANDIDATES, {"rows": 0}, 0.3, "xgboost", "production has no r2"),
        ({"a": {"r2": 0.5}, "b": {"r2": 0.5}}, None, 0.0, "a", "no production model"),
        ({"a": {"rows": 0}}, None, 0.0, None, "no candidate has a validation r2"),
        ({}, None, 0.0, None, "no candidate"),
    ],
)
def test_the_decision_table(
    candidates: dict, production: dict | None, floor: float, chosen: str | None, why: str
) -> None:
    decision = choose_promotion(candidates, production, floor)
    assert isinstance(decision, Promotion) and decision.candidate == chosen
    assert why in decision.reason


def test_the_decision_unpacks_into_name_and_reason() -> None:
    name, reason = choose_promotion({"m": {"r2": 0.4}}, None, floor=0.1)
    assert name == "m" and reason.startswith("m has r2 0.4000")
