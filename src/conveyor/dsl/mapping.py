"""Fan-out and fan-in: one step per item of a list, and steps that collect their outputs.

`train.map(model=["lda", "qda"], data=features)` records one *map* step in the DAG: a template
with the argument it maps over and where the items come from, a literal list or a `list`
pipeline parameter. A parameter `models: list[T]` of another component collects the items'
outputs in item order. The DAG stays static: `Pipeline.expand(params)` turns each map into its
concrete item steps (`train[lda]`, `train[qda]`, ...) once the parameters are bound, at plan time,
and every collecting binding into the list of their outputs. Each item is then an ordinary
step: cached, retried and recorded on its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from conveyor._runtime.hashing import canonical_json
from conveyor.dsl.placeholders import Binding
from conveyor.errors import ParameterError

if TYPE_CHECKING:
    from conveyor.dsl.pipeline import Pipeline, Step

_LABEL = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True, slots=True)
class MapSpec:
    """How a map step fans out: over which argument, and where its items come from."""

    over: str  # the component parameter that gets one item per step
    items: tuple[Any, ...] | None = None  # a literal list, known when the pipeline is traced
    param: str | None = None  # or the pipeline parameter whose list is known at run time
    max_parallel: int | None = None  # items of this map running at once (on top of the engine)

    def describe(self) -> str:
        return f"{len(self.items)} items" if self.items is not None else f"items of {self.param}"


def item_labels(items: tuple[Any, ...]) -> list[str]:
    """Readable, unique step-name suffixes: the item itself when it is a short scalar."""
    labels = []
    for index, item in enumerate(items):
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            item = item["name"]  # a configuration names itself
        text = str(item) if isinstance(item, str | int | float | bool) else ""
        text = _LABEL.sub("-", text).strip("-")[:40]
        labels.append(text or str(index))
    if len(set(labels)) != len(labels):  # duplicates or clashes: positions are always unique
        return [str(i) for i in range(len(items))]
    return labels


def expand(pipeline: Pipeline, params: dict[str, Any]) -> Pipeline:
    """The pipeline with every map turned into its item steps for these parameters."""
    if not any(step.map is not None for step in pipeline.steps):
        return pipeline
    names: dict[str, list[str]] = {}  # map step -> its item steps, in order
    steps: list[Step] = []
    for step in pipeline.steps:
        if step.map is None:
            steps.append(_resolved(step, names))
            continue
        items = _items(pipeline.name, step, params)
        labels = item_labels(items)
        group = (step.name, step.map.max_parallel)
        names[step.name] = [f"{step.name}[{label}]" for label in labels]
        template = _resolved(step, names)
        for name, item in zip(names[step.name], items, strict=True):
            bindings = tuple(
                (k, Binding.literal(item) if k == step.map.over else b)
                for k, b in template.bindings
            )
            steps.append(replace(template, name=name, bindings=bindings, map=None, group=group))
    outputs = _resolved_outputs(pipeline.outputs, names)
    return replace(pipeline, steps=tuple(steps), outputs=outputs)


def _items(pipeline: str, step: Step, params: dict[str, Any]) -> tuple[Any, ...]:
    spec = step.map
    assert spec is not None
    if spec.items is not None:
        return spec.items
    assert spec.param is not None
    value = params.get(spec.param)
    if not isinstance(value, list | tuple):
        raise ParameterError(
            f"pipeline {pipeline!r}: step {step.name!r} maps over parameter {spec.param!r}, "
            f"which must be a list; got {value!r}"
        )
    for item in value:
        canonical_json(item)  # items are step parameters: JSON values
    return tuple(value)


def _resolved_binding(binding: Binding, names: dict[str, list[str]]) -> Binding:
    if binding.kind != "collect" or binding.items or binding.step not in names:
        return binding
    output = binding.output or "output"
    return Binding.of_items(tuple(Binding.of_output(n, output) for n in names[binding.step]))


def _resolved(step: Step, names: dict[str, list[str]]) -> Step:
    """A step whose collecting bindings and orderings name the item steps of earlier maps."""
    bindings = tuple((k, _resolved_binding(b, names)) for k, b in step.bindings)
    after = tuple(n for name in step.after for n in names.get(name, [name]))
    return replace(step, bindings=bindings, after=after)


def _resolved_outputs(value: Any, names: dict[str, list[str]]) -> Any:
    if isinstance(value, Binding):
        return _resolved_binding(value, names)
    if isinstance(value, tuple):
        return tuple(_resolved_outputs(v, names) for v in value)
    if isinstance(value, dict):
        return {k: _resolved_outputs(v, names) for k, v in value.items()}
    return value
