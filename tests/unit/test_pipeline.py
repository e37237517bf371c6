"""@pipeline tracing: the DAG it records and the errors it raises while tracing."""

from __future__ import annotations

from datetime import date
from typing import NamedTuple

import pandas as pd
import pytest

from conveyor import Metrics, component, load_table, pipeline, write_table
from conveyor.dsl.render import levels, render_mermaid, render_text
from conveyor.errors import ParameterError, PipelineDefinitionError


@component
def source(n: int) -> pd.DataFrame:
    return pd.DataFrame({"x": range(n)})


@component
def double(df: pd.DataFrame, factor: float = 2.0) -> pd.DataFrame:
    return df * factor


class Split(NamedTuple):
    train: pd.DataFrame
    test: pd.DataFrame


@component
def split(df: pd.DataFrame) -> Split:
    return Split(df.iloc[:1], df.iloc[1:])


@component
def score(train: pd.DataFrame, test: pd.DataFrame) -> Metrics:
    return Metrics(n=len(train) + len(test))


@component
def count(n: int) -> int:
    return n


def test_trace_records_steps_edges_and_independence():
    @pipeline
    def flow(n: int = 3):
        a = source(n)
        b = source(n)  # same component twice: suffixed name
        parts = split(double(a))
        return score(parts.train, test=double(b, factor=3.0))

    assert flow.step_names == ["source", "source_2", "double", "split", "double_2", "score"]
    assert flow.step("split").upstream == ("double",)
    assert flow.step("score").upstream == ("split", "double_2")
    assert flow.step("double_2").inputs["factor"].value == 3.0
    assert flow.step("double").inputs["factor"].value == 2.0  # default recorded for the cache
    assert flow.step("source").inputs["n"].param == "n"
    assert flow.downstream("source_2") == {"double_2", "score"}
    first_level = [s.name for s in levels(flow)[0]]
    assert first_level == ["source", "source_2"]  # independent steps share a level


def test_namedtuple_outputs_unpack_and_are_addressed_by_field():
    @pipeline
    def flow(n: int):
        train, test = split(source(n))
        return score(train, test)

    bindings = flow.step("score").inputs
    assert (bindings["train"].step, bindings["train"].output) == ("split", "train")
    assert (bindings["test"].step, bindings["test"].output) == ("split", "test")


def test_explicit_names_and_with_options():
    @pipeline
    def flow(n: int):
        source.with_options(name="left")(n)
        source.with_options(name="right")(n)

    assert flow.step_names == ["left", "right"]


def test_host_steps_are_nodes():
    @pipeline(partition="as_of")
    def flow(as_of: date, days: int = 30):
        frame = load_table("features", end=as_of, days=days)
        write_table(double(frame), "doubled", partition=as_of)

    assert [s.kind for s in flow.steps] == ["host", "component", "host"]
    writer = flow.step("write_table").inputs
    assert writer["partition_start"].param == "as_of"
    assert flow.partition == "as_of"


def test_ranged_partition():
    @pipeline(partition=("start", "end"), calendar="weekdays")
    def flow(start: date, end: date):
        write_table(source(3), "t", partition=(start, end), partition_col="d")

    assert flow.ranged
    inputs = flow.step("write_table").inputs
    assert (inputs["partition_start"].param, inputs["partition_end"].param) == ("start", "end")
    assert flow.partition_range({"start": date(2024, 1, 1), "end": date(2024, 1, 5)}) == (
        date(2024, 1, 1),
        date(2024, 1, 5),
    )


def _trace_error(body) -> str:
    with pytest.raises(PipelineDefinitionError) as info:
        pipeline(body)
    return str(info.value)


def test_arithmetic_if_and_formatting_on_placeholders_are_trace_errors():
    def arithmetic(n: int):
        source(n + 1)

    def branch(n: int):
        if n:
            source(n)

    def fstring(n: int):
        load_table(f"table_{n}")

    def comparison(n: int):
        source(3) == n  # noqa: B015

    assert "cannot use + on parameter 'n'" in _trace_error(arithmetic)
    assert "Compute it inside a step" in _trace_error(arithmetic)
    assert "cannot use `if`/`and`/`or` on parameter 'n'" in _trace_error(branch)
    assert "cannot use an f-string on parameter 'n'" in _trace_error(fstring)
    assert "cannot use ==" in _trace_error(comparison)


def test_argument_errors():
    def unknown(n: int):
        source(n, colour="red")

    def missing(n: int):
        source()

    def too_many(n: int):
        source(n, n)

    assert "component 'source' got an unexpected argument 'colour'; its parameters are n" in (
        _trace_error(unknown)
    )
    assert "component 'source' is missing argument(s) 'n'" in _trace_error(missing)
    assert "takes 1 arguments but 2 were given" in _trace_error(too_many)


def test_wrong_placeholder_use():
    def several_outputs(n: int):
        double(split(source(n)))

    def wrong_type(n: int):
        count(source(n))

    def literal_frame(n: int):
        double(pd.DataFrame({"x": [1]}))

    def nested(n: int):
        count([n])

    def unknown_field(n: int):
        _ = split(source(n)).validation

    assert "has several outputs (train, test); pass one of them" in _trace_error(several_outputs)
    assert "expects int (json) but receives the output of step source" in _trace_error(wrong_type)
    assert "a literal DataFrame cannot be passed" in _trace_error(literal_frame)
    assert "holding placeholders" in _trace_error(nested)
    assert "Give the component a parameter per value" in _trace_error(nested)
    assert "has no output 'validation'; its outputs are train, test" in _trace_error(unknown_field)


def test_clashing_explicit_names():
    def clash(n: int):
        source.with_options(name="load")(n)
        source.with_options(name="load")(n)

    assert "two steps are named 'load'" in _trace_error(clash)


