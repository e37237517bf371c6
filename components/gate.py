"""The promotion gate: which candidate, if any, replaces the production model. Pure Python."""

from __future__ import annotations

from typing import NamedTuple


class Promotion(NamedTuple):
    """The gate's decision: the candidate to promote (None: keep production) and why."""

    candidate: str | None
    reason: str


def choose_promotion(
    candidates: dict[str, dict], production: dict | None, floor: float
) -> Promotion:
    """The best candidate by validation r2, if it passes `floor` and beats production's r2.

    Args:
        candidates: name -> metrics on the validation holdout (a candidate without r2 is skipped).
        production: the production model's metrics on the same holdout, or None if there is none.
        floor: the least r2 a candidate must reach.
    """
    scored = {name: float(m["r2"]) for name, m in candidates.items() if m.get("r2") is not None}
    if not scored:
        return Promotion(None, "no candidate has a validation r2")
    # highest r2; ties go to the first name in sorted order, so the choice is reproducible
    best = min(scored, key=lambda name: (-scored[name], name))
    r2 = scored[best]
    if r2 < floor:
        return Promotion(None, f"best candidate {best} has r2 {r2:.4f} < floor {floor:.4f}")
    if production is None:
        return Promotion(best, f"{best} has r2 {r2:.4f} ≥ floor {floor:.4f}; no production model")
    current = production.get("r2")
    if current is None:
        return Promotion(
            best, f"{best} has r2 {r2:.4f} ≥ floor {floor:.4f}; production has no r2 on the holdout"
        )
    if r2 <= float(current):
        return Promotion(
            None, f"best candidate {best} has r2 {r2:.4f}, not above production's {current:.4f}"
        )
    return Promotion(best, f"{best} has r2 {r2:.4f} > production's {current:.4f} and ≥ floor")
