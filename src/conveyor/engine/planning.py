"""Planning: everything a run checks and builds before its first step runs.

A plan binds the parameters, resolves and builds every environment the steps need (so a bad pin
fails before anything is written), checks that each host step has an implementation, fingerprints
the code, and predicts which steps the cache will skip.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any

from conveyor._runtime.hashing import sha256_json, to_jsonable
from conveyor.dsl.artifacts import ArtifactRef
from conveyor.dsl.host import BUILTIN_KINDS
from conveyor.dsl.pipeline import Pipeline, Step
from conveyor.engine.bundles import Bundler
from conveyor.engine.cache import HIT_REASON, CacheIndex, CacheKeyParts, explain_miss
from conveyor.engine.environments import EnvironmentSpec, PreparedEnvironment, merge_requirements
from conveyor.engine.files import FileHasher, FileInput
from conveyor.engine.fingerprint import Fingerprinter
from conveyor.engine.store import ArtifactStore
from conveyor.engine.tasks import Runner
from conveyor.errors import HostStepError, ParameterError

HostImplementations = Mapping[str, Callable[..., Any]]


@dataclass(slots=True)
class StepPlan:
    """What the plan knows about one step before the run."""

    name: str
    kind: str
    environment: PreparedEnvironment | None = None
    code: str | None = None
    state: str = "run"  # "cached" | "run" | "pending"
    reason: str = ""
    notes: list[str] = field(default_factory=list)
    code_parts: dict[str, str] = field(default_factory=dict)  # named parts of `code`
    bundle: str | None = None  # sha256 of the step's code bundle (runners that ship code)
    code_dir: Path | None = None  # that bundle, unpacked on this machine


@dataclass(slots=True)
class Plan:
    """The checked, built, predicted shape of one run."""

    pipeline: Pipeline
    params: dict[str, Any]
    steps: dict[str, StepPlan]
    environments: dict[EnvironmentSpec, PreparedEnvironment]
    seconds: float = 0.0
    models: dict[str, Any] = field(default_factory=dict)  # load_model step -> ModelPin

    @property
    def partition(self) -> tuple[date, date] | None:
        return self.pipeline.partition_range(self.params)


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """How a run uses the cache."""

    enabled: bool = True
    force_steps: frozenset[str] = frozenset()

    def bypass_reason(self, step: Step) -> str | None:
        if step.name in self.force_steps or (step.group and step.group[0] in self.force_steps):
            return "forced (--force-step)"
        if not self.enabled:
            return "cache disabled (--no-cache)"
        if step.component is not None and not step.spec.cache:
            return "cache off for this component"
        if step.host is not None and not step.host.spec.cache:
            return "host steps always run"
        return None


def partition_label(pipeline: Pipeline, params: Mapping[str, Any]) -> str:
    """`2024-01-02` or `2024-01-02..2024-01-31` for a partitioned run, else ``."""
    window = pipeline.partition_range(params)
    if window is None:
        return ""
    return str(window[0]) if window[0] == window[1] else f"{window[0]}..{window[1]}"


def input_values(
    step: Step, params: Mapping[str, Any], upstream: Mapping[str, Mapping[str, ArtifactRef]]
) -> tuple[dict[str, Any], dict[str, ArtifactRef | list[ArtifactRef]]]:
    """Split a step's bindings into (JSON values, artifact references).

    A collecting binding gives the list of its items' references, in item order; an item
    missing from `upstream` (failed, where the step allows failures) is left out.
    """
    values: dict[str, Any] = {}
    refs: dict[str, ArtifactRef | list[ArtifactRef]] = {}
    for name, binding in step.bindings:
        if binding.kind == "literal":
            values[name] = binding.value
        elif binding.kind == "param":
            assert binding.param is not None  # Binding.of_param sets it
            values[name] = params[binding.param]
        elif binding.kind == "collect":
            refs[name] = [
                upstream[b.step][b.output]
                for b in binding.items
                if b.step is not None and b.output is not None and b.step in upstream
            ]
        else:
            assert binding.step is not None and binding.output is not None  # Binding.of_output
            refs[name] = upstream[binding.step][binding.output]
    return values, refs


def content_hashes(refs: Mapping[str, ArtifactRef | list[ArtifactRef]]) -> dict[str, str]:
    """Each input's content hash; a collected list's is the hash of its items' hashes, in order."""
    return {
        name: (sha256_json([r.sha256 for r in ref]) if isinstance(ref, list) else ref.sha256)
        for name, ref in refs.items()
    }


