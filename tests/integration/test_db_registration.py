"""register_model on SQLite and PostgreSQL: metrics are numbers (checked with a message naming
the entry and the step that produced it), and a run that fails anywhere before its
registrations registers nothing, the reference training flow included."""

from __future__ import annotations

from datetime import date

import pytest

import conveyor
from conveyor.db import registry
from conveyor.engine.settings import Settings
from tests.conftest import Project
from tests.db_support import BACKENDS, schema_url

STEPS = """
from conveyor import Metrics, component


class Model:
    def __init__(self, kind: str) -> None:
        self.kind = kind


@component
def fit(kind: str, fail: bool = False) -> Model:
    if fail:
        raise RuntimeError(f"fitting {kind} failed")
    return Model(kind)


@component
def score(model: Model) -> Metrics:
    return Metrics(rmse=0.5, rows=10)


@component
def summary(model: Model) -> dict:
    return {"rmse": 0.5, "kind": model.kind}
"""

FLOWS = """
from datetime import date

from conveyor import after, pipeline, register_model
from steps.models import fit, score, summary


@pipeline(name="two_models", partition="as_of")
def two_models(as_of: date, fail_b: bool = False):
    models = {"a": fit("a"), "b": fit("b", fail_b)}
    scores = {kind: score(model) for kind, model in models.items()}
    with after(*scores.values()):  # all or nothing, as flows/training.py registers
        for kind, model in models.items():
            register_model(f"m-{kind}", model, metrics=scores[kind])


@pipeline(name="described", partition="as_of")
def described(as_of: date):
    model = fit("a")
    register_model("m-described", model, metrics=summary(model))
"""

D = date(2024, 5, 6)


@pytest.fixture(params=BACKENDS)
def settings(request: pytest.FixtureRequest, project: Project) -> Settings:
    project.write("steps/models.py", STEPS)
    project.write("flows/models.py", FLOWS)
    if request.param == "sqlite":
        return project.settings
    return project.settings.with_changes(
        database_url=schema_url(request.getfixturevalue("pg_schema"))
    )


def registered(settings: Settings) -> list[str]:
    return sorted(m.name for m in registry.models(settings))


def test_a_failure_in_any_branch_registers_no_version(settings: Settings) -> None:
    failed = conveyor.run("two_models", {"as_of": D, "fail_b": True}, runner="inprocess",
                          settings=settings)  # fmt: skip
    assert not failed.ok
    assert failed.steps["fit_2"].status == "failed"
    # m-a's own branch succeeded: it waits for m-b's score all the same
    for step, blocked_by in (("register_model", "score_2"), ("register_model_2", "fit_2")):
        assert failed.steps[step].status == "skipped"
        assert failed.steps[step].reason == f"upstream {blocked_by} did not succeed"
    assert registered(settings) == []  # not even m-a, whose own branch succeeded
    done = conveyor.run("two_models", {"as_of": D}, runner="inprocess", settings=settings)
    assert done.ok, done.error
    assert registered(settings) == ["m-a", "m-b"]
    assert registry.resolve(settings, "m-a", version=1).metrics == {"rmse": 0.5, "rows": 10.0}


def test_metrics_that_are_not_numbers_name_the_entry_and_its_step(settings: Settings) -> None:
    result = conveyor.run("described", {"as_of": D}, runner="inprocess", settings=settings)
    assert not result.ok
    assert (result.steps["register_model"].error or "").startswith(
        "step 'register_model': register_model('m-described'): metrics['kind'] is 'a' (str), "
        "not a number; metrics are numbers (pass other facts in params=) (the output of step "
        "summary). Nothing was registered."
    )
    assert registered(settings) == []


def test_the_training_flow_registers_only_after_every_fit_and_score() -> None:
    """flows/training.py: every registration waits for every step that fits, validates,
    scores or profiles a model, and for the production score."""
    from flows.training import training

    registrations = [s for s in training.steps if s.name.startswith("register_model")]
    assert len(registrations) == 3
    computing = {
        s.name
        for s in training.steps
        if s.name.startswith(("fit_", "train_", "validate_", "score_", "profile", "describe_"))
    }
    assert {"fit_xgboost", "score_production", "profile_3", "train_linear"} <= computing
    for step in registrations:
        upstream: set[str] = set()
        frontier = {step.name}
        while frontier:
            found = {u for name in frontier for u in training.step(name).upstream}
            frontier = found - upstream
            upstream |= found
        assert computing <= upstream, (step.name, sorted(computing - upstream))
