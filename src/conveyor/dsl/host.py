"""Host steps: DAG nodes that run in the orchestrator process, the only ones holding credentials.

`load_table`, `write_table`, `register_model` and `load_model` are declared here as node kinds;
their implementations live in `conveyor.db` and are handed to the engine at run time, so this
core never imports SQLAlchemy. `@host_step` turns a user function into a host step (a custom sink).
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from conveyor._runtime.tables import Table
from conveyor.dsl.artifacts import ArtifactRef, Codec, Metrics
from conveyor.dsl.component import TRACER, InputSpec, OutputSpec, codec_for
from conveyor.dsl.placeholders import Placeholder, find_placeholders
from conveyor.errors import ComponentDefinitionError, HostStepError

if TYPE_CHECKING:  # the engine builds contexts; the DSL only declares what they hold
    from conveyor.engine.results import RunInfo
    from conveyor.engine.store import ArtifactStore

BUILTIN_KINDS = ("load_table", "write_table", "register_model", "load_model")


@dataclass(frozen=True, slots=True)
class HostSpec:
    """A host step's interface: inputs, outputs, which inputs arrive as references."""

    kind: str  # a builtin kind, or "user" for @host_step functions
    name: str
    inputs: tuple[InputSpec, ...]
    outputs: tuple[OutputSpec, ...]
    returns: str
    by_ref: frozenset[str] = frozenset()
    output_is_ref: bool = False
    cache: bool = False
    module: str = "conveyor.dsl.host"
    qualname: str = ""

    def input(self, name: str) -> InputSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(name)


@dataclass(slots=True)
class HostContext:
    """What a host step implementation sees besides its inputs.

    Attributes:
        run: the RunInfo of the run (id, pipeline, params, partition, engine, runner, tags).
        step: this host step's name.
        upstream: input name -> name of the step whose output feeds it.
        results: StepResults of the steps finished so far (environment key, cache key, ...).
        environments: step name -> PreparedEnvironment (key, lock path, pins) from the plan.
        code: step name -> code fingerprint from the plan.
        registry: the model registry (read versions, promote, roll back), or None when the
            run has no database.
    """

    run: RunInfo
    step: str
    params: Mapping[str, Any]
    partition: tuple[date, date] | None
    store: ArtifactStore
    project_root: Path
    log: logging.Logger
    upstream: dict[str, str] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    environments: dict[str, Any] = field(default_factory=dict)
    code: dict[str, str] = field(default_factory=dict)
    pinned: Any = None  # for load_model: the ModelPin resolved when the run was planned
    registry: Any = None

    @property
    def run_id(self) -> str:
        return self.run.run_id

    @property
    def pipeline(self) -> str:
        return self.run.pipeline


