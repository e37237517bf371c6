"""`@pipeline`: trace component calls into an immutable DAG.

The pipeline body runs once, when it is decorated, with typed placeholders for its parameters.
Each component or host-step call records a `Step`; placeholders passed between calls become the
edges. The result is a frozen `Pipeline` that engines run and compilers translate.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from pathlib import PurePath
from typing import Any

from conveyor._runtime.hashing import to_jsonable
from conveyor._runtime.step_mode import IN_STEP
from conveyor.dsl.artifacts import Codec
from conveyor.dsl.component import TRACER, Component, ComponentSpec, InputSpec, codec_for
from conveyor.dsl.host import HostSpec, HostStep
from conveyor.dsl.mapping import MapSpec
from conveyor.dsl.mapping import expand as expand_maps
from conveyor.dsl.partitions import Calendar, DateSource, resolve_calendar
from conveyor.dsl.placeholders import Binding, Placeholder, find_placeholders
from conveyor.errors import ParameterError, PipelineDefinitionError


@dataclass(frozen=True, slots=True)
class PipelineParam:
    """A pipeline parameter: a JSON value (number, string, date, list, dict)."""

    name: str
    codec: Codec
    annotation: str
    has_default: bool
    default: Any = None


@dataclass(frozen=True, slots=True)
class Step:
    """A node of the DAG: a component step (own environment) or a host step (orchestrator)."""

    name: str
    bindings: tuple[tuple[str, Binding], ...]
    component: Component[..., Any] | None = None
    host: HostStep | None = None
    after: tuple[str, ...] = ()  # ordering-only upstream steps (`with after(...)`)
    map: MapSpec | None = None  # a map step (a template until `Pipeline.expand`)
    group: tuple[str, int | None] | None = None  # an item step: (its map, the map's max_parallel)

    @property
    def kind(self) -> str:
        return "component" if self.component is not None else "host"

    @property
    def spec(self) -> ComponentSpec | HostSpec:
        if self.component is not None:
            assert self.component.spec is not None
            return self.component.spec
        assert self.host is not None
        return self.host.spec

    @property
    def inputs(self) -> dict[str, Binding]:
        return dict(self.bindings)

    @property
    def upstream(self) -> tuple[str, ...]:
        """Steps this one waits for: those whose outputs it reads, then ordering-only ones."""
        seen = dict.fromkeys(s for _, b in self.bindings for s in b.sources)
        seen.update(dict.fromkeys(self.after))
        return tuple(s for s in seen if s is not None)

    @property
    def tolerant(self) -> frozenset[str]:
        """Upstream steps whose failure this step tolerates: the collected items, when its
        component allows failures (it runs with the items that succeeded)."""
        if self.component is None or self.component.spec is None:
            return frozenset()
        if not self.component.spec.allow_failures:
            return frozenset()
        return frozenset(s for _, b in self.bindings if b.kind == "collect" for s in b.sources)


@dataclass(frozen=True)
class Pipeline:
    """A traced pipeline: parameters, steps in a valid execution order, and returned outputs."""

    name: str
    fn: Callable[..., Any] = field(repr=False)
    params: tuple[PipelineParam, ...]
    steps: tuple[Step, ...]
    outputs: Any = None  # a Binding, or a tuple/dict of Bindings, or None
    partition: str | tuple[str, str] | None = None
    calendar: Calendar = field(default_factory=lambda: resolve_calendar("daily"))
    description: str = ""
    # a partition reads what this pipeline wrote for the N calendar dates before it: backfills
    # run those first, and a backfill's first partition needs them written already
    depends_on_past: int = 0

    @property
    def module(self) -> str:
        return self.fn.__module__

    @property
    def ranged(self) -> bool:
        return isinstance(self.partition, tuple)

    def expand(self, params: Mapping[str, Any]) -> Pipeline:
        """This pipeline with each map turned into its item steps for these parameters."""
        return expand_maps(self, dict(params))

    def step(self, name: str) -> Step:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(f"pipeline {self.name!r} has no step {name!r}; steps: {self.step_names}")

    @property
    def step_names(self) -> list[str]:
        return [s.name for s in self.steps]

    def param(self, name: str) -> PipelineParam:
        for param in self.params:
            if param.name == name:
                return param
        raise KeyError(name)

    def downstream(self, name: str) -> set[str]:
        """Every step that depends on `name`, transitively."""
        found: set[str] = set()
        frontier = {name}
        while frontier:
            frontier = {s.name for s in self.steps if set(s.upstream) & frontier} - found
            found |= frontier
        return found

    def bind(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Validate run parameters, coerce strings (from the CLI) and fill in defaults."""
        known = {p.name: p for p in self.params}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ParameterError(
                f"pipeline {self.name!r} has no parameter {', '.join(map(repr, unknown))}; "
                f"its parameters are {', '.join(known) or '(none)'}"
            )
        bound: dict[str, Any] = {}
        for name, param in known.items():
            if name in values:
                bound[name] = coerce_param(self.name, param, values[name])
            elif param.has_default:
                bound[name] = param.default
            else:
                raise ParameterError(
                    f"pipeline {self.name!r} needs parameter {name!r} ({param.annotation}); "
                    f"pass it with --param {name}=VALUE or params={{{name!r}: ...}}"
                )
        return bound

    def partition_range(self, params: Mapping[str, Any]) -> tuple[date, date] | None:
        """The (first, last) partition dates a run with these parameters covers."""
        if self.partition is None:
            return None
        if isinstance(self.partition, tuple):
            return params[self.partition[0]], params[self.partition[1]]
        return params[self.partition], params[self.partition]