def test_components_from_closures_are_refused():
    def make():
        @component
        def inner(x: int) -> int:
            return x

        return inner

    inner = make()

    def uses_closure(n: int):
        inner(n)

    message = _trace_error(uses_closure)
    assert "inside another function (a closure)" in message
    assert "importable from the project root" in message


def test_placeholder_from_another_pipeline_is_refused():
    leaked = []

    @pipeline
    def first(n: int):
        leaked.append(source(n))

    def second(n: int):
        double(leaked[0])

    assert "placeholder from another pipeline" in _trace_error(second)


def test_pipeline_parameter_errors():
    def no_hint(n):
        source(n)

    def frame_param(df: pd.DataFrame):
        double(df)

    def bad_partition(n: int):
        source(n)

    assert "parameter 'n' has no type hint" in _trace_error(no_hint)
    assert "pipeline parameters are JSON values" in _trace_error(frame_param)
    with pytest.raises(PipelineDefinitionError, match="is not a `date` parameter"):
        pipeline(partition="n")(bad_partition)


def test_empty_pipeline_is_an_error():
    def empty(n: int):
        return None

    assert "calls no components" in _trace_error(empty)


def test_bind_coerces_cli_strings_and_reports_bad_parameters():
    @pipeline
    def flow(when: date, n: int = 3, ratio: float = 0.5, on: bool = False):
        source(n)

    assert flow.bind({"when": "2024-02-03", "n": "7", "on": "true"}) == {
        "when": date(2024, 2, 3),
        "n": 7,
        "ratio": 0.5,
        "on": True,
    }
    with pytest.raises(ParameterError, match="has no parameter 'colour'"):
        flow.bind({"when": "2024-01-01", "colour": "red"})
    with pytest.raises(ParameterError, match="needs parameter 'when'"):
        flow.bind({})
    with pytest.raises(ParameterError, match="parameter 'n' expects int, got 'many'"):
        flow.bind({"when": "2024-01-01", "n": "many"})
    # API values: no silent truncation, no bool taken for a number
    with pytest.raises(ParameterError, match=r"parameter 'n' expects int, got 2\.7 \(not a whole"):
        flow.bind({"when": "2024-01-01", "n": 2.7})
    with pytest.raises(ParameterError, match="parameter 'n' expects int, got True"):
        flow.bind({"when": "2024-01-01", "n": True})
    with pytest.raises(ParameterError, match="parameter 'ratio' expects float, got False"):
        flow.bind({"when": "2024-01-01", "ratio": False})
    assert flow.bind({"when": "2024-01-01", "n": 4.0})["n"] == 4


def test_render_text_and_mermaid():
    @pipeline
    def flow(n: int = 3):
        train, test = split(double(source(n)))
        return score(train, test)

    text = render_text(flow)
    assert "pipeline flow: 4 steps" in text
    assert "level 1\n  source" in text
    assert "score   step  (train=split.train, test=split.test)" in text
    mermaid = render_mermaid(flow)
    assert mermaid.startswith("flowchart TD")
    assert "n_source -->|df| n_double" in mermaid
    assert "n_split -->|train → train| n_score" in mermaid


def test_after_orders_steps_without_a_data_edge():
    from conveyor import after

    @pipeline(partition=("start", "end"))
    def flow(start: date, end: date):
        written = write_table(source(3), "raw", partition=(start, end), partition_col="x")
        with after(written):
            history = load_table("raw", end=end, days=30)
        return double(history)

    loader = flow.step("load_table")
    assert loader.upstream == ("write_table",) and loader.after == ("write_table",)
    assert flow.step("double").upstream == ("load_table",)
    assert [[s.name for s in level] for level in levels(flow)] == [
        ["source"],
        ["write_table"],
        ["load_table"],
        ["double"],
    ]
    assert "after write_table" in render_text(flow)
    assert "n_write_table -.-> n_load_table" in render_mermaid(flow)


def test_after_outside_a_pipeline_is_an_error():
    from conveyor import after

    with pytest.raises(PipelineDefinitionError, match="inside a @pipeline body only"), after():
        pass


def test_register_model_metrics_are_one_metrics_output_or_literal_numbers():
    """A dict of step outputs cannot be bound (each argument is one output, parameter or
    literal): the error says to return them from one step as Metrics. Literal metrics that
    are not numbers fail when the pipeline is traced, not when the run reaches them."""
    from conveyor import register_model

    def of_outputs(n: int):
        parts = split(source(n))
        register_model("m", parts.train, metrics={"train": score(parts.train, parts.test)})

    def of_text(n: int):
        register_model("m", source(n), metrics={"kind": "linear"})

    def of_a_number(n: int):
        register_model("m", source(n), metrics=0.5)

    def of_a_metrics_output(n: int):
        parts = split(source(n))
        register_model("m", parts.train, metrics=score(parts.train, parts.test))
        register_model("m2", parts.train, metrics={"rmse": 0.5, "rows": 10})

    outputs, text, number = (_trace_error(f) for f in (of_outputs, of_text, of_a_number))
    assert "register_model', argument 'metrics': a list, tuple or dict holding " in outputs
    assert "Return the metrics from one step as conveyor.Metrics" in outputs
    assert "metrics['kind'] is 'linear' (str), not a number; metrics are numbers" in text
    assert "(pass other facts in params=)" in text
    assert "metrics must be a step's Metrics output or a dict of numbers, got float 0.5" in number
    traced = pipeline(of_a_metrics_output)
    assert traced.step("register_model").inputs["metrics"].step == "score"
    assert traced.step("register_model_2").inputs["metrics"].value == {"rmse": 0.5, "rows": 10}
