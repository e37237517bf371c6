"""A map of seven models collected into a promotion step, in venvs and in containers: the same
items, the same order, the same results; one item changed re-runs it and the collector only."""

from __future__ import annotations

import pytest

import conveyor

pytestmark = [pytest.mark.slow]

STEPS = """
from conveyor import Metrics, component

MODELS = ["lda", "qda", "nb", "knn", "tree", "forest", "svm"]

@component
def features(n: int) -> "pd.DataFrame":
    import pandas as pd

    return pd.DataFrame({"x": range(n), "y": [v % 3 for v in range(n)]})

@component
def fit(model: str, data: "pd.DataFrame", bias: float = 0.0) -> Metrics:
    weight = len(model) + ord(model[0])
    return Metrics(score=float((data["x"] * weight % 7 == data["y"]).mean()) + bias)

@component
def promote(scores: list[Metrics], names: list) -> dict:
    ranked = sorted(zip(names, (s["score"] for s in scores)), key=lambda p: -p[1])
    return {"best": ranked[0][0], "scores": dict(ranked)}
"""

FLOWS = """
from conveyor import pipeline
from steps.seven import MODELS, features, fit, promote

@pipeline
def seven(n: int = 50, models: list = MODELS, bias: float = 0.0):
    data = features(n)
    return promote(fit.map(model=models, data=data, bias=bias), models)
"""


@pytest.mark.parametrize(
    "runner", [pytest.param("venv", marks=pytest.mark.venv),
               pytest.param("docker", marks=pytest.mark.docker)],
)  # fmt: skip
def test_seven_models_mapped_and_promoted(project, runner):
    if runner == "docker":
        from tests.integration.test_docker_runner import _engine

        client, reason = _engine()
        if client is None:
            pytest.skip(reason)
    project.write("steps/seven.py", STEPS)
    project.write("flows/seven.py", FLOWS)
    first = conveyor.run("seven", runner=runner, hooks=[])
    assert first.ok, first.error
    items = [n for n in first.steps if n.startswith("fit[")]
    assert items == [f"fit[{m}]" for m in ("lda", "qda", "nb", "knn", "tree", "forest", "svm")]
    scores = first.output["scores"]
    assert set(scores) == {"lda", "qda", "nb", "knn", "tree", "forest", "svm"}
    assert first.output["best"] == max(scores, key=scores.get)
    expected = {  # what fit computes, here in the test process
        m: sum((x * (len(m) + ord(m[0]))) % 7 == x % 3 for x in range(50)) / 50 for m in scores
    }
    assert scores == pytest.approx(expected)

    models = ["lda", "qda", "nb", "knn", "tree", "forest", "svm", "mlp"]
    grown = conveyor.run("seven", {"models": models}, runner=runner, hooks=[])
    ran = {n: s.reason for n, s in grown.steps.items() if s.status != "cached"}
    assert ran == {
        "fit[mlp]": "no previous run",
        "promote": "parameter names changed; input scores (item fit[mlp]) changed",
    }
    assert set(grown.output["scores"]) == set(models)
