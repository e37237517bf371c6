"""@component: definition-time validation and plain-function behaviour."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import date
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pytest

from conveyor import Metrics, component
from conveyor.dsl.artifacts import Codec
from conveyor.dsl.component import parse_memory
from conveyor.errors import ComponentDefinitionError


def test_called_outside_a_pipeline_it_is_the_plain_function():
    @component(packages=["six"])
    def add(a: int, b: int = 2) -> int:
        return a + b

    assert add(1) == 3
    assert add.__name__ == "add"
    assert add.spec.packages == ("six",)


class Pair(NamedTuple):
    frame: pd.DataFrame
    score: float


def test_codecs_follow_the_type_hints():
    @component
    def step(
        df: pd.DataFrame,
        arr: np.ndarray,
        n: int,
        when: date,
        opts: dict[str, float],
        model: object,
        maybe: int | None = None,
    ) -> Pair: ...

    codecs = {i.name: i.codec for i in step.spec.inputs}
    assert codecs == {
        "df": Codec("parquet"),
        "arr": Codec("npy"),
        "n": Codec("json"),
        "when": Codec("json", "date"),
        "opts": Codec("json"),
        "model": Codec("joblib"),
        "maybe": Codec("json"),
    }
    assert step.spec.returns == "namedtuple"
    assert [(o.name, o.codec) for o in step.spec.outputs] == [
        ("frame", Codec("parquet")),
        ("score", Codec("json")),
    ]
    assert set(step.spec.implied_packages) == {"pandas", "pyarrow", "numpy", "joblib"}


def test_metrics_and_none_returns():
    @component
    def scores() -> Metrics: ...

    @component
    def sink(x: int) -> None: ...

    assert scores.spec.outputs[0].codec == Codec("json", "metrics")
    assert sink.spec.returns == "none" and sink.spec.outputs == ()


@pytest.mark.parametrize(
    ("define", "message"),
    [
        (lambda: component(lambda x: 1), "parameter 'x' has no type hint"),
        (lambda: component(_no_return), "return value has no type hint"),
        (lambda: component(_any_input), "type Any is not supported"),
        (lambda: component(_callable_input), "callables, iterators and generators"),
        (lambda: component(_var_args), "*args, **kwargs"),
        (lambda: component(packages=["scikit learn"])(_ok), "'scikit learn' is not a valid"),
        (lambda: component(packages="six")(_ok), "write packages=['six']"),
        (lambda: component(memory="2 gigs")(_ok), "option memory: '2 gigs' is not a size"),
        (lambda: component(memory=0)(_ok), "option memory: 0 is not a positive"),
        (lambda: component(cpu=-1)(_ok), "option cpu: -1 is not a positive number"),
        (lambda: component(timeout=0)(_ok), "option timeout: 0 is not a positive"),
        (lambda: component(retries=-1)(_ok), "option retries: -1"),
        (lambda: component(env=["CONVEYOR_DATABASE_URL"])(_ok), "CONVEYOR_* variables"),
        (lambda: component(env=["not a name"])(_ok), "'not a name' is not a variable name"),
        (lambda: component(name="bad name!")(_ok), "not a valid step name"),
        (lambda: component(network="yes")(_ok), "option network"),
        (lambda: component(warm="no")(_ok), "option warm"),
        (lambda: component(_bad_default), "default {1, 2} is not JSON-able"),
    ],
)
def test_definition_errors_name_the_component_and_say_how_to_fix(define, message):
    with pytest.raises(ComponentDefinitionError) as info:
        define()
    assert message in str(info.value)
    assert "component '" in str(info.value)


def _ok(x: int) -> int:
    return x


def _no_return(x: int):
    return x


def _any_input(x: Any) -> int:
    return 1


def _callable_input(f: Callable[[int], int]) -> int:
    return 1


def _var_args(*xs: int) -> int:
    return 1


def _bad_default(x: int = {1, 2}) -> int:  # type: ignore[assignment]
    return 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [("512Mi", 512 * 2**20), ("2Gi", 2 * 2**30), ("1G", 10**9), ("1.5Gi", int(1.5 * 2**30)),
     ("100", 100), (4096, 4096)],
)  # fmt: skip
def test_memory_quantities(text, expected):
    assert parse_memory(text) == expected


def test_with_options_returns_a_validated_copy():
    @component(retries=1)
    def step(x: int) -> int:
        return x

    other = step.with_options(name="renamed", memory="1Gi")
    assert other.spec.name == "renamed" and other.spec.memory == 2**30
    assert step.spec.name == "step" and step.spec.memory is None
    assert other.spec.retries == 1
    with pytest.raises(ComponentDefinitionError, match="unknown option"):
        step.with_options(colour="red")
    with pytest.raises(ComponentDefinitionError, match="option memory"):
        step.with_options(memory="lots")


def test_warm_is_an_option_that_never_changes_the_cache_key(project, monkeypatch):
    import importlib

    from conveyor.engine.fingerprint import Fingerprinter

    source = """