def file_inputs(
    step: Step, values: dict[str, Any], files: FileHasher | None
) -> dict[str, FileInput]:
    """Take the path arguments of a component's `Path` parameters out of `values`, resolved
    to their content (a file's bytes, a directory's files): that is what the step depends on."""
    if files is None or step.component is None or step.component.spec is None:
        return {}
    spec = step.component.spec
    found = {}
    for name in list(values):
        if spec.input(name).codec.format == "file" and values[name] is not None:
            where = f"step {step.name!r}, parameter {name!r}"
            found[name] = files.resolve(values.pop(name), where)
    return found


def cache_parts(
    step: Step,
    code: str,
    environment: str,
    params: Mapping[str, Any],
    upstream: Mapping[str, Mapping[str, ArtifactRef]],
    files: FileHasher | None = None,
    code_parts: dict[str, str] | None = None,
) -> CacheKeyParts:
    values, refs = input_values(step, params, upstream)
    paths = file_inputs(step, values, files)
    outputs = {o.name: o.codec.describe() for o in step.spec.outputs}
    collected = {
        name: {
            b.step or "?": ref.sha256
            for b, ref in zip(
                (b for b in dict(step.bindings)[name].items if b.step in upstream), items,
                strict=True,
            )
        }
        for name, items in refs.items()
        if isinstance(items, list)
    }  # fmt: skip
    return CacheKeyParts.build(
        code,
        environment,
        {k: to_jsonable(v) for k, v in values.items()},
        {**content_hashes(refs), **{k: f.ref.sha256 for k, f in paths.items()}},
        outputs,
        files={k: f.shown for k, f in paths.items()},
        code_parts=code_parts,
        collected=collected,
    )


def make_plan(
    pipeline: Pipeline,
    params: Mapping[str, Any],
    runner: Runner,
    store: ArtifactStore,
    fingerprinter: Fingerprinter,
    *,
    policy: CachePolicy = CachePolicy(),
    host_impls: HostImplementations | None = None,
    bundles: tuple[Bundler, Path] | None = None,
    files: FileHasher | None = None,
) -> Plan:
    """Bind, build environments, check host steps, fingerprint code, predict the cache.

    With `bundles` (a Bundler and this machine's bundle folder), each component step's code is
    also packed into a bundle in the store, for runners whose steps do not see the project.
    """
    started = time.perf_counter()
    bound = pipeline.bind(params)
    maps = {s.name for s in pipeline.steps if s.map is not None}
    pipeline = pipeline.expand(bound)  # a map's items are steps from here on
    unknown = sorted(policy.force_steps - set(pipeline.step_names) - maps)
    if unknown:
        raise ParameterError(
            f"--force-step {', '.join(unknown)}: pipeline {pipeline.name!r} has no such step; "
            f"its steps are {', '.join(pipeline.step_names)}"
        )
    host_impls = host_impls or {}
    steps = {s.name: StepPlan(s.name, s.kind) for s in pipeline.steps}

    models = resolve_models(pipeline, bound, host_impls)
    needs: dict[EnvironmentSpec, list[str]] = {}
    for step in pipeline.steps:
        if step.component is not None:
            component = step.component.spec
            assert component is not None  # only a step process's components go without one
            spec = runner.environment_spec(component)
            spec = _with_model_pins(step, spec, models)
            needs.setdefault(spec, []).append(step.name)
            steps[step.name].notes = runner.limitations(component)
        elif (
            step.host is not None
            and step.host.spec.kind in BUILTIN_KINDS
            and step.host.spec.kind not in host_impls
        ):
            raise HostStepError(
                f"pipeline {pipeline.name!r}, step {step.name!r}: {step.host.spec.kind}() "
                f"needs conveyor's database layer, which is not available here: install "
                f"it with `pip install 'conveyor[db]'` (SQLite by default, PostgreSQL via "
                f"CONVEYOR_DATABASE_URL), and do not set CONVEYOR_DATABASE_URL=none."
            )
    environments = runner.prepare(needs)
    for spec, names in needs.items():
        for name in names:
            steps[name].environment = environments[spec]

    for step in pipeline.steps:
        fn: Callable[..., Any] | None
        if step.component is not None:
            fn = step.component.fn
        else:
            assert step.host is not None  # a step is a component or a host step
            fn = step.host.fn
        if fn is not None:
            steps[step.name].code_parts = fingerprinter.parts(fn)
            steps[step.name].code = fingerprinter.fingerprint(fn)
        if bundles is not None and step.component is not None:
            bundler, folder = bundles
            assert step.component.spec is not None
            bundle = bundler.build(step.component.spec.module)
            steps[step.name].bundle = bundle.sha256
            steps[step.name].code_dir = bundler.publish(store, bundle, folder)

    _predict_cache(pipeline, bound, steps, CacheIndex(store), policy, files)
    plan = Plan(pipeline, bound, steps, environments, time.perf_counter() - started)
    plan.models = models
    return plan


