"""Placeholders: what pipeline parameters and step outputs are while a pipeline is traced.

The pipeline body runs once, before any value exists, to record the DAG. A placeholder can only be
passed on, to a step, a host step, or returned. Anything that needs its value (arithmetic, `if`,
formatting, indexing) is an error at trace time that says where the computation belongs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from conveyor._runtime.tables import is_declaration, table_name
from conveyor.dsl.artifacts import Codec
from conveyor.errors import PipelineDefinitionError


@dataclass(frozen=True, slots=True)
class Binding:
    """Where a step input's value comes from: a literal, a pipeline parameter, a step output,
    or a list of step outputs (`collect`: a map's items, or an explicit list)."""

    kind: str  # "literal" | "param" | "output" | "collect"
    value: Any = None
    param: str | None = None
    step: str | None = None  # for collect: the map whose items it collects (until expanded)
    output: str | None = None
    items: tuple[Binding, ...] = ()  # for collect: the outputs, in order (once known)

    @classmethod
    def literal(cls, value: Any) -> Binding:
        return cls("literal", value=value)

    @classmethod
    def of_param(cls, name: str) -> Binding:
        return cls("param", param=name)

    @classmethod
    def of_output(cls, step: str, output: str) -> Binding:
        return cls("output", step=step, output=output)

    @classmethod
    def of_items(cls, items: tuple[Binding, ...]) -> Binding:
        return cls("collect", items=items)

    @classmethod
    def of_map(cls, step: str, output: str = "output") -> Binding:
        return cls("collect", step=step, output=output)

    @property
    def sources(self) -> tuple[str, ...]:
        """The steps this binding reads from."""
        if self.kind == "output":
            return (self.step,) if self.step else ()
        if self.kind == "collect":
            found = tuple(s for b in self.items for s in b.sources)
            return found or ((self.step,) if self.step else ())
        return ()

    def describe(self) -> str:
        if self.kind == "param":
            return str(self.param)
        if self.kind == "output":
            assert self.step is not None  # of_output sets it
            return self.step if self.output == "output" else f"{self.step}.{self.output}"
        if self.kind == "collect":
            if self.items:
                return "[" + ", ".join(b.describe() for b in self.items) + "]"
            return f"{self.step}[*]"
        if is_declaration(self.value):  # a declared table: its name, not its columns
            return f"Table({table_name(self.value)!r})"
        return repr(self.value)


_FORBIDDEN = {
    "__add__": "+", "__radd__": "+", "__sub__": "-", "__rsub__": "-", "__mul__": "*",
    "__rmul__": "*", "__truediv__": "/", "__rtruediv__": "/", "__floordiv__": "//",
    "__rfloordiv__": "//", "__mod__": "%", "__rmod__": "%", "__pow__": "**", "__rpow__": "**",
    "__neg__": "unary -", "__pos__": "unary +", "__abs__": "abs()", "__invert__": "~",
    "__and__": "&", "__rand__": "&", "__or__": "|", "__ror__": "|", "__xor__": "^",
    "__lt__": "<", "__le__": "<=", "__gt__": ">", "__ge__": ">=", "__eq__": "==",
    "__ne__": "!=", "__bool__": "`if`/`and`/`or`", "__len__": "len()",
    "__getitem__": "indexing", "__contains__": "`in`", "__int__": "int()",
    "__float__": "float()", "__index__": "int()", "__str__": "str()",
    "__format__": "an f-string", "__call__": "a call",
}  # fmt: skip


def _forbidden(symbol: str) -> Callable[..., Any]:
    def method(self: Placeholder, *args: Any) -> Any:
        raise PipelineDefinitionError(
            f"pipeline {self._pipeline!r}: cannot use {symbol} on {self._label} while tracing. "
            f"The pipeline body runs once to build the DAG, before any value exists. Compute "
            f"it inside a step, or pass the placeholder to a step or host step as an argument "
            f"(e.g. load_table(..., days=window_days))."
        )

    return method


class Placeholder:
    """A traced value: a pipeline parameter, or an output of a step that has not run yet."""

    __slots__ = ("_binding", "_codec", "_fields", "_label", "_owner", "_pipeline", "_step")
    __hash__ = object.__hash__

    def __init__(
        self,
        binding: Binding | None,
        codec: Codec | None,
        label: str,
        pipeline: str,
        owner: object,
        fields: dict[str, Placeholder] | None = None,
        step: str | None = None,
    ) -> None:
        self._binding = binding
        self._codec = codec
        self._label = label
        self._pipeline = pipeline
        self._owner = owner
        self._fields = fields
        self._step = step  # the step that produces it (None for a pipeline parameter)

    def __repr__(self) -> str:
        return f"<placeholder {self._label}>"

    def __getattr__(self, name: str) -> Placeholder:
        if name.startswith("__"):
            raise AttributeError(name)
        fields = self._fields
        if fields and name in fields:
            return fields[name]
        if fields:
            raise PipelineDefinitionError(
                f"pipeline {self._pipeline!r}: {self._label} has no output {name!r}; "
                f"its outputs are {', '.join(fields)}"
            )
        raise PipelineDefinitionError(
            f"pipeline {self._pipeline!r}: {self._label} is a placeholder while tracing and has "
            f"no attribute {name!r}; use its value inside a step"
        )

    def __iter__(self) -> Iterator[Placeholder]:
        if self._fields:
            return iter(self._fields.values())
        raise PipelineDefinitionError(
            f"pipeline {self._pipeline!r}: cannot unpack or iterate {self._label} while "
            f"tracing; only a step returning a NamedTuple can be unpacked into its outputs"
        )

    for _name, _symbol in _FORBIDDEN.items():
        locals()[_name] = _forbidden(_symbol)
    del _name, _symbol


def find_placeholders(value: Any) -> list[Placeholder]:
    """Placeholders nested inside lists, tuples and dicts (not allowed in literals)."""
    if isinstance(value, Placeholder):
        return [value]
    if isinstance(value, list | tuple | set):
        return [p for item in value for p in find_placeholders(item)]
    if isinstance(value, dict):
        return [p for item in (*value.keys(), *value.values()) for p in find_placeholders(item)]
    return []
