"""A conveyor Pipeline as a Kubeflow Pipelines v2 PipelineSpec, built through kfp's own types.

Every step becomes a container component (`dsl.container_component` returning a
`dsl.ContainerSpec`) and the pipeline a `dsl.pipeline` whose body calls them; kfp's
`compiler.Compiler` writes the YAML, and kfp-kubernetes adds the platform config (secrets,
deadlines). Nothing here assembles the spec by hand.

A component step's task runs the executor protocol in the step's own image, referenced by digest:
the bootstrap of `conveyor.runners.remote` fetches conveyor's runtime and the step's code bundle
from the artifact store by hash; its task spec is inline; KFP's placeholders give it its input
and output paths (`--input NAME={{path}}`, `--output NAME={{path}}`) and its executor input
(`--executor-input {{$}}`, for parameter values and where `executor_output.json` goes). Nothing
is installed at run time and kfp is never inside the image.

How values cross tasks: DataFrames and arrays are `system.Dataset` artifacts, other objects
(fitted models) `system.Model`, `Metrics` are `system.Metrics` (their metadata holds the
numbers), JSON values of a plain type (int, float, str, bool, dict, list, dates as ISO strings)
are KFP parameters, and anything else is a `system.Artifact` holding JSON.
"""

from __future__ import annotations

import inspect
import json
import math
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from conveyor._runtime.bootstrap import EXECUTOR, program
from conveyor._runtime.hashing import sha256_json, to_jsonable
from conveyor.backends.kfp.build import RUN_PARAMETER, KfpBuild, KfpOptions
from conveyor.dsl.artifacts import Codec
from conveyor.dsl.host import BUILTIN_KINDS
from conveyor.dsl.pipeline import Pipeline, PipelineParam, Step
from conveyor.dsl.placeholders import Binding
from conveyor.engine.retry import RetryPolicy
from conveyor.errors import CompileError
from conveyor.version import EXECUTOR_PROTOCOL

HOST_ENTRY = "conveyor.ops.host_task"  # what a host task's bootstrap hands over to
EXECUTOR_INPUT = "{{$}}"  # dsl.PIPELINE_TASK_EXECUTOR_INPUT_PLACEHOLDER
RUN_ID = "{{$.pipeline_job_uuid}}"  # dsl.PIPELINE_JOB_ID_PLACEHOLDER
DATABASE_VARIABLE = "CONVEYOR_DATABASE_URL"
GPU_RESOURCE = "nvidia.com/gpu"

PARAMETER_TYPES: dict[str, type] = {
    "int": int, "float": float, "str": str, "bool": bool, "dict": dict, "list": list,
}  # fmt: skip
KFP_TYPES = {
    int: "NUMBER_INTEGER", float: "NUMBER_DOUBLE", str: "STRING", bool: "BOOLEAN",
    dict: "STRUCT", list: "LIST",
}  # fmt: skip
_ALIASES = {"Dict": "dict", "Mapping": "dict", "MutableMapping": "dict", "List": "list",
            "Sequence": "list", "MutableSequence": "list"}  # fmt: skip
# the builtin host steps' outputs, declared as codecs only
_HOST_OUTPUT_TYPES = {"write_table": int, "register_model": int}
_KFP_MEMORY = re.compile(r"^[0-9]+(E|Ei|P|Pi|T|Ti|G|Gi|M|Mi|K|Ki)?$")


def _kfp() -> Any:
    try:
        from kfp import dsl
    except ImportError as exc:
        raise CompileError(
            "compiling for Kubeflow Pipelines needs kfp: pip install 'conveyor[kfp]'"
        ) from exc
    return dsl


# ---------------------------------------------------------------------------------------------
# how a value crosses a task boundary


