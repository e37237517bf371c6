"""Fan-out and fan-in with the in-process runner: one step per item, collected in item order."""

from __future__ import annotations

import pytest

import conveyor
from conveyor.dsl.render import render_mermaid, render_text
from conveyor.errors import PipelineDefinitionError

STEPS = """
import json, time
from pathlib import Path
from conveyor import Metrics, component

@component
def features(n: int) -> list:
    return list(range(n))

@component
def train(config: dict, data: list, log: str = "") -> Metrics:
    if log:  # how many items run at once
        with open(log, "a") as f:
            f.write(f"start {time.monotonic()}\\n")
        time.sleep(0.3)
        with open(log, "a") as f:
            f.write(f"end {time.monotonic()}\\n")
    if config.get("fail"):
        raise ValueError(f"model {config['name']} cannot be fitted")
    return Metrics(score=sum(data) * config["alpha"])

@component
def best(scores: list[Metrics]) -> dict:
    return {"scores": [s["score"] for s in scores], "best": max(s["score"] for s in scores)}

@component(allow_failures=True)
def best_of_the_rest(scores: list[Metrics]) -> dict:
    return {"scores": [s["score"] for s in scores]}

@component
def square(x: int) -> int:
    return x * x

@component
def total(values: list[int]) -> int:
    return sum(values)
"""

FLOWS = """
from conveyor import pipeline
from steps.models import best, best_of_the_rest, features, square, total, train

CONFIGS = [{"name": "lda", "alpha": 1.0}, {"name": "qda", "alpha": 2.0},
           {"name": "nb", "alpha": 3.0}]

@pipeline
def compare(n: int = 4, configs: list = CONFIGS):
    data = features(n)
    return best(train.map(config=configs, data=data))

@pipeline
def literal(n: int = 4):
    data = features(n)
    return best(train.map(config=[{"name": "a", "alpha": 1.0}, {"name": "b", "alpha": 0.5}],
                          data=data))

@pipeline
def tolerant(n: int = 4, configs: list = CONFIGS):
    return best_of_the_rest(train.map(config=configs, data=features(n)))

@pipeline
def bounded(configs: list, log: str, n: int = 2):
    return best(train.map(config=configs, data=features(n), log=log, max_parallel=2))

@pipeline
def explicit(n: int = 3):
    return total([square(n), square(2), square(1)])

@pipeline
def squares(xs: list = [1, 2, 3]):
    return total(square.map(x=xs))
"""


@pytest.fixture
def models(project):
    project.write("steps/models.py", STEPS)
    project.write("flows/models.py", FLOWS)
    return project


def _run(name, params=None, **options):
    return conveyor.run(name, params or {}, runner="inprocess", hooks=[], **options)


def test_a_map_is_one_step_per_item_collected_in_order(models):
    result = _run("compare")
    assert result.ok, result.error
    assert list(result.steps) == ["features", "train[lda]", "train[qda]", "train[nb]", "best"]
    assert result.output == {"scores": [6.0, 12.0, 18.0], "best": 18.0}
    again = _run("compare")
    assert {s.status for s in again.steps.values()} == {"cached"}


def test_changing_one_item_reruns_that_item_and_the_collector(models):
    _run("compare")
    configs = [{"name": "lda", "alpha": 1.0}, {"name": "qda", "alpha": 5.0},
               {"name": "nb", "alpha": 3.0}]  # fmt: skip
    result = _run("compare", {"configs": configs})
    ran = {name: s.reason for name, s in result.steps.items() if s.status != "cached"}
    assert ran == {
        "train[qda]": "parameter config changed",
        "best": "input scores (item train[qda]) changed",
    }
    assert result.output["scores"] == [6.0, 30.0, 18.0]


def test_items_from_a_parameter_or_a_literal_list(models):
    assert _run("literal").output == {"scores": [6.0, 3.0], "best": 6.0}
    assert list(_run("literal").steps)[1:3] == ["train[a]", "train[b]"]
    squares = _run("squares", {"xs": [2, 3, 4, 5]})
    assert squares.output == 4 + 9 + 16 + 25
    assert [n for n in squares.steps if n.startswith("square")] == [
        "square[2]", "square[3]", "square[4]", "square[5]",
    ]  # fmt: skip
    assert _run("squares", {"xs": []}).output == 0  # nothing to map: an empty list


def test_an_explicit_list_of_step_outputs_is_collected_in_order(models):
    result = _run("explicit")
    assert result.output == 9 + 4 + 1
    assert result.steps["total"].inputs["values"] == [
        result.steps[name].artifacts["output"].sha256 for name in ("square", "square_2", "square_3")
    ]


def test_one_failed_item_skips_the_collector_unless_it_allows_failures(models):
    configs = [{"name": "lda", "alpha": 1.0}, {"name": "qda", "alpha": 2.0, "fail": True},
               {"name": "nb", "alpha": 3.0}]  # fmt: skip
    strict = _run("compare", {"configs": configs})
    assert strict.status == "failed"
    assert strict.steps["train[qda]"].status == "failed"
    assert (strict.steps["train[lda]"].status, strict.steps["train[nb]"].status) == (
        "succeeded", "succeeded",
    )  # fmt: skip
    assert strict.steps["best"].status == "skipped"
    assert strict.steps["best"].reason == "upstream train[qda] did not succeed"

    lenient = _run("tolerant", {"configs": configs})
    step = lenient.steps["best_of_the_rest"]
    assert step.status == "succeeded"
    assert step.output == {"scores": [6.0, 18.0]}  # the successful ones, in item order
    assert step.reason.endswith("without failed item(s) train[qda]")
    assert lenient.status == "failed"  # an item failed: the run says so


def test_max_parallel_bounds_the_items_running_at_once(models, tmp_path):
    log = tmp_path / "starts.txt"
    configs = [{"name": f"m{i}", "alpha": 1.0} for i in range(5)]
    result = _run("bounded", {"configs": configs, "log": str(log)}, max_parallel=5)
    assert result.ok, result.error
    events = sorted(
        (float(t), kind) for kind, t in (line.split() for line in log.read_text().splitlines())
    )
    running = peak = 0
    for _, kind in events:
        running += 1 if kind == "start" else -1
        peak = max(peak, running)
    assert peak == 2


def test_the_dag_draws_a_map_once_with_its_count(models):
    from conveyor.ops.discovery import resolve_pipeline

    compare = resolve_pipeline("compare", models.settings)
    text = render_text(compare)
    assert "step  (data=features, log='')  map over config: items of configs" in text
    assert "train[lda]" not in text  # not its items: they exist once parameters are known
    assert "(scores=train[*])" in text
    literal = resolve_pipeline("literal", models.settings)
    assert '[["train × 2 items"]]' in render_mermaid(literal)
    assert "==>|scores|" in render_mermaid(literal)


def _steps(project):
    from conveyor.ops.discovery import ensure_importable

    ensure_importable(project.root)
    import steps.models

    return steps.models


def test_a_map_outside_a_pipeline_is_the_function_over_the_items(models):
    square = _steps(models).square

    assert square.map(x=[1, 2, 3]) == [1, 4, 9]


def test_map_definition_errors_say_what_to_do(models):
    from conveyor import pipeline

    square, total = _steps(models).square, _steps(models).total

    with pytest.raises(PipelineDefinitionError, match="maps over exactly one argument"):

        @pipeline
        def nothing_to_map(x: int = 1):
            return total(square.map(x=x))

    with pytest.raises(PipelineDefinitionError, match=r"declare the parameter as a list"):

        @pipeline
        def not_a_list_parameter(x: int = 1):
            return square(square.map(x=[1, 2]))
