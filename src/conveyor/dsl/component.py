"""`@component`: a plain typed Python function that becomes a pipeline step.

The decorator is thin: it validates the options and the function's type hints into a frozen
`ComponentSpec` and wraps the function in a `Component`. Called inside a `@pipeline` a component
records a step and returns a placeholder; called anywhere else it is the plain function.
"""

from __future__ import annotations

import collections.abc
import functools
import inspect
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import date, datetime
from pathlib import PurePath
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypeVar, cast, overload

from conveyor._runtime.hashing import to_jsonable
from conveyor._runtime.step_mode import IN_STEP
from conveyor.dsl.artifacts import FORMAT_REQUIREMENTS, Codec, Metrics
from conveyor.errors import ComponentDefinitionError

if TYPE_CHECKING:  # host.py imports this module: the host step kind is only named here
    from conveyor.dsl.host import HostStep

P = ParamSpec("P")
R = TypeVar("R")


class Tracer(Protocol):
    """What a tracing pipeline provides; components call it instead of running."""

    def call_component(
        self, component: Component[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any: ...

    def call_host(self, host: HostStep, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any: ...

    def call_map(
        self, component: Component[..., Any], kwargs: dict[str, Any], max_parallel: int | None
    ) -> Any: ...


TRACER: ContextVar[Tracer | None] = ContextVar("conveyor_tracer", default=None)

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_STEP_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(Ki|Mi|Gi|Ti|K|M|G|T|k)?B?\s*$")
_MEMORY_UNITS = {
    None: 1, "K": 10**3, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
}  # fmt: skip

_JSON_SCALARS: dict[Any, Codec] = {
    int: Codec("json"),
    float: Codec("json"),
    str: Codec("json"),
    bool: Codec("json"),
    type(None): Codec("json"),
    dict: Codec("json"),
    list: Codec("json"),
}
_UNSUPPORTED_ORIGINS = (
    collections.abc.Callable,
    collections.abc.Iterator,
    collections.abc.Iterable,
    collections.abc.Generator,
    collections.abc.AsyncIterator,
    collections.abc.Awaitable,
    collections.abc.Coroutine,
)
_BY_NAME: dict[str, Codec] = {
    "DataFrame": Codec("parquet"),
    "pd.DataFrame": Codec("parquet"),
    "pandas.DataFrame": Codec("parquet"),
    "pandas.core.frame.DataFrame": Codec("parquet"),
    "ndarray": Codec("npy"),
    "np.ndarray": Codec("npy"),
    "numpy.ndarray": Codec("npy"),
    "int": Codec("json"),
    "float": Codec("json"),
    "str": Codec("json"),
    "bool": Codec("json"),
    "dict": Codec("json"),
    "list": Codec("json"),
    "None": Codec("json"),
    "date": Codec("json", "date"),
    "datetime": Codec("json", "datetime"),
    "Metrics": Codec("json", "metrics"),
    "conveyor.Metrics": Codec("json", "metrics"),
    "Path": Codec("file"),
    "pathlib.Path": Codec("file"),
}


@dataclass(frozen=True, slots=True)
class InputSpec:
    """One parameter of a component: its name, codec and default."""

    name: str
    codec: Codec
    annotation: str
    has_default: bool = False
    default: Any = None
    # for a `list[T]` parameter: the codec of one T, so it can collect the outputs of several
    # steps (a map's items, or an explicit list of step outputs), in order
    item_codec: Codec | None = None


@dataclass(frozen=True, slots=True)
class OutputSpec:
    """One output of a component (`output`, or a NamedTuple field)."""

    name: str
    codec: Codec
    annotation: str


@dataclass(frozen=True, slots=True)
class ComponentSpec:
    """Everything conveyor knows about a component, validated when it is decorated."""

    name: str
    module: str
    qualname: str
    file: str | None
    inputs: tuple[InputSpec, ...]
    outputs: tuple[OutputSpec, ...]
    returns: str  # "none" | "single" | "namedtuple"
    packages: tuple[str, ...] = ()
    image: str | None = None
    retries: int = 0
    timeout: float | None = None
    cpu: float | None = None
    memory: int | None = None
    memory_text: str | None = None
    gpu: int = 0
    env: tuple[str, ...] = ()
    network: bool = False
    cache: bool = True
    allow_failures: bool = False  # a collecting step runs with the items that succeeded
    # may be forked from a warm server of its environment (venv runner) or run in a warm
    # container (docker runner); never part of the cache key: a step's outputs do not depend
    # on how its interpreter started
    warm: bool = True

    def input(self, name: str) -> InputSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def output(self, name: str) -> OutputSpec:
        for spec in self.outputs:
            if spec.name == name:
                return spec
        raise KeyError(name)

    @property
    def implied_packages(self) -> tuple[str, ...]:
        """Packages the executor needs to move this component's values (pandas for DataFrames)."""
        needed: dict[str, None] = {}
        for codec in [i.codec for i in self.inputs] + [o.codec for o in self.outputs]:
            needed.update(dict.fromkeys(FORMAT_REQUIREMENTS[codec.format]))
        return tuple(needed)


class Component(Generic[P, R]):
    """A decorated function: a pipeline step inside `@pipeline`, the plain function outside.

    Typed with the function's own parameters and return type, so a type checker sees a
    component as the function it wraps (inside a pipeline the call records a step instead).
    """

    __qualname__: str  # the wrapped function's, set by functools.update_wrapper

    def __init__(self, fn: Callable[P, R], spec: ComponentSpec | None) -> None:
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.spec = spec

    @property
    def name(self) -> str:
        return self.spec.name if self.spec else self.fn.__name__

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        tracer = TRACER.get()
        if tracer is not None and self.spec is not None:
            return cast(R, tracer.call_component(self, args, kwargs))
        return self.fn(*args, **kwargs)

    def map(self, *, max_parallel: int | None = None, **kwargs: Any) -> Any:
        """One step per item of the argument given a list (a literal list, or a `list`
        pipeline parameter), named `step[item]`; the others go to every item. Inside a
        pipeline it returns the items' outputs for a `list[T]` parameter of another step;
        outside one, the list of results. `max_parallel` bounds the items running at once.

            scores = train.map(model=["lda", "qda", "nb"], data=features)
            best = promote_best(scores)          # def promote_best(scores: list[Metrics])
        """
        tracer = TRACER.get()
        if tracer is not None and self.spec is not None:
            return tracer.call_map(self, kwargs, max_parallel)
        lists = [k for k, v in kwargs.items() if isinstance(v, list | tuple)]
        if self.spec is not None:  # a `list[T]` parameter takes its list whole
            lists = [k for k in lists if self.spec.input(k).item_codec is None]
        if len(lists) != 1:
            raise TypeError(f"{self.name}.map() maps over exactly one list argument; got {lists}")
        over = lists[0]
        call: Callable[..., R] = self.fn
        return [call(**{**kwargs, over: item}) for item in kwargs[over]]

    def with_options(self, **options: Any) -> Component[P, R]:
        """A copy with some `@component` options changed (`name`, `retries`, `memory`, ...)."""
        if self.spec is None:
            return self
        unknown = set(options) - set(_OPTION_NAMES)
        if unknown:
            raise ComponentDefinitionError(
                f"component {self.name!r}: with_options() got unknown option(s) "
                f"{', '.join(sorted(unknown))}; valid options are {', '.join(_OPTION_NAMES)}"
            )
        validated = _validate_options(self.spec.name, {**_options_of(self.spec), **options})
        return Component(self.fn, replace(self.spec, **validated))

    def __repr__(self) -> str:
        return f"<component {self.name} of {self.__module__}.{self.__qualname__}>"


_OPTION_NAMES = (
    "packages", "image", "retries", "timeout", "cpu", "memory", "gpu", "env", "network",
    "cache", "name", "allow_failures", "warm",
)  # fmt: skip


@overload
def component(fn: Callable[P, R], /) -> Component[P, R]: ...


@overload
def component(
    *,
    packages: Sequence[str] = (),
    image: str | None = None,
    retries: int = 0,
    timeout: float | None = None,
    cpu: float | str | None = None,
    memory: int | str | None = None,
    gpu: int = 0,
    env: Sequence[str] = (),
    network: bool = False,
    cache: bool = True,
    name: str | None = None,
    allow_failures: bool = False,
    warm: bool = True,
) -> Callable[[Callable[P, R]], Component[P, R]]: ...


def component(
    fn: Callable[P, R] | None = None,
    /,
    *,
    packages: Sequence[str] = (),
    image: str | None = None,
    retries: int = 0,
    timeout: float | None = None,
    cpu: float | str | None = None,
    memory: int | str | None = None,
    gpu: int = 0,
    env: Sequence[str] = (),
    network: bool = False,
    cache: bool = True,
    name: str | None = None,
    allow_failures: bool = False,
    warm: bool = True,
) -> Component[P, R] | Callable[[Callable[P, R]], Component[P, R]]:
    """Make a typed function a pipeline step with its own environment.

    Args:
        packages: requirement strings installed into the step's environment.
        image: base image for the docker runner.
        retries: how many times the engine retries a failed attempt.
        timeout: seconds before the runner kills the step.
        cpu: CPU limit (cores, or "500m").
        memory: memory limit ("512Mi", "2Gi", or bytes).
        gpu: GPUs requested.
        env: names of host variables passed in; nothing else is visible to the step.
        network: allow network access (docker runner; off by default).
        cache: reuse results when code, environment, parameters and inputs are unchanged.
        name: step name (default: the function name).
        allow_failures: for a step collecting a map's outputs (a `list[T]` parameter): run with
            the items that succeeded instead of being skipped when one fails.
        warm: let the venv runner fork the step from a warm server of its environment, and the
            docker runner run it in a warm container of its image (the default); False starts
            it in a fresh interpreter or container (see docs/runners.md).
    """
    options = {
        "packages": packages, "image": image, "retries": retries, "timeout": timeout,
        "cpu": cpu, "memory": memory, "gpu": gpu, "env": env, "network": network,
        "cache": cache, "name": name, "allow_failures": allow_failures, "warm": warm,
    }  # fmt: skip

    def decorate(func: Callable[P, R]) -> Component[P, R]:
        return create_component(func, options)

    return decorate(fn) if fn is not None else decorate


def create_component(fn: Callable[P, R], options: Mapping[str, Any]) -> Component[P, R]:
    """Build a Component from a function and decorator options (the decorator's factory)."""
    if isinstance(fn, Component):
        fn = fn.fn
    if not callable(fn) or not hasattr(fn, "__code__"):
        raise ComponentDefinitionError(
            f"@component decorates plain functions; got {type(fn).__name__} {fn!r}"
        )
    if IN_STEP.get():
        return Component(fn, None)
    label = options.get("name") or fn.__name__
    validated = _validate_options(label, options)
    inputs, outputs, returns = _signature_specs(fn, validated["name"] or fn.__name__)
    spec = ComponentSpec(
        name=validated.pop("name") or fn.__name__,
        module=fn.__module__,
        qualname=fn.__qualname__,
        file=inspect.getsourcefile(fn),
        inputs=inputs,
        outputs=outputs,
        returns=returns,
        **validated,
    )
    return Component(fn, spec)


def _options_of(spec: ComponentSpec) -> dict[str, Any]:
    values = {k: getattr(spec, k) for k in _OPTION_NAMES}
    values["memory"] = spec.memory_text or spec.memory
    return values


# ---------------------------------------------------------------------------------------------
# option validation


def _validate_options(label: str, options: Mapping[str, Any]) -> dict[str, Any]:
    def fail(option: str, problem: str, fix: str) -> ComponentDefinitionError:
        return ComponentDefinitionError(f"component {label!r}, option {option}: {problem}; {fix}")

    out: dict[str, Any] = {}
    name = options.get("name")
    if name is not None and (not isinstance(name, str) or not _STEP_NAME.match(name)):
        raise fail("name", f"{name!r} is not a valid step name", "use letters, digits, _ and -")
    out["name"] = name

    packages = options.get("packages") or ()
    if isinstance(packages, str):
        raise fail("packages", f"got the string {packages!r}", f"write packages=[{packages!r}]")
    out["packages"] = tuple(_parse_requirement(label, p) for p in packages)

    image = options.get("image")
    if image is not None and (not isinstance(image, str) or not image.strip()):
        raise fail("image", f"{image!r} is not an image name", "use e.g. 'python:3.11-slim'")
    out["image"] = image

    retries = options.get("retries", 0)
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise fail("retries", f"{retries!r} is not a whole number ≥ 0", "use e.g. retries=2")
    out["retries"] = retries

    timeout = options.get("timeout")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
    ):
        raise fail("timeout", f"{timeout!r} is not a positive number of seconds", "use e.g. 600")
    out["timeout"] = float(timeout) if timeout is not None else None

    out["cpu"] = _parse_cpu(options.get("cpu"), fail)
    memory = options.get("memory")
    out["memory"] = parse_memory(memory, fail) if memory is not None else None
    out["memory_text"] = (
        memory if isinstance(memory, str) else (f"{memory}" if memory is not None else None)
    )

    gpu = options.get("gpu", 0)
    if not isinstance(gpu, int) or isinstance(gpu, bool) or gpu < 0:
        raise fail("gpu", f"{gpu!r} is not a whole number ≥ 0", "use e.g. gpu=1")
    out["gpu"] = gpu

    env = options.get("env") or ()
    if isinstance(env, str):
        raise fail("env", f"got the string {env!r}", f"write env=[{env!r}]")
    for var in env:
        if not isinstance(var, str) or not _IDENTIFIER.match(var):
            raise fail("env", f"{var!r} is not a variable name", "use names like 'API_TOKEN'")
        if var.startswith("CONVEYOR_"):
            raise fail(
                "env",
                f"{var!r} is reserved: CONVEYOR_* variables are never passed into steps",
                "pass the value as a parameter instead",
            )
    out["env"] = tuple(env)

    for flag in ("network", "cache", "allow_failures", "warm"):
        value = options.get(flag, flag in ("cache", "warm"))
        if not isinstance(value, bool):
            raise fail(flag, f"{value!r} is not True or False", f"use {flag}=True")
        out[flag] = value
    return out


def _parse_requirement(label: str, requirement: Any) -> str:
    from packaging.requirements import InvalidRequirement, Requirement

    if not isinstance(requirement, str):
        raise ComponentDefinitionError(
            f"component {label!r}, option packages: {requirement!r} is not a requirement "
            f"string; write e.g. 'scikit-learn>=1.5,<2'"
        )
    try:
        return str(Requirement(requirement))
    except InvalidRequirement as exc:
        raise ComponentDefinitionError(
            f"component {label!r}, option packages: {requirement!r} is not a valid requirement "
            f"({exc}); write it like 'scikit-learn>=1.5,<2' or 'six==1.16.0'"
        ) from exc


def parse_memory(value: Any, fail: Callable[..., Exception] | None = None) -> int:
    """Bytes from `512Mi`, `2Gi`, `1G`, `1000000` (Kubernetes quantity notation)."""
    problem = None
    if isinstance(value, bool):
        problem = f"{value!r} is not a size"
    elif isinstance(value, int):
        if value > 0:
            return value
        problem = f"{value!r} is not a positive number of bytes"
    elif isinstance(value, str) and (match := _MEMORY.match(value)):
        number = float(match.group(1)) * _MEMORY_UNITS[match.group(2)]
        if number >= 1:
            return int(number)
        problem = f"{value!r} is less than one byte"
    else:
        problem = f"{value!r} is not a size"
    if fail is None:
        raise ValueError(problem)
    raise fail("memory", problem, "use e.g. '512Mi', '2Gi' or a number of bytes")


def _parse_cpu(value: Any, fail: Callable[..., Exception]) -> float | None:
    if value is None:
        return None
    if isinstance(value, str) and value.endswith("m") and value[:-1].isdigit():
        value = int(value[:-1]) / 1000
    elif isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            value = None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise fail(
            "cpu", f"{value!r} is not a positive number of cores", "use e.g. 1, 0.5 or '500m'"
        )
    return float(value)


# ---------------------------------------------------------------------------------------------
# type hints -> codecs


def _signature_specs(
    fn: Callable[..., Any], label: str
) -> tuple[tuple[InputSpec, ...], tuple[OutputSpec, ...], str]:
    signature = inspect.signature(fn)
    hints = _resolved_hints(fn)
    inputs = []
    for param in signature.parameters.values():
        where = f"component {label!r}, parameter {param.name!r}"
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            raise ComponentDefinitionError(
                f"{where}: *args, **kwargs and positional-only parameters cannot be bound by "
                f"name in a pipeline; declare each input as a named, typed parameter"
            )
        if param.annotation is inspect.Parameter.empty:
            raise ComponentDefinitionError(
                f"{where} has no type hint; conveyor picks how the value crosses the step "
                f"boundary from it. Add one, e.g. `{param.name}: pd.DataFrame` or "
                f"`{param.name}: int`"
            )
        hint = hints.get(param.name, param.annotation)
        item_codec = _list_item_codec(hint, where)
        codec = (
            item_codec
            if item_codec is not None and item_codec.format != "json"
            else (codec_for(hint, where))
        )
        has_default = param.default is not inspect.Parameter.empty
        default = param.default if has_default else None
        if has_default and default is not None:
            try:
                to_jsonable(default)
            except (TypeError, ValueError) as exc:
                raise ComponentDefinitionError(
                    f"{where}: default {default!r} is not JSON-able ({exc}); defaults are "
                    f"cached by value, so use None, a number, a string, a date, a list or a dict"
                ) from exc
        inputs.append(
            InputSpec(param.name, codec, _hint_text(hint), has_default, default, item_codec)
        )

    where = f"component {label!r}, return value"
    if signature.return_annotation is inspect.Signature.empty:
        raise ComponentDefinitionError(
            f"{where} has no type hint; add `-> pd.DataFrame`, `-> Metrics`, a NamedTuple for "
            f"several outputs, or `-> None` if it returns nothing"
        )
    returned = hints.get("return", signature.return_annotation)
    if returned is None or returned is type(None):
        return tuple(inputs), (), "none"
    if isinstance(returned, str):
        _check_not_defined_below(fn, returned.strip(), where)
    if isinstance(returned, type) and issubclass(returned, tuple) and hasattr(returned, "_fields"):
        fields = getattr(returned, "__annotations__", {})
        missing = [f for f in returned._fields if f not in fields]
        if missing:
            raise ComponentDefinitionError(
                f"{where}: NamedTuple {returned.__name__} has untyped fields {missing}; "
                f"use `class {returned.__name__}(typing.NamedTuple)` with a hint on every field"
            )
        field_hints = _resolved_hints(returned)
        outputs = tuple(
            OutputSpec(
                f, codec_for(field_hints[f], f"{where}, field {f!r}"), _hint_text(field_hints[f])
            )
            for f in returned._fields
        )
        return tuple(inputs), outputs, "namedtuple"
    return (
        tuple(inputs),
        (OutputSpec("output", codec_for(returned, where), _hint_text(returned)),),
        "single",
    )


def _resolved_hints(obj: Any) -> dict[str, Any]:
    """Type hints of a function or NamedTuple; unresolvable string hints stay strings.

    A NamedTuple keeps a string field hint as a `ForwardRef`; it is resolved (or kept as its
    string) like a function's, so `fit: "pd.DataFrame"` with pandas imported only for type
    checking still reads as a DataFrame.
    """
    try:
        return typing.get_type_hints(obj)
    except Exception:  # a forward reference the orchestrator cannot import; resolve one by one
        namespace = getattr(obj, "__globals__", None)
        if namespace is None:  # a class: its module's globals
            import sys

            namespace = vars(sys.modules.get(obj.__module__, object))
        hints: dict[str, Any] = {}
        for key, value in getattr(obj, "__annotations__", {}).items():
            if isinstance(value, typing.ForwardRef):
                value = value.__forward_arg__
            if isinstance(value, str):
                try:
                    value = eval(value, dict(namespace))
                except Exception:
                    pass
            hints[key] = value
        return hints


def _check_not_defined_below(fn: Callable[..., Any], name: str, where: str) -> None:
    """An unresolved return hint naming a NamedTuple the module defines below the component.

    Outputs are read from the hint when @component runs, while the module is still being
    imported: a NamedTuple defined further down does not exist yet, and the step would
    silently become one pickled output. Any other unresolved name (a model class imported
    only for type checking) is stored with joblib, as before.
    """
    import ast

    if not name.isidentifier():
        return
    try:
        tree = ast.parse(inspect.getsource(inspect.getmodule(fn) or fn))
    except (OSError, TypeError, SyntaxError):
        return
    for node in tree.body:
        named = (
            isinstance(node, ast.ClassDef)
            and node.name == name
            and any(
                (isinstance(b, ast.Name) and b.id == "NamedTuple")
                or (isinstance(b, ast.Attribute) and b.attr == "NamedTuple")
                for b in node.bases
            )
        )
        if named:
            raise ComponentDefinitionError(
                f"{where}: NamedTuple {name} is defined below the component (line "
                f"{node.lineno}), so its fields are unknown when @component runs and the step "
                f"would return one pickled value instead of its outputs. Define {name} above "
                f"the component."
            )


def _hint_text(hint: Any) -> str:
    if isinstance(hint, str):
        return hint
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "")


def _list_item_codec(hint: Any, where: str) -> Codec | None:
    """The codec of T for a `list[T]` hint (None for any other hint, or a bare `list`)."""
    if typing.get_origin(hint) is typing.Annotated:
        hint = typing.get_args(hint)[0]
    if typing.get_origin(hint) not in (list, collections.abc.Sequence):
        return None
    args = typing.get_args(hint)
    return codec_for(args[0], f"{where}, item") if len(args) == 1 else None


def codec_for(hint: Any, where: str) -> Codec:
    """The codec for a type hint; raises for hints no codec can carry."""

    def unsupported(why: str) -> ComponentDefinitionError:
        return ComponentDefinitionError(
            f"{where}: type {_hint_text(hint)} is not supported ({why}). Use pandas.DataFrame, "
            f"numpy.ndarray, int/float/str/bool/dict/list/date, conveyor.Metrics, or a concrete "
            f"class (saved with joblib)"
        )

    if isinstance(hint, typing.ForwardRef):
        hint = hint.__forward_arg__
    if isinstance(hint, str):
        return _BY_NAME.get(hint.strip(), Codec("joblib"))
    if hint is Any:
        raise unsupported("Any says nothing about how to store the value")
    if isinstance(hint, typing.TypeVar):
        raise unsupported("a type variable is not a concrete type")
    origin = typing.get_origin(hint)
    if origin is typing.Annotated:
        return codec_for(typing.get_args(hint)[0], where)
    if origin is typing.Union or origin is types.UnionType:
        members = [a for a in typing.get_args(hint) if a is not type(None)]
        codecs = {codec_for(m, where) for m in members}
        if len(codecs) == 1:
            return codecs.pop()
        if all(c.format == "json" and c.json_type is None for c in codecs):
            return Codec("json")
        raise unsupported("a union of types stored in different formats")
    if origin in _UNSUPPORTED_ORIGINS or hint in _UNSUPPORTED_ORIGINS:
        raise unsupported("callables, iterators and generators cannot be stored")
    if origin in (dict, list, collections.abc.Mapping, collections.abc.Sequence):
        return Codec("json")
    if origin is not None:
        qual = f"{getattr(origin, '__module__', '')}.{getattr(origin, '__qualname__', '')}"
        if qual == "numpy.ndarray":
            return Codec("npy")
        if origin is tuple:
            return Codec("joblib")
        return codec_for(origin, where)
    if hint is Metrics:
        return Codec("json", "metrics")
    if isinstance(hint, type) and issubclass(hint, PurePath):
        # its content is the value: hashed into the cache key, shipped through the store
        return Codec("file")
    if hint in _JSON_SCALARS:
        return _JSON_SCALARS[hint]
    if hint is datetime:
        return Codec("json", "datetime")
    if hint is date:
        return Codec("json", "date")
    if isinstance(hint, type):
        qual = f"{hint.__module__}.{hint.__qualname__}"
        if qual in ("pandas.core.frame.DataFrame", "pandas.DataFrame"):
            return Codec("parquet")
        if qual == "numpy.ndarray":
            return Codec("npy")
        if hint is object or not issubclass(hint, type):
            return Codec("joblib")
    raise unsupported("it is not a class")