from conveyor import component

@component{options}
def step(x: int) -> int:
    return x + 1
"""
    monkeypatch.syspath_prepend(str(project.root))
    prints, specs = [], []
    for options in ("", "(warm=False)"):
        project.write("steps/warmth.py", source.format(options=options))
        sys.modules.pop("steps.warmth", None)
        module = importlib.import_module("steps.warmth")
        specs.append(module.step.spec)
        prints.append(Fingerprinter(project.root).fingerprint(module.step))
    assert specs[0].warm is True and specs[1].warm is False
    assert prints[0] == prints[1]  # decorators are not part of a step's code
    assert module.step.with_options(warm=True).spec.warm is True


def test_unresolvable_string_hints_fall_back_by_name():
    namespace: dict[str, Any] = {}
    exec(
        "from __future__ import annotations\n"
        "def f(df: pd.DataFrame, n: int, m: SomeModel) -> Metrics: ...\n",
        namespace,
    )
    step = component(namespace["f"])
    codecs = {i.name: i.codec.format for i in step.spec.inputs}
    assert codecs == {"df": "parquet", "n": "json", "m": "joblib"}
    assert step.spec.outputs[0].codec == Codec("json", "metrics")


SPLIT_STEPS = """
from typing import TYPE_CHECKING, NamedTuple

from conveyor import component

if TYPE_CHECKING:  # pandas only for the type checker: the hints stay strings at run time
    import pandas as pd


class Split(NamedTuple):
    fit: "pd.DataFrame"
    validation: "pd.DataFrame"


@component
def split(rows: "pd.DataFrame", n: int) -> Split:
    return Split(rows.iloc[:n], rows.iloc[n:])


@component
def count(frame: "pd.DataFrame") -> int:
    return len(frame)
"""

SPLIT_FLOW = """
import pandas as pd

from conveyor import component, pipeline
from steps.split import count, split


@component
def rows(n: int) -> pd.DataFrame:
    return pd.DataFrame({"x": list(range(n))})


@pipeline
def splitting(n: int = 5):
    parts = split(rows(n), 2)
    return count(parts.fit), count(parts.validation)
"""


def test_a_namedtuple_of_dataframes_with_string_hints_has_dataframe_outputs(project) -> None:
    """`fit: "pd.DataFrame"` with pandas imported only for type checking: typing keeps the
    field as a ForwardRef the orchestrator cannot evaluate; it still reads as a DataFrame."""
    import conveyor

    project.write("steps/split.py", SPLIT_STEPS)
    project.write("flows/splitting.py", SPLIT_FLOW)
    sys.path.insert(0, str(project.root))  # (the project fixture takes it out again)
    from steps.split import split

    assert split.spec is not None and split.spec.returns == "namedtuple"
    assert [(o.name, o.codec) for o in split.spec.outputs] == [
        ("fit", Codec("parquet")), ("validation", Codec("parquet")),
    ]  # fmt: skip
    result = conveyor.run("splitting", {"n": 5}, runner="inprocess", hooks=[])
    assert result.ok, result.error
    assert result.output == (2, 3)


def test_a_namedtuple_defined_below_its_component_is_named(project) -> None:
    project.write("steps/later.py", '''
        from typing import NamedTuple

        import pandas as pd

        from conveyor import component


        @component
        def split(rows: pd.DataFrame) -> "Split":
            return Split(rows, rows)


        class Split(NamedTuple):
            fit: pd.DataFrame
            validation: pd.DataFrame
    ''')  # fmt: skip
    sys.path.insert(0, str(project.root))  # (the project fixture takes it out again)
    with pytest.raises(ComponentDefinitionError) as caught:
        __import__("steps.later")
    assert str(caught.value) == (
        "component 'split', return value: NamedTuple Split is defined below the component "
        "(line 13), so its fields are unknown when @component runs and the step would return "
        "one pickled value instead of its outputs. Define Split above the component."
    )