@dataclass(frozen=True, slots=True)
class ModelPin:
    """A model a load_model step will return, resolved before the run (version and pins)."""

    name: str
    version: int | None
    pins: tuple[str, ...]


def resolve_models(
    pipeline: Pipeline, params: Mapping[str, Any], host_impls: HostImplementations
) -> dict[str, ModelPin]:
    """Resolve every load_model step whose arguments are known before the run.

    A step that receives a model runs with the pins of the environment that produced it, so the
    model (and its environment) must be known when environments are built. The version found
    here is also the one the load_model step returns, even if a promotion happens meanwhile.
    """
    resolver = getattr(host_impls.get("load_model"), "resolve_at_plan", None)
    found: dict[str, ModelPin] = {}
    for step in pipeline.steps:
        if step.host is None or step.host.spec.kind != "load_model" or resolver is None:
            continue
        if any(b.kind == "output" for _, b in step.bindings):
            continue  # depends on another step's output: resolved when it runs
        values, _ = input_values(step, params, {})
        pin = resolver(**values)
        if pin is not None:
            found[step.name] = ModelPin(values["name"], pin.get("version"), tuple(pin["pins"]))
    return found


def _with_model_pins(
    step: Step, spec: EnvironmentSpec, models: Mapping[str, ModelPin]
) -> EnvironmentSpec:
    sources = [
        models[b.step]
        for _, b in step.bindings
        if b.kind == "output" and b.step is not None and b.step in models
    ]
    pinned = {pin.pins for pin in sources if pin.pins}
    if not pinned:
        return spec
    if len(pinned) > 1:
        described = "; ".join(f"{p.name} v{p.version}" for p in sources)
        raise HostStepError(
            f"step {step.name!r} receives models built in different environments ({described}); "
            f"a step runs in one environment, so give each model its own step"
        )
    # replace() keeps subclass fields (the docker runner's base image)
    return replace(spec, requirements=merge_requirements(next(iter(pinned)), spec.requirements))


def _predict_cache(
    pipeline: Pipeline,
    params: dict[str, Any],
    steps: dict[str, StepPlan],
    index: CacheIndex,
    policy: CachePolicy,
    files: FileHasher | None,
) -> None:
    known: dict[str, dict[str, ArtifactRef]] = {}
    for step in pipeline.steps:
        plan = steps[step.name]
        waiting = [u for u in step.upstream if u not in known]
        bypass = policy.bypass_reason(step)
        if bypass:
            plan.state, plan.reason = "run", bypass
            continue
        if waiting:
            plan.state, plan.reason = "pending", f"depends on the output of {', '.join(waiting)}"
            continue
        env = plan.environment.key if plan.environment else "host"
        parts = cache_parts(step, plan.code or "", env, params, known, files, plan.code_parts)
        entry, problem = index.check(parts.key)
        if entry is not None:
            plan.state, plan.reason = "cached", HIT_REASON
            known[step.name] = entry.outputs
        else:
            plan.state = "run"
            plan.reason = problem or explain_miss(
                index.latest(pipeline.name, step.name, partition_label(pipeline, params)), parts
            )