def _split_union(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char == "["
        depth -= char == "]"
        if char == "|" and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    return [*parts, current.strip()]


def hint_name(annotation: str) -> tuple[str, bool]:
    """(base type name, optional) of a hint's text: `dict[str, float] | None` -> (dict, True)."""
    text = annotation.strip()
    if match := re.fullmatch(r"<class '([\w.]+)'>", text):  # str() of a class
        text = match.group(1)
    optional = False
    if match := re.fullmatch(r"(?:typing\.)?Optional\[(.*)\]", text):
        text, optional = match.group(1), True
    parts = [p for p in _split_union(text) if p not in ("None", "NoneType")]
    optional = optional or len(parts) < len(_split_union(text))
    if len(parts) != 1:
        return "", optional  # a union of several types
    base = parts[0].split("[", 1)[0].rsplit(".", 1)[-1]
    return _ALIASES.get(base, base), optional


@dataclass(frozen=True, slots=True)
class Carrier:
    """How one value travels in KFP: a parameter of a plain type, or an artifact of a class."""

    codec: Codec
    parameter: type | None = None  # int, float, str, bool, dict, list
    artifact: str | None = None  # "Dataset", "Model", "Metrics" or "Artifact" (a dsl class)

    @property
    def kfp_type(self) -> str:
        assert self.parameter is not None
        return KFP_TYPES[self.parameter]


def value_carrier(codec: Codec, annotation: str, parameter: type | None = None) -> Carrier:
    """The carrier of a step output of `codec`, hinted `annotation` (or known as `parameter`)."""
    if codec.format == "json" and codec.json_type != "metrics":
        if codec.json_type in ("date", "datetime"):
            return Carrier(codec, parameter=str)
        name, optional = hint_name(annotation)
        chosen = parameter or (PARAMETER_TYPES.get(name) if not optional else None)
        if chosen is not None:
            return Carrier(codec, parameter=chosen)
        return Carrier(codec, artifact="Artifact")  # a union or an Optional: JSON in a file
    if codec == Codec("json", "metrics"):
        return Carrier(codec, artifact="Metrics")
    artifact = {"parquet": "Dataset", "npy": "Dataset", "joblib": "Model"}.get(codec.format)
    return Carrier(codec, artifact=artifact or "Artifact")


def _param_type(pipeline: Pipeline, param: PipelineParam) -> tuple[type, bool]:
    """The Python type KFP sees for a pipeline parameter, and whether it may be left out."""
    if param.codec.json_type in ("date", "datetime"):
        return str, param.has_default and param.default is None
    name, optional = hint_name(param.annotation)
    chosen = PARAMETER_TYPES.get(name)
    if chosen is None:
        raise CompileError(
            f"pipeline {pipeline.name!r}, parameter {param.name!r}: type {param.annotation} has "
            f"no KFP parameter type; use int, float, str, bool, dict, list or date"
        )
    return chosen, optional or (param.has_default and param.default is None)


def _default(param: PipelineParam) -> Any:
    value = param.default
    if isinstance(value, datetime | date):
        return value.isoformat()
    return to_jsonable(value)


# ---------------------------------------------------------------------------------------------
# the tasks


@dataclass
class _TaskPlan:
    """One KFP task: its component's interface, its inline spec, the arguments it is called with."""

    step: Step
    inputs: dict[str, Carrier]  # KFP inputs: name -> carrier
    outputs: dict[str, Carrier]
    arguments: dict[str, Binding]  # KFP input -> the pipeline parameter or step output feeding it
    spec: dict[str, Any]
    image: str
    command: list[str]
    flags: list[str]
    content_key: str
    runtime_inputs: bool  # some input is known only at run time (no compile-time cache key)


class _Planner:
    """Turns each step of a pipeline into a _TaskPlan."""

    def __init__(self, pipeline: Pipeline, build: KfpBuild, options: KfpOptions) -> None:
        self.pipeline = pipeline
        self.build = build
        self.options = options
        self.params = {p.name: p for p in pipeline.params}
        self.param_types = {p.name: _param_type(pipeline, p) for p in pipeline.params}
        self.carriers: dict[tuple[str, str], Carrier] = {}  # (step, output) -> carrier

    def fail(self, step: Step, reason: str) -> CompileError:
        return CompileError(f"pipeline {self.pipeline.name!r}, step {step.name!r}: {reason}")

    def plans(self) -> Iterator[_TaskPlan]:
        for step in self.pipeline.steps:
            plan = self.component(step) if step.component is not None else self.host(step)
            for name, carrier in plan.outputs.items():
                self.carriers[(step.name, name)] = carrier
            yield plan

    # ------------------------------------------------------------------------------ shared

    def _outputs(self, step: Step) -> dict[str, Carrier]:
        outputs = {}
        for output in step.spec.outputs:
            known = None
            if step.host is not None and step.host.spec.kind in _HOST_OUTPUT_TYPES:
                known = _HOST_OUTPUT_TYPES[step.host.spec.kind]
            outputs[output.name] = value_carrier(output.codec, output.annotation, known)
        return outputs

    def _output_specs(self, outputs: dict[str, Carrier]) -> dict[str, Any]:
        specs: dict[str, Any] = {}
        for name, carrier in outputs.items():
            specs[name] = carrier.codec.to_dict()
            if carrier.parameter is not None:
                specs[name]["kfp_parameter"] = carrier.kfp_type
        return specs

    def _bind(
        self, step: Step, spec: dict[str, Any], inputs: dict[str, Carrier],
        arguments: dict[str, Binding],
    ) -> bool:  # fmt: skip
        """Fill the spec's inputs and parameters and the task's KFP inputs from the bindings;
        returns whether any value is known only at run time."""
        runtime = False
        files = self.build.files.get(step.name, {})
        for name, binding in step.bindings:
            declared = step.spec.inputs
            codec = next(i.codec for i in declared if i.name == name)
            if name in files:  # a Path input: its content, published when compiling
                content = files[name]
                item: dict[str, Any] = {"sha256": content.sha256, "format": content.format,
                                        "size": content.size}  # fmt: skip
                if content.parameter is not None:  # checked against the run's parameter value
                    item["compiled_from"] = {"parameter": content.parameter,
                                             "value": content.value}  # fmt: skip
                    inputs[name] = Carrier(Codec("json"), parameter=str)
                    arguments[name] = Binding.of_param(content.parameter)
                    # a run naming another file must reach the check, not a cached result
                    runtime = True
                spec["inputs"][name] = item
                continue
            if binding.kind == "literal":
                spec["parameters"][name] = {"value": to_jsonable(binding.value),
                                            **_typed(codec)}  # fmt: skip
            elif binding.kind == "param":
                assert binding.param is not None
                kind, _ = self.param_types[binding.param]
                carrier = Carrier(self.params[binding.param].codec, parameter=kind)
                spec["parameters"][name] = {"kfp_parameter": carrier.kfp_type, **_typed(codec)}
                param = self.params[binding.param]
                if param.has_default:  # what the task gets when a run leaves it out
                    spec["parameters"][name]["value"] = _default(param)
                inputs[name] = carrier
                arguments[name] = Binding.of_param(binding.param)
                runtime = True
            else:
                assert binding.step is not None and binding.output is not None
                carrier = self.carriers[(binding.step, binding.output)]
                item = carrier.codec.to_dict()
                if carrier.parameter is not None:
                    item["kfp_parameter"] = carrier.kfp_type
                spec["inputs"][name] = item
                inputs[name] = carrier
                arguments[name] = Binding.of_output(binding.step, binding.output)
                runtime = True
        return runtime

    def _flags(self, inputs: dict[str, Carrier], outputs: dict[str, Carrier]) -> list[str]:
        """Executor flags, with `{name}` where the KFP path placeholder of that value goes."""
        flags = ["--executor-input", EXECUTOR_INPUT]
        for name, carrier in inputs.items():
            if carrier.artifact is not None:
                flags += ["--input", f"{name}={{in:{name}}}"]
        for name, carrier in outputs.items():
            if carrier.artifact is not None:
                flags += ["--output", f"{name}={{out:{name}}}"]
        return flags

    # ------------------------------------------------------------------------------ components

    def component(self, step: Step) -> _TaskPlan:
        assert step.component is not None and step.component.spec is not None
        component = step.component.spec
        image = self.build.images.get(step.name)
        bundle = self.build.bundles.get(step.name)
        if image is None or bundle is None:
            raise self.fail(step, "no image or code bundle was resolved for it (a bug)")
        outputs = self._outputs(step)
        inputs: dict[str, Carrier] = {}
        arguments: dict[str, Binding] = {}
        spec: dict[str, Any] = {
            "protocol": EXECUTOR_PROTOCOL,
            "step": step.name,
            "module": component.module,
            "qualname": component.qualname,
            "packages": list(component.packages),
            "inputs": {},
            "parameters": {},
            "outputs": self._output_specs(outputs),
            "returns": component.returns,
        }
        runtime = self._bind(step, spec, inputs, arguments)
        self._check_names(step, inputs, outputs)
        content_key = sha256_json(
            {"code": self.build.code.get(step.name, ""), "environment": image.environment,
             "bundle": bundle, "runtime": self.build.runtime, "spec": spec}
        )  # fmt: skip
        spec["cache_key"] = content_key
        return _TaskPlan(
            step, inputs, outputs, arguments, spec, image.reference,
            self._command(spec, bundle, EXECUTOR), self._flags(inputs, outputs), content_key,
            runtime,
        )  # fmt: skip

    # ------------------------------------------------------------------------------ host steps

    def host(self, step: Step) -> _TaskPlan:
        assert step.host is not None
        host = step.host.spec
        if self.build.host_image is None or self.build.package is None:
            raise self.fail(step, "no host image was resolved for its host task (a bug)")
        if host.kind not in BUILTIN_KINDS and step.name not in self.build.bundles:
            raise self.fail(step, "no code bundle was resolved for this @host_step (a bug)")
        outputs = self._outputs(step)
        inputs: dict[str, Carrier] = {}
        arguments: dict[str, Binding] = {}
        spec: dict[str, Any] = {
            "protocol": EXECUTOR_PROTOCOL,
            "step": step.name,
            "kind": host.kind,
            "pipeline": self.pipeline.name,
            "module": host.module,
            "qualname": host.qualname,
            "inputs": {},
            "parameters": {},
            "outputs": self._output_specs(outputs),
            "returns": host.returns,
            "by_ref": sorted(host.by_ref),
            "output_is_ref": host.output_is_ref,
            "partition": self.pipeline.partition,
            "run_parameters": {},
            "upstream": {n: b.step for n, b in step.bindings if b.kind == "output" and b.step},
        }
        self._bind(step, spec, inputs, arguments)
        for param in self.pipeline.params:  # the run's parameters: its partition, ctx.params
            name = f"{RUN_PARAMETER}{param.name}"
            if name in inputs:
                raise self.fail(
                    step, f"its input {name!r} clashes with the run parameters that host tasks "
                          f"receive as {RUN_PARAMETER}<name>; rename it",
                )  # fmt: skip
            kind, _ = self.param_types[param.name]
            inputs[name] = Carrier(param.codec, parameter=kind)
            arguments[name] = Binding.of_param(param.name)
            item = {"kfp_parameter": KFP_TYPES[kind], **_typed(param.codec)}
            if param.has_default:
                item["value"] = _default(param)
            spec["run_parameters"][param.name] = item
        if host.kind == "register_model":  # lineage: the environment that built the model
            producer = spec["upstream"].get("model")
            image = self.build.images.get(producer or "")
            if producer and image is not None:
                spec["environments"] = {producer: {
                    "key": image.environment, "pins": list(image.pins),
                    "interpreter": image.interpreter, "lock_path": image.lock_path,
                }}  # fmt: skip
                spec["code"] = {producer: self.build.code.get(producer, "")}
        if host.kind == "load_model":  # the pins its consumers' images were built with
            pins = self.build.models.get(step.name)
            spec["model_pins"] = None if pins is None else list(pins)
        self._check_names(step, inputs, outputs)
        bundle = self.build.bundles.get(step.name)
        if bundle:
            spec["bundle"] = bundle
        content_key = sha256_json(
            {"code": self.build.code.get(step.name, ""), "package": self.build.package,
             "environment": self.build.host_image.environment, "spec": spec}
        )  # fmt: skip
        spec["cache_key"] = content_key
        flags = [*self._flags(inputs, outputs), "--run-id", RUN_ID]
        return _TaskPlan(
            step, inputs, outputs, arguments, spec, self.build.host_image.reference,
            self._command(spec, bundle, HOST_ENTRY, self.build.package), flags, content_key,
            True,
        )  # fmt: skip

    def _command(
        self, spec: dict[str, Any], bundle: str | None, entry: str, runtime: str | None = None
    ) -> list[str]:
        """The bootstrap command of `conveyor.runners.remote.executor_command`, without flags."""
        text = json.dumps(spec, sort_keys=True, separators=(",", ":"))
        command = [self.build.python, "-c", program(entry), self.build.store,
                   runtime or self.build.runtime, text]  # fmt: skip
        return [*command, "--bundle", bundle] if bundle else command

    def _check_names(
        self, step: Step, inputs: Mapping[str, Any], outputs: Mapping[str, Any]
    ) -> None:
        both = sorted(set(inputs) & set(outputs))
        if both:
            raise self.fail(
                step, f"{', '.join(map(repr, both))} is both an input and an output; KFP names "
                      f"a task's inputs and outputs in one namespace, so rename the parameter"
            )  # fmt: skip


def _typed(codec: Codec) -> dict[str, Any]:
    return {"type": codec.json_type} if codec.json_type else {}


# ---------------------------------------------------------------------------------------------
# kfp objects


def task_name(step: str) -> str:
    """The name kfp gives the task of a step (from its component's function name)."""
    return re.sub(r"[^a-z0-9]+", "-", step.lower()).strip("-")


def _annotation(dsl: Any, carrier: Carrier, output: bool) -> Any:
    if carrier.parameter is not None:
        return dsl.OutputPath(carrier.parameter) if output else carrier.parameter
    cls = getattr(dsl, carrier.artifact or "Artifact")
    return dsl.Output[cls] if output else dsl.Input[cls]


_PATH_TOKEN = re.compile(r"\{(?:in|out):(\w+)\}")


def _component(dsl: Any, plan: _TaskPlan) -> Any:
    """A container component for one task: its interface, image and command."""
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    names = [*plan.inputs, *plan.outputs]
    parameters = [
        *(inspect.Parameter(n, kind, annotation=_annotation(dsl, c, False))
          for n, c in plan.inputs.items()),
        *(inspect.Parameter(n, kind, annotation=_annotation(dsl, c, True))
          for n, c in plan.outputs.items()),
    ]  # fmt: skip

    def body(*placeholders: Any) -> Any:
        given = dict(zip(names, placeholders, strict=True))

        def fill(flag: str) -> str:  # KFP's path placeholder of an input or output artifact
            return _PATH_TOKEN.sub(lambda m: str(given[m.group(1)].path), flag)

        return dsl.ContainerSpec(
            image=plan.image,
            command=plan.command[:3],
            args=[*plan.command[3:], *(fill(flag) for flag in plan.flags)],
        )

    body.__name__ = body.__qualname__ = re.sub(r"\W", "_", plan.step.name)
    body.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    body.__doc__ = _description(plan.step)
    return dsl.container_component(body)


def _description(step: Step) -> str:
    fn = step.component.fn if step.component is not None else (step.host.fn if step.host else None)
    doc = inspect.getdoc(fn) if fn is not None else None
    if doc:
        return doc.split("\n\n", 1)[0].replace("\n", " ")
    return f"conveyor host step {step.spec.name}" if step.host is not None else step.name


def _cpu(cores: float) -> str:
    return str(int(cores)) if float(cores).is_integer() else f"{round(cores * 1000)}m"


def _configure(kubernetes: Any, task: Any, plan: _TaskPlan, build: KfpBuild,
               options: KfpOptions, policy: RetryPolicy) -> None:  # fmt: skip
    """Retries, resources, deadline, caching and secrets of one task."""
    step = plan.step
    task.set_display_name(step.name)
    kubernetes.set_image_pull_policy(task, "IfNotPresent")  # images are named by digest
    if options.store_secret and build.store_variables:
        kubernetes.use_secret_as_env(
            task, secret_name=options.store_secret,
            secret_key_to_env={v: v for v in build.store_variables}, optional=True,
        )  # fmt: skip
    if step.host is not None:
        # Host steps read and write the database: they always run, unless a @host_step asks to
        # be cached (then by KFP's own fingerprint of its inputs, which covers its code here).
        task.set_caching_options(step.host.spec.cache)
        kubernetes.use_secret_as_env(
            task, secret_name=options.database_secret,
            secret_key_to_env={options.database_secret_key: DATABASE_VARIABLE},
        )  # fmt: skip
        return
    assert step.component is not None and step.component.spec is not None
    component = step.component.spec
    if not component.cache:
        task.set_caching_options(False)
    elif plan.runtime_inputs:
        # KFP's custom cache key replaces its whole fingerprint, run-time inputs included, so it
        # is only safe when every input is fixed in the spec. Here KFP's own fingerprint decides:
        # the image digest, the command (whose inline spec holds the content key) and the inputs.
        task.set_caching_options(True)
    else:
        task.set_caching_options(True, cache_key=f"conveyor-{plan.content_key}")
    if component.retries:
        task.set_retry(
            num_retries=component.retries,
            backoff_duration=f"{math.ceil(policy.base_delay)}s",
            backoff_factor=policy.factor,
            backoff_max_duration=f"{math.ceil(policy.max_delay)}s",
        )
    if component.cpu:  # requests equal limits: what the docker runner grants is what it caps
        task.set_cpu_request(_cpu(component.cpu)).set_cpu_limit(_cpu(component.cpu))
    if component.memory:
        text = component.memory_text or ""
        memory = text if _KFP_MEMORY.match(text) else str(component.memory)
        task.set_memory_request(memory).set_memory_limit(memory)
    if component.gpu:
        task.set_accelerator_type(GPU_RESOURCE).set_accelerator_limit(component.gpu)
    if component.timeout:
        kubernetes.set_timeout(task, math.ceil(component.timeout))  # the pod's deadline
    if component.env:
        if not options.env_secret:
            raise CompileError(
                f"pipeline {step.name!r}: step {step.name!r} lists env={list(component.env)}; "
                f"on Kubeflow those variables come from a Kubernetes secret whose keys are their "
                f"names: pass --env-secret NAME (conveyor.compile(..., env_secret=NAME))"
            )
        kubernetes.use_secret_as_env(
            task, secret_name=options.env_secret,
            secret_key_to_env={v: v for v in component.env},
        )  # fmt: skip


def _pipeline_function(
    dsl: Any, kubernetes: Any, pipeline: Pipeline, planner: _Planner, plans: list[_TaskPlan],
    components: dict[str, Any],
) -> Callable[..., Any]:  # fmt: skip
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    parameters = []
    for param in pipeline.params:
        python, optional = planner.param_types[param.name]
        default = _default(param) if param.has_default else inspect.Parameter.empty
        annotation: Any = python | None if optional else python
        parameters.append(inspect.Parameter(param.name, kind, annotation=annotation,
                                            default=default))  # fmt: skip
    names = [p.name for p in pipeline.params]
    returned = pipeline.outputs if isinstance(pipeline.outputs, Binding) else None
    policy = RetryPolicy()

    def body(*channels: Any) -> Any:
        values = dict(zip(names, channels, strict=True))
        tasks: dict[str, Any] = {}
        for plan in plans:
            arguments = {}
            for name, source in plan.arguments.items():
                if source.kind == "param":
                    assert source.param is not None
                    arguments[name] = values[source.param]
                else:
                    assert source.step is not None and source.output is not None
                    arguments[name] = tasks[source.step].outputs[source.output]
            task = components[plan.step.name](**arguments)
            _configure(kubernetes, task, plan, planner.build, planner.options, policy)
            for upstream in plan.step.after:  # ordering without data: `with after(...)`
                task.after(tasks[upstream])
            tasks[plan.step.name] = task
        if returned is not None:
            assert returned.step is not None and returned.output is not None
            return tasks[returned.step].outputs[returned.output]
        return None

    signature = inspect.Signature(parameters)
    if returned is not None:
        assert returned.step is not None and returned.output is not None
        carrier = planner.carriers[(returned.step, returned.output)]
        output = carrier.parameter or getattr(dsl, carrier.artifact or "Artifact")
        signature = signature.replace(return_annotation=output)
    body.__name__ = body.__qualname__ = re.sub(r"\W", "_", pipeline.name)
    body.__signature__ = signature  # type: ignore[attr-defined]
    body.__doc__ = pipeline.description
    return body


def compile_pipeline(pipeline: Pipeline, build: KfpBuild, options: KfpOptions) -> str:
    """The KFP v2 PipelineSpec YAML of `pipeline` (with the Kubernetes platform config)."""
    dsl = _kfp()
    from kfp import compiler, kubernetes

    planner = _Planner(pipeline, build, options)
    plans = list(planner.plans())
    seen: dict[str, str] = {}
    for plan in plans:
        name = task_name(plan.step.name)
        if name in seen:
            raise CompileError(
                f"pipeline {pipeline.name!r}: steps {seen[name]!r} and {plan.step.name!r} both "
                f"become KFP task {name!r} (KFP names tasks in lower case with dashes); rename "
                f"one with name=... or .with_options(name=...)"
            )
        seen[name] = plan.step.name
    components = {plan.step.name: _component(dsl, plan) for plan in plans}
    function = _pipeline_function(dsl, kubernetes, pipeline, planner, plans, components)
    graph = dsl.pipeline(name=pipeline.name, description=pipeline.description or None)(function)
    with tempfile.TemporaryDirectory(prefix="conveyor-kfp-") as folder:
        target = Path(folder) / "pipeline.yaml"
        compiler.Compiler().compile(pipeline_func=graph, package_path=str(target))
        return target.read_text()