class HostStep:
    """A host step node kind; called inside `@pipeline` it records a node."""

    def __init__(
        self,
        spec: HostSpec,
        fn: Callable[..., Any] | None = None,
        prepare: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        signature: inspect.Signature | None = None,
    ) -> None:
        self.spec = spec
        self.fn = fn
        self._prepare = prepare
        self.__doc__ = fn.__doc__ if fn else None
        self.__name__ = spec.name
        if signature is not None:  # what inspect.signature() and help() show for a builtin
            self.__signature__ = signature

    @property
    def name(self) -> str:
        return self.spec.name

    def bind_arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Map call arguments to input names (positional in declaration order)."""
        signature = getattr(self, "__signature__", None)
        if signature is not None:  # a builtin: Python's own binding, then its input names
            bound = dict(signature.bind(*args, **kwargs).arguments)
            return self._prepare(bound) if self._prepare is not None else bound
        names = [i.name for i in self.spec.inputs]
        if len(args) > len(names):
            raise TypeError(f"takes {len(names)} positional arguments but {len(args)} were given")
        bound = dict(zip(names, args, strict=False))
        for key, value in kwargs.items():
            if key in bound:
                raise TypeError(f"got multiple values for argument {key!r}")
            bound[key] = value
        return bound

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        tracer = TRACER.get()
        if tracer is not None:
            return tracer.call_host(self, args, kwargs)
        if self.fn is not None:
            return self.fn(*args, **kwargs)
        raise HostStepError(
            f"{self.spec.kind}() is a host step: it runs inside a @pipeline, where the engine "
            f"supplies its database. Call it in a pipeline body; outside a run, use "
            f"conveyor.read_table() and conveyor.Registry()."
        )

    def __repr__(self) -> str:
        return f"<host step {self.spec.name}>"


def _builtin(
    stub: Callable[..., Any],
    inputs: list[tuple[str, Codec, bool, Any]],
    output: Codec | None,
    *,
    by_ref: frozenset[str] = frozenset(),
    output_is_ref: bool = False,
    prepare: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> HostStep:
    """A builtin host step: its signature and docstring are `stub`'s, its inputs `inputs`."""
    kind = stub.__name__
    spec = HostSpec(
        kind=kind,
        name=kind,
        inputs=tuple(
            InputSpec(n, c, c.describe(), has_default=d, default=v) for n, c, d, v in inputs
        ),
        outputs=(OutputSpec("output", output, output.describe()),) if output else (),
        returns="single" if output else "none",
        by_ref=by_ref,
        output_is_ref=output_is_ref,
        qualname=kind,
    )
    step = HostStep(spec, prepare=prepare, signature=inspect.signature(stub))
    step.__doc__ = stub.__doc__
    return step


def _declared_table(kwargs: dict[str, Any]) -> dict[str, Any]:
    """A Table travels through the DAG as JSON (its name alone where only the name matters)."""
    table = kwargs.get("table")
    if isinstance(table, Table):
        kwargs["table"] = table.to_json()
    return kwargs


def _table_name(kwargs: dict[str, Any]) -> dict[str, Any]:
    if isinstance(kwargs.get("table"), Table):
        kwargs["table"] = kwargs["table"].name
    return kwargs


def metrics_problem(metrics: Any) -> str | None:
    """Why `metrics` cannot be a registered version's metrics (None: it can): they are a
    mapping of names to finite numbers, stored as JSON and compared by the promotion gate."""
    if not isinstance(metrics, Mapping):
        return (
            f"metrics must be a step's Metrics output or a dict of numbers, got "
            f"{type(metrics).__name__} {metrics!r}"
        )
    for key, value in metrics.items():
        if not isinstance(key, str):
            return f"metrics key {key!r} is not a string"
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number:
            return (
                f"metrics[{key!r}] is {value!r} ({type(value).__name__}), not a number; metrics "
                f"are numbers (pass other facts in params=)"
            )
        if not math.isfinite(value):
            return f"metrics[{key!r}] is {value!r}, not a finite number"
    return None