def coerce_param(pipeline: str, param: PipelineParam, value: Any) -> Any:
    """A parameter value converted to its hinted type, or a ParameterError naming it."""
    where = f"pipeline {pipeline!r}, parameter {param.name!r}"
    kind = param.annotation
    try:
        if value is None:
            return None
        if param.codec.json_type == "date":
            if isinstance(value, datetime):
                return value.date()
            return value if isinstance(value, date) else date.fromisoformat(str(value))
        if param.codec.json_type == "datetime":
            return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
        if kind == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError("not a whole number")  # int() would truncate 2.7 silently
            return int(value)
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError("a bool is not a number")
            return float(value)
        if kind == "bool":
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if kind in ("dict", "list") and isinstance(value, str):
            import json

            return json.loads(value)
        to_jsonable(value)
        return value
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"{where} expects {kind}, got {value!r} ({exc})") from exc


# ---------------------------------------------------------------------------------------------
# tracing


class _Trace:
    """Records steps while a pipeline body runs."""

    def __init__(self, pipeline: str, params: tuple[PipelineParam, ...] = ()) -> None:
        self.pipeline = pipeline
        self.params = params
        self.steps: list[Step] = []
        self.explicit_names: set[str] = set()
        self.name_counts: dict[str, int] = {}
        self.after_stack: list[tuple[str, ...]] = []

    def ordering(self) -> tuple[str, ...]:
        """Steps that every step recorded now must wait for (from enclosing `with after(...)`)."""
        return tuple(dict.fromkeys(name for names in self.after_stack for name in names))

    def _fail(self, message: str) -> PipelineDefinitionError:
        return PipelineDefinitionError(f"pipeline {self.pipeline!r}: {message}")

    def _step_name(self, base: str, explicit: bool) -> str:
        taken = {s.name for s in self.steps}
        if explicit:
            if base in taken:
                raise self._fail(
                    f"two steps are named {base!r}; give one of them another name with "
                    f"name=... or .with_options(name=...)"
                )
            self.explicit_names.add(base)
            return base
        count = self.name_counts.get(base, 0)
        name = base
        while name in taken:
            count += 1
            name = f"{base}_{count + 1}" if count else base
        self.name_counts[base] = count
        return name

    def _bind(
        self,
        what: str,
        inputs: tuple[InputSpec, ...],
        arguments: dict[str, Any],
    ) -> tuple[tuple[str, Binding], ...]:
        names = [i.name for i in inputs]
        unknown = [k for k in arguments if k not in names]
        if unknown:
            raise self._fail(
                f"{what} got an unexpected argument {unknown[0]!r}; its parameters are "
                f"{', '.join(names) or '(none)'}"
            )
        missing = [i.name for i in inputs if not i.has_default and i.name not in arguments]
        if missing:
            raise self._fail(
                f"{what} is missing argument(s) {', '.join(map(repr, missing))}; pass them "
                f"in the call"
            )
        bindings = []
        for spec in inputs:
            value = arguments.get(spec.name, spec.default)
            bindings.append((spec.name, self._binding(what, spec, value)))
        return tuple(bindings)

    def _binding(self, what: str, spec: InputSpec, value: Any) -> Binding:
        where = f"{what}, argument {spec.name!r}"
        collected = self._collect(where, spec, value)
        if collected is not None:
            return collected
        if isinstance(value, Placeholder):
            if value._owner is not self:
                raise self._fail(
                    f"{where} is a placeholder from another pipeline ({value._label}); "
                    f"placeholders only live inside the pipeline that made them"
                )
            if value._fields is not None:
                raise self._fail(
                    f"{where}: {value._label} has several outputs "
                    f"({', '.join(value._fields)}); pass one of them, e.g. "
                    f"{value._label.split()[-1]}.{next(iter(value._fields))}"
                )
            if value._binding is None or value._codec is None:
                raise self._fail(f"{where}: {value._label} returns nothing (-> None)")
            self._check_codec(where, spec, value._codec, value._label, value._binding.kind)
            return value._binding
        nested = find_placeholders(value)
        if nested:
            raise self._fail(f"{where}: {_nested_advice(what, spec.name, nested[0]._label)}")
        if spec.codec.format == "file" and isinstance(value, str | PurePath):
            return Binding.literal(str(value))  # a path: its content is read at run time
        if spec.codec.format != "json":
            raise self._fail(
                f"{where}: a literal {type(value).__name__} cannot be passed where the step "
                f"expects {spec.annotation}; data and models must come from a step or host "
                f"step (load_table, load_model) so they are stored and hashed"
            )
        try:
            to_jsonable(value)
        except (TypeError, ValueError) as exc:
            raise self._fail(f"{where}: {value!r} is not JSON-able ({exc})") from exc
        return Binding.literal(value)

    def _collect(self, where: str, spec: InputSpec, value: Any) -> Binding | None:
        """A `collect` binding for a map's outputs or a list of step outputs, else None."""
        is_map = isinstance(value, Placeholder) and (
            value._binding is not None and value._binding.kind == "collect"
        )
        listed = (
            isinstance(value, list | tuple)
            and bool(value)
            and all(
                isinstance(v, Placeholder)
                and v._binding is not None
                and v._binding.kind == "output"
                for v in value
            )
        )
        if not (is_map or listed):
            return None
        if spec.item_codec is None:
            shown = value._label if isinstance(value, Placeholder) else "a list of step outputs"
            raise self._fail(
                f"{where} receives {shown}, several values; declare the parameter as a list of "
                f"them (e.g. `{spec.name}: list[{spec.annotation}]`) to collect them in order"
            )
        if is_map:
            assert isinstance(value, Placeholder) and value._binding is not None
            if value._owner is not self:
                raise self._fail(f"{where} is a placeholder from another pipeline")
            assert value._codec is not None
            self._check_codec(where, replace(spec, codec=spec.item_codec), value._codec,
                              value._label)  # fmt: skip
            return value._binding
        items = []
        for i, item in enumerate(value):
            if (
                not isinstance(item, Placeholder)
                or item._binding is None
                or (item._binding.kind != "output")
            ):
                raise self._fail(
                    f"{where}, item {i}: a list collected into a step holds step outputs only, "
                    f"got {getattr(item, '_label', repr(item))}"
                )
            if item._owner is not self:
                raise self._fail(f"{where}, item {i} is a placeholder from another pipeline")
            assert item._codec is not None
            self._check_codec(f"{where}, item {i}", replace(spec, codec=spec.item_codec),
                              item._codec, item._label)  # fmt: skip
            items.append(item._binding)
        return Binding.of_items(tuple(items))

    def _check_codec(
        self, where: str, spec: InputSpec, produced: Codec, label: str, kind: str = "output"
    ) -> None:
        wanted = spec.codec
        if wanted.format == "joblib" or wanted.format == produced.format:
            return
        if wanted.format == "file" and kind == "param" and produced == Codec("json"):
            return  # a parameter naming a path; the engine hashes and ships its content
        raise self._fail(
            f"{where} expects {spec.annotation} ({wanted.format}) but receives {label}, which "
            f"is stored as {produced.format}; change one of the type hints so they agree"
        )

    def _outputs(self, step_name: str, spec: ComponentSpec | HostSpec) -> Placeholder:
        label = f"the output of step {step_name}"
        if spec.returns == "none":
            return Placeholder(None, None, label, self.pipeline, self, step=step_name)
        if spec.returns == "namedtuple":
            fields = {
                o.name: Placeholder(
                    Binding.of_output(step_name, o.name),
                    o.codec,
                    f"output {o.name!r} of step {step_name}",
                    self.pipeline,
                    self,
                    step=step_name,
                )
                for o in spec.outputs
            }
            return Placeholder(
                None, None, f"step {step_name}", self.pipeline, self, fields, step=step_name
            )
        out = spec.outputs[0]
        binding = Binding.of_output(step_name, "output")
        return Placeholder(binding, out.codec, label, self.pipeline, self, step=step_name)

    def call_component(
        self, component: Component[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Placeholder:
        spec = component.spec
        assert spec is not None
        what = f"component {spec.name!r}"
        if spec.module == "__main__" or "<locals>" in spec.qualname:
            where = (
                "in __main__ (a script or notebook cell)"
                if spec.module == "__main__"
                else ("inside another function (a closure)")
            )
            raise self._fail(
                f"{what} is defined {where}; steps import their component in a separate "
                f"process, so define it at the top level of a module importable from the "
                f"project root (e.g. components/my_steps.py)"
            )
        names = [i.name for i in spec.inputs]
        if len(args) > len(names):
            raise self._fail(f"{what} takes {len(names)} arguments but {len(args)} were given")
        arguments = dict(zip(names, args, strict=False))
        for key, value in kwargs.items():
            if key in arguments:
                raise self._fail(f"{what} got multiple values for argument {key!r}")
            arguments[key] = value
        bindings = self._bind(what, spec.inputs, arguments)
        explicit = spec.name != component.fn.__name__
        name = self._step_name(spec.name, explicit)
        self.steps.append(Step(name, bindings, component=component, after=self.ordering()))
        return self._outputs(name, spec)

    def call_map(
        self, component: Component[..., Any], kwargs: dict[str, Any], max_parallel: int | None
    ) -> Placeholder:
        """Record a map: one step per item of the one argument given a list (or list param)."""
        spec = component.spec
        assert spec is not None
        what = f"component {spec.name!r}.map"
        inputs = {i.name: i for i in spec.inputs}
        params = {p.name: p for p in self.params}
        candidates = []
        for key, value in kwargs.items():
            if key not in inputs or inputs[key].item_codec is not None:
                continue  # unknown (reported by _bind) or a list parameter: passed whole
            if (isinstance(value, list | tuple) and not find_placeholders(value)) or (
                isinstance(value, Placeholder)
                and value._binding is not None
                and (
                    value._binding.kind == "param"
                    and params[value._binding.param or ""].annotation in ("list", "tuple")
                )
            ):
                candidates.append(key)
        if len(candidates) != 1:
            found = ", ".join(candidates) or "none"
            raise self._fail(
                f"{what} maps over exactly one argument given a list (a literal list, or a "
                f"`list` pipeline parameter); found {found}. Pass the other arguments as usual"
            )
        if spec.returns == "namedtuple":
            raise self._fail(f"{what}: a mapped component returns one value, not a NamedTuple")
        if max_parallel is not None and (
            isinstance(max_parallel, bool) or not isinstance(max_parallel, int) or max_parallel < 1
        ):
            raise self._fail(f"{what}: max_parallel={max_parallel!r} must be a whole number >= 1")
        over = candidates[0]
        value = kwargs[over]
        if isinstance(value, Placeholder):
            assert value._binding is not None
            mapping = MapSpec(over, param=value._binding.param, max_parallel=max_parallel)
        else:
            for item in value:  # each item must be a value the parameter accepts
                self._binding(f"{what}, item of {over!r}", inputs[over], item)
            mapping = MapSpec(over, items=tuple(value), max_parallel=max_parallel)
        # the mapped argument is bound per item when the map is expanded
        bindings = self._bind(what, spec.inputs, {**kwargs, over: None})
        explicit = spec.name != component.fn.__name__
        name = self._step_name(spec.name, explicit)
        step = Step(name, bindings, component=component, after=self.ordering(), map=mapping)
        self.steps.append(step)
        out = spec.outputs[0] if spec.outputs else None
        label = f"the outputs of map {name}"
        binding = Binding.of_map(name) if out is not None else None
        return Placeholder(binding, out.codec if out else None, label, self.pipeline, self,
                           step=name)  # fmt: skip

    def call_host(
        self, host: HostStep, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Placeholder:
        what = f"host step {host.spec.name!r}"
        try:
            arguments = host.bind_arguments(args, kwargs)
        except TypeError as exc:
            raise self._fail(f"{what}: {exc}") from exc
        bindings = self._bind(what, host.spec.inputs, arguments)
        name = self._step_name(host.spec.name, explicit=False)
        self.steps.append(Step(name, bindings, host=host, after=self.ordering()))
        return self._outputs(name, host.spec)


def _nested_advice(what: str, argument: str, label: str) -> str:
    """Why a container of placeholders cannot be an argument, and what works instead.

    Each argument of a step is bound to one thing (a step output, a parameter or a literal),
    which is what the cache keys, the records and the compilers to other back ends rest on;
    values computed from several outputs come from a step of their own.
    """
    problem = (
        f"a list, tuple or dict holding placeholders ({label}) cannot be passed: each argument "
        f"is bound to one step output, parameter or literal"
    )
    if what == "host step 'register_model'" and argument == "metrics":
        return (
            f"{problem}. Return the metrics from one step as conveyor.Metrics (e.g. a @component "
            f"that takes those outputs and returns Metrics({{...}})) and pass that step's output "
            f"as metrics=; a dict of literal numbers works too"
        )
    if what.startswith("component "):
        return f"{problem}. Give the component a parameter per value and pass each on its own"
    return (
        f"{problem}. Pass each placeholder as its own argument (a @host_step of your own can "
        f"take several)"
    )


@contextmanager
def after(*placeholders: Any) -> Iterator[None]:
    """Steps recorded inside the block run only after the steps that produced `placeholders`.

    For an order without a data edge, e.g. reading a table back after writing it:

        written = write_table(rows, "raw", partition=(start, end), partition_col="date")
        with after(written):
            history = load_table("raw", end=end, days=30)
    """
    trace = TRACER.get()
    if not isinstance(trace, _Trace):
        raise PipelineDefinitionError("after(...) is used inside a @pipeline body only")
    names: list[str] = []
    for value in placeholders:
        if not isinstance(value, Placeholder) or value._owner is not trace or not value._step:
            raise trace._fail(f"after() takes results of steps of this pipeline, got {value!r}")
        names.append(value._step)
    trace.after_stack.append(tuple(names))
    try:
        yield
    finally:
        trace.after_stack.pop()


def _returned_bindings(trace: _Trace, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, Placeholder):
        if value._fields is not None:
            return {k: p._binding for k, p in value._fields.items()}
        if value._binding is None or value._binding.kind not in ("output", "collect"):
            raise trace._fail(
                f"returns {value._label}; a pipeline returns step outputs (or nothing)"
            )
        return value._binding
    if isinstance(value, tuple | list):
        return tuple(_returned_bindings(trace, v) for v in value)
    if isinstance(value, dict):
        return {str(k): _returned_bindings(trace, v) for k, v in value.items()}
    raise trace._fail(
        f"returns {value!r}; a pipeline returns step outputs (placeholders), a tuple or dict of "
        f"them, or nothing"
    )


def _pipeline_params(name: str, fn: Callable[..., Any]) -> tuple[PipelineParam, ...]:
    hints = typing.get_type_hints(fn)
    params = []
    for param in inspect.signature(fn).parameters.values():
        where = f"pipeline {name!r}, parameter {param.name!r}"
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise PipelineDefinitionError(f"{where}: *args/**kwargs are not supported")
        if param.name not in hints:
            raise PipelineDefinitionError(
                f"{where} has no type hint; add one (e.g. `{param.name}: date`)"
            )
        codec = codec_for(hints[param.name], where)
        if codec.format != "json":
            raise PipelineDefinitionError(
                f"{where} is {hints[param.name]}; pipeline parameters are JSON values (numbers, "
                f"strings, dates, lists, dicts). Load data inside the pipeline with a host step."
            )
        hint = hints[param.name]
        origin = typing.get_origin(hint)
        annotation = getattr(origin or hint, "__name__", str(hint))
        if origin is typing.Union or type(hint).__name__ == "UnionType":
            members = [a for a in typing.get_args(hint) if a is not type(None)]
            annotation = getattr(members[0], "__name__", str(hint)) if len(members) == 1 else "json"
        has_default = param.default is not inspect.Parameter.empty
        default = param.default if has_default else None
        params.append(PipelineParam(param.name, codec, annotation, has_default, default))
    return tuple(params)


def _partition_spec(
    name: str, params: tuple[PipelineParam, ...], partition: Any
) -> str | tuple[str, str] | None:
    dates = [p.name for p in params if p.codec.json_type == "date"]
    if partition is None:
        return dates[0] if len(dates) == 1 else None
    wanted = [partition] if isinstance(partition, str) else list(partition)
    if not (1 <= len(wanted) <= 2) or not all(isinstance(w, str) for w in wanted):
        raise PipelineDefinitionError(
            f"pipeline {name!r}: partition={partition!r} must name one date parameter or a "
            f"(start, end) pair"
        )
    for w in wanted:
        if w not in dates:
            raise PipelineDefinitionError(
                f"pipeline {name!r}: partition parameter {w!r} is not a `date` parameter of "
                f"the pipeline; date parameters: {', '.join(dates) or '(none)'}"
            )
    return wanted[0] if len(wanted) == 1 else (wanted[0], wanted[1])


def create_pipeline(
    fn: Callable[..., Any],
    name: str | None = None,
    partition: str | tuple[str, str] | None = None,
    calendar: str | DateSource | Calendar = "daily",
    depends_on_past: int = 0,
) -> Pipeline:
    """Trace `fn` into a Pipeline (the decorator's factory)."""
    name = name or fn.__name__
    params = _pipeline_params(name, fn)
    partition_spec = _partition_spec(name, params, partition)
    if (
        not isinstance(depends_on_past, int)
        or isinstance(depends_on_past, bool)
        or (depends_on_past < 0)
    ):
        raise PipelineDefinitionError(
            f"pipeline {name!r}: depends_on_past={depends_on_past!r} must be a whole number of "
            f"calendar dates (0: partitions are independent)"
        )
    if depends_on_past and partition_spec is None:
        raise PipelineDefinitionError(
            f"pipeline {name!r}: depends_on_past={depends_on_past} needs a partition (a date "
            f"parameter, or partition=(start, end)) to say what came before"
        )
    try:
        cal = resolve_calendar(calendar)
    except ValueError as exc:
        raise PipelineDefinitionError(f"pipeline {name!r}: {exc}") from exc
    trace = _Trace(name, params)
    placeholders = {
        p.name: Placeholder(Binding.of_param(p.name), p.codec, f"parameter {p.name!r}", name, trace)
        for p in params
    }
    token = TRACER.set(trace)
    try:
        returned = fn(**placeholders)
    except PipelineDefinitionError:
        raise
    except Exception as exc:
        exc.add_note(f"(while tracing pipeline {name!r})")
        raise
    finally:
        TRACER.reset(token)
    if not trace.steps:
        raise PipelineDefinitionError(
            f"pipeline {name!r} calls no components or host steps; a pipeline body calls "
            f"@component functions (and load_table/write_table/...) to build its DAG"
        )
    return Pipeline(
        name=name,
        fn=fn,
        params=params,
        steps=tuple(trace.steps),
        outputs=_returned_bindings(trace, returned),
        partition=partition_spec,
        calendar=cal,
        description=inspect.getdoc(fn) or "",
        depends_on_past=depends_on_past,
    )


def pipeline(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    partition: str | tuple[str, str] | None = None,
    calendar: str | DateSource | Calendar = "daily",
    depends_on_past: int = 0,
) -> Any:
    """Trace a function of component calls into a pipeline DAG.

    Args:
        name: the pipeline's name (default: the function name).
        partition: the date parameter that names a run's partition, or a (start, end) pair for
            a ranged pipeline that processes many dates in one run.
        calendar: "daily", "weekdays", or a function (start, end) -> dates giving partitions.
        depends_on_past: a partition reads what this pipeline wrote for this many calendar
            dates before it (look-back): backfills run those partitions first, however many
            run at once, and refuse to start where the dates before are missing.
    """

    def decorate(func: Callable[..., Any]) -> Any:
        if IN_STEP.get():  # inside a step process only the components of this module matter
            return func
        return create_pipeline(func, name, partition, calendar, depends_on_past)

    return decorate(fn) if fn is not None else decorate