def _check_literal_metrics(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Literal metrics are checked when the pipeline is traced, not when the run gets there."""
    metrics = kwargs.get("metrics")
    literal = metrics is not None and not (
        isinstance(metrics, Placeholder) or find_placeholders(metrics)
    )
    problem = metrics_problem(metrics) if literal else None
    if problem:
        raise TypeError(problem)
    return kwargs


def _prepare_write(kwargs: dict[str, Any]) -> dict[str, Any]:
    return _split_partition(_declared_table(kwargs))


def _split_partition(kwargs: dict[str, Any]) -> dict[str, Any]:
    partition = kwargs.pop("partition", None)
    key = kwargs.pop("key", None)
    if isinstance(partition, Mapping):  # partition={"model": m}: a key, no dates
        if key is not None:
            raise TypeError("pass the key once: partition={...} or key={...}, not both")
        key, partition = partition, None
    if key is not None:
        if not isinstance(key, Mapping) or len(key) != 1:
            raise TypeError(
                f"a key partition is one column and its value, e.g. {{'model': 'qda'}}; got {key!r}"
            )
        ((column, value),) = key.items()
        if not isinstance(column, str):
            raise TypeError(f"a key partition's column must be a name, got {column!r}")
        if isinstance(value, bool) or not isinstance(value, str | int | Placeholder):
            raise TypeError(
                f"key partition {column!r} = {value!r}: a key value is a string or an integer"
            )
        kwargs["key_col"], kwargs["key_value"] = column, value
    if isinstance(partition, tuple | list):
        if len(partition) != 2:
            raise TypeError("partition must be a date or a (start, end) pair of dates")
        kwargs["partition_start"], kwargs["partition_end"] = partition
    elif partition is not None:
        kwargs["partition_start"] = partition
    return kwargs


JSON = Codec("json")
DATE = Codec("json", "date")


# The builtins' public signatures. Their bodies never run: the engine calls the implementation
# conveyor.db supplies, with the inputs these calls recorded. (Hence the `empty-body` ignores: a
# signature that promises an int has no int to return.)


def _load_table_signature(
    table: str | Table,
    start: date | None = None,
    end: date | None = None,
    days: int | None = None,
    columns: list[str] | None = None,
) -> Any:
    """Rows of `table` (a name or a `Table`) as a DataFrame: the dates `start`..`end`, or `days`
    before them.

    Always runs (never cached); the content hash of what it read drives the cache downstream.
    """


def _write_table_signature(  # type: ignore[empty-body]
    df: Any,
    table: str | Table,
    partition: date | tuple[date, date] | Mapping[str, str | int] | None = None,
    partition_col: str | None = None,
    min_rows: int | None = None,
    key: Mapping[str, str | int] | None = None,
) -> int:
    """Replace exactly `partition` (a date, a (start, end) range, or a key such as
    `{"model": "qda"}`) of `table` with `df`; `key=` narrows a date partition to one key.

    One transaction, serialized per (table, partition); the table is created on first write.
    `table` is a name, or a `conveyor.Table` declaration: then `df` must have the declared
    columns, types, no missing values where not nullable and no key twice, the first write
    creates the table as declared, and a table that differs from its declaration is an error
    naming the migration. Without `partition_col` the partition key is kept in a column of its
    own. A key partition replaces only the rows whose key column holds the value (the column
    is added to the frame when it lacks it). With `min_rows`,
    every calendar date of the partition must have at least that many rows, or nothing is
    written and the step fails naming the dates. Returns the rows written.
    """


def _register_model_signature(  # type: ignore[empty-body]
    name: str,
    model: Any,
    metrics: dict[str, float] | None = None,
    params: dict[str, Any] | None = None,
) -> int:
    """Record a version of model `name` with its metrics, params, training range, code
    version and the environment lock that produced it; returns the version number.

    `metrics` is a step's `Metrics` output (or a dict of literal numbers): names to finite
    numbers. To register metrics of several steps, return them from one step as Metrics.
    """


def _load_model_signature(
    name: str,
    stage: str = "production",
    version: int | None = None,
    as_of: date | None = None,
    required: bool = True,
) -> Any:
    """The model artifact a downstream step receives: `version=N`, else the version holding
    `stage` (at the end of day `as_of`). The step runs with the pins of the environment that
    produced it; the orchestrator never unpickles it. With `required=False` a missing model
    arrives as None instead of failing the run."""


for _stub in (
    _load_table_signature, _write_table_signature, _register_model_signature,
    _load_model_signature,
):  # fmt: skip
    _stub.__name__ = _stub.__name__.removeprefix("_").removesuffix("_signature")

load_table = _builtin(
    _load_table_signature,
    [
        ("table", JSON, False, None),
        ("start", DATE, True, None),
        ("end", DATE, True, None),
        ("days", JSON, True, None),
        ("columns", JSON, True, None),
    ],
    Codec("parquet"),
    prepare=_table_name,
)
write_table = _builtin(
    _write_table_signature,
    [
        ("df", Codec("parquet"), False, None),
        ("table", JSON, False, None),
        ("partition_start", DATE, True, None),
        ("partition_end", DATE, True, None),
        ("partition_col", JSON, True, None),
        ("min_rows", JSON, True, None),
        ("key_col", JSON, True, None),
        ("key_value", JSON, True, None),
    ],
    JSON,
    prepare=_prepare_write,
)
register_model = _builtin(
    _register_model_signature,
    [
        ("name", JSON, False, None),
        ("model", Codec("joblib"), False, None),
        ("metrics", Codec("json", "metrics"), True, None),
        ("params", JSON, True, None),
    ],
    JSON,
    by_ref=frozenset({"model"}),
    prepare=_check_literal_metrics,
)
load_model = _builtin(
    _load_model_signature,
    [
        ("name", JSON, False, None),
        ("stage", JSON, True, "production"),
        ("version", JSON, True, None),
        ("as_of", DATE, True, None),
        ("required", JSON, True, True),
    ],
    Codec("joblib"),
    output_is_ref=True,
)


@overload
def host_step(
    fn: Callable[..., Any], *, name: str | None = None, cache: bool = False
) -> HostStep: ...


@overload
def host_step(
    fn: None = None, *, name: str | None = None, cache: bool = False
) -> Callable[[Callable[..., Any]], HostStep]: ...


def host_step(
    fn: Callable[..., Any] | None = None, *, name: str | None = None, cache: bool = False
) -> HostStep | Callable[[Callable[..., Any]], HostStep]:
    """Make a function a host step: it runs in the orchestrator process (a custom sink).

    Inputs arrive loaded by their type hints; an input hinted `ArtifactRef` arrives as a
    reference. A parameter hinted `HostContext` receives the run context.
    """

    def decorate(func: Callable[..., Any]) -> HostStep:
        label = name or func.__name__
        signature = inspect.signature(func)
        import typing

        hints = typing.get_type_hints(func)
        inputs, by_ref = [], set()
        for param in signature.parameters.values():
            hint = hints.get(param.name)
            if hint is HostContext:
                continue
            where = f"host step {label!r}, parameter {param.name!r}"
            if hint is None:
                raise ComponentDefinitionError(f"{where} has no type hint; add one")
            has_default = param.default is not inspect.Parameter.empty
            if hint is ArtifactRef:
                by_ref.add(param.name)
                codec = Codec("joblib")
            else:
                codec = codec_for(hint, where)
            default = param.default if has_default else None
            inputs.append(InputSpec(param.name, codec, str(hint), has_default, default))
        returned = hints.get("return", inspect.Signature.empty)
        if returned is inspect.Signature.empty:
            raise ComponentDefinitionError(
                f"host step {label!r}, return value has no type hint; add `-> None` or a type"
            )
        outputs: tuple[OutputSpec, ...] = ()
        if returned is not None and returned is not type(None):
            codec = codec_for(returned, f"host step {label!r}, return value")
            outputs = (OutputSpec("output", codec, str(returned)),)
        spec = HostSpec(
            kind="user",
            name=label,
            inputs=tuple(inputs),
            outputs=outputs,
            returns="single" if outputs else "none",
            by_ref=frozenset(by_ref),
            output_is_ref=returned is ArtifactRef,
            cache=cache,
            module=func.__module__,
            qualname=func.__qualname__,
        )
        return HostStep(spec, fn=func)

    return decorate(fn) if fn is not None else decorate


def call_user_host_step(step: HostStep, context: HostContext, inputs: dict[str, Any]) -> Any:
    """Call a @host_step function, passing the context to a parameter hinted HostContext."""
    assert step.fn is not None
    import typing

    hints = typing.get_type_hints(step.fn)
    for param, hint in hints.items():
        if hint is HostContext:
            inputs = {**inputs, param: context}
    return step.fn(**inputs)


__all__ = [
    "BUILTIN_KINDS",
    "HostContext",
    "HostSpec",
    "HostStep",
    "Metrics",
    "host_step",
    "load_model",
    "load_table",
    "register_model",
    "write_table",
]
