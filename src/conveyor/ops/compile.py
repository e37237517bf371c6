"""`conveyor.compile`: a pipeline as a spec another engine runs (Kubeflow Pipelines v2).

Compiling resolves what the spec must name and the pipeline alone does not say, then hands it to
the KFP back end (`conveyor.backends.kfp`):

- each component step's image, by digest, from the record `conveyor images push` wrote in the
  artifact store (`images/<key>.json`): the key comes from the step's lock and base image, as for
  the docker runner, so compiling builds nothing and fails, naming the push, when an image was
  never pushed; host steps run in a host image (conveyor's dependencies with its db extra);
- conveyor's runtime, the whole conveyor package (for host tasks) and each step's code bundle,
  published to the store by hash, where the tasks fetch them;
- code fingerprints, the content of `Path` inputs (published to the store), and the pins of the
  models `load_model` steps hand to other steps (the consuming steps' images are built with
  them, as a local run's plan does), resolved from the registry when the project has one.

The spec is then checked (strict protobuf parse, referential integrity) before it is written.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from conveyor.backends.kfp.build import FileContent, KfpBuild, KfpOptions, StepImage
from conveyor.dsl.component import ComponentSpec
from conveyor.dsl.pipeline import Pipeline, Step, coerce_param
from conveyor.dsl.placeholders import Binding
from conveyor.engine.bundles import Bundle, Bundler, bundle_key
from conveyor.engine.environments import EnvironmentSpec, merge_requirements
from conveyor.engine.settings import Settings
from conveyor.engine.store import ArtifactStore, is_remote
from conveyor.errors import CompileError, ConveyorError, ParameterError
from conveyor.ops.discovery import resolve_pipeline

if TYPE_CHECKING:
    from conveyor.runners.docker import DockerRunner

TARGETS = ("kfp",)
# The store's filesystem, for host tasks that reach a remote store (fsspec is a core dependency)
_STORE_PACKAGES = {"s3": ("s3fs>=2024.6,<2026.10",), "gs": ("gcsfs>=2024.6,<2026.10",)}


@dataclass(frozen=True, slots=True)
class CompileResult:
    """A compiled pipeline: the spec's text, where it was written, what it took."""

    pipeline: str
    target: str
    text: str
    path: Path | None
    seconds: float
    images: dict[str, str]  # step -> the image its task runs (by digest)
    notes: tuple[str, ...] = ()  # what the user should know (a local store, a missing model)


class ImageResolver(Protocol):
    """Where each task's image was pushed (by digest), and the environment it holds."""

    def component(self, step: str, component: ComponentSpec, pins: tuple[str, ...]) -> StepImage:
        """The image of a component step; `pins`: a model's environment it must also hold."""
        ...

    def host(self, store: str) -> StepImage:
        """The image host tasks run in: conveyor's dependencies with the db extra."""
        ...


def host_requirements(store: str) -> tuple[str, ...]:
    """What a host task's image holds: conveyor's dependencies with its postgres extra (and
    the store's filesystem); conveyor itself comes from the artifact store by hash."""
    from importlib.metadata import PackageNotFoundError, requires

    from packaging.requirements import Requirement

    try:
        declared = requires("conveyor") or []
    except PackageNotFoundError as exc:  # pragma: no cover - conveyor runs installed
        raise CompileError("conveyor is not installed, so its dependencies are unknown") from exc
    found = []
    for text in declared:
        requirement = Requirement(text)
        if requirement.name == "uv":  # host tasks never lock or build environments
            continue
        marker = requirement.marker
        if marker is None or marker.evaluate({"extra": "postgres"}):
            requirement.marker = None  # the extra is chosen here; uv would drop it otherwise
            found.append(str(requirement))
    scheme = store.split("://", 1)[0] if is_remote(store) else ""
    return merge_requirements(found, _STORE_PACKAGES.get(scheme, ()))


def model_environment(spec: EnvironmentSpec, pins: tuple[str, ...]) -> EnvironmentSpec:
    """A step's environment with the pins of the model it receives (as a local plan builds it)."""
    if not pins:
        return spec
    return replace(spec, requirements=merge_requirements(pins, spec.requirements))


class RegistryImages:
    """Step images as `conveyor images push` recorded them in the artifact store, by digest."""

    def __init__(self, settings: Settings, pipeline: str, registry: str | None = None) -> None:
        from conveyor.runners.docker import DockerRunner

        self.settings = settings
        self.pipeline = pipeline
        self.registry = registry.strip().rstrip("/") if registry else None
        self.runner = DockerRunner(settings)

    def component(self, step: str, component: ComponentSpec, pins: tuple[str, ...]) -> StepImage:
        spec = model_environment(self.runner.environment_spec(component), pins)
        return self._resolve(spec, f"step {step!r}")

    def host(self, store: str) -> StepImage:
        return self._resolve(host_environment(self.runner, store), "its host steps")

    def _resolve(self, spec: EnvironmentSpec, who: str) -> StepImage:
        builder = self.runner.builder
        base = builder.base(getattr(spec, "image", None) or self.settings.base_image)
        lock = self.runner.locker.lock(spec, who=who)  # resolved once, then read from its file
        key = builder.key(base, lock)
        record = builder.record(key)
        store = builder.store.url if builder.store is not None else "the artifact store"
        push = f"conveyor images push {self.pipeline}" + (
            f" --registry {self.registry}" if self.registry else " --registry HOST[:PORT]/prefix"
        )
        if record is None:
            raise CompileError(
                f"pipeline {self.pipeline!r}, {who}: the image of its environment ({key}: "
                f"{spec.describe()}) was never pushed to a registry (no images/{key}.json in "
                f"{store}). Run `{push}`, which builds what is missing, then compile again"
            )
        if self.registry and record.registry != self.registry:
            raise CompileError(
                f"pipeline {self.pipeline!r}, {who}: the image of environment {key} was pushed "
                f"to {record.registry}, not {self.registry}. Run `{push}`, or compile without "
                f"--registry to use {record.reference}"
            )
        return StepImage(record.reference, key, base.python, lock.pins, str(lock.path))


def host_environment(runner: DockerRunner, store: str) -> EnvironmentSpec:
    """The environment of host tasks, on the project's base image."""
    from conveyor.runners.images import DockerEnvironmentSpec

    base = runner.builder.base(runner.settings.base_image)
    return DockerEnvironmentSpec(host_requirements(store), base.python_minor, image=base.reference)


def remote_environments(
    settings: Settings,
    runner: DockerRunner,
    pipelines: list[Pipeline],
    params: Mapping[str, Any] | None = None,
) -> dict[EnvironmentSpec, list[str]]:
    """Every environment the compiled pipelines run in -> who needs it: each component step's
    (with the pins of the model it receives), and the host tasks' if there are host steps."""
    needs: dict[EnvironmentSpec, list[str]] = {}
    for pipeline in pipelines:
        values = compile_params(pipeline, params or {}, strict=False)
        models, _ = model_pins(pipeline, values, settings)
        for step in pipeline.steps:
            if step.component is not None and step.component.spec is not None:
                spec = runner.environment_spec(step.component.spec)
                spec = model_environment(spec, step_pins(pipeline, step, models))
                needs.setdefault(spec, []).append(f"{pipeline.name}.{step.name}")
        if any(step.host is not None for step in pipeline.steps):
            host = host_environment(runner, settings.artifact_store)
            needs.setdefault(host, []).append(f"{pipeline.name} (host steps)")
    return needs


# ---------------------------------------------------------------------------------------------
# parameters and models


def compile_params(
    pipeline: Pipeline, given: Mapping[str, Any], *, strict: bool = True
) -> dict[str, Any]:
    """Parameter values known when compiling: given ones (coerced), else defaults, else None.

    They name the files `Path` inputs read and the models `load_model` resolves; every parameter
    stays a KFP pipeline parameter that a run sets.
    """
    known = {p.name: p for p in pipeline.params}
    unknown = sorted(set(given) - set(known))
    if unknown and strict:
        raise ParameterError(
            f"pipeline {pipeline.name!r} has no parameter {', '.join(map(repr, unknown))}; its "
            f"parameters are {', '.join(known) or '(none)'}"
        )
    values: dict[str, Any] = {}
    for name, param in known.items():
        if name in given:
            values[name] = coerce_param(pipeline.name, param, given[name])
        else:
            values[name] = param.default if param.has_default else None
    return values


def model_pins(
    pipeline: Pipeline, values: Mapping[str, Any], settings: Settings
) -> tuple[dict[str, tuple[str, ...] | None], list[str]]:
    """load_model step -> the pins of the model it will hand over (None: none found), and notes.

    Resolved from the registry as a local plan does, with the compile-time parameter values (a
    parameter without one resolves as None: the model current now). A run whose model was built
    with other pins fails in its load_model task, asking for a new compile.
    """
    steps = [s for s in pipeline.steps if s.host is not None and s.host.spec.kind == "load_model"]
    if not steps:
        return {}, []
    from conveyor.ops.run import default_host_implementations

    resolver = getattr(
        default_host_implementations(settings).get("load_model"), "resolve_at_plan", None
    )
    found: dict[str, tuple[str, ...] | None] = {}
    notes: list[str] = []
    for step in steps:
        found[step.name] = None
        if resolver is None:
            notes.append(f"step {step.name!r}: no database to resolve its model from; the steps "
                         f"it feeds hold only what they declare")  # fmt: skip
            continue
        if any(b.kind == "output" for _, b in step.bindings):
            continue  # known only when it runs
        arguments = {
            n: (values.get(b.param) if b.kind == "param" and b.param else b.value)
            for n, b in step.bindings
        }
        arguments = {k: v.isoformat() if isinstance(v, date | datetime) else v
                     for k, v in arguments.items()}  # fmt: skip
        try:
            pin = resolver(**arguments)  # None: not required, and there is none
        except ConveyorError as exc:  # no such model (yet), or a database that refused
            notes.append(f"step {step.name!r}: {exc}; the steps it feeds hold only what they "
                         f"declare, so compile again once the model is registered")  # fmt: skip
            continue
        if pin is not None:
            found[step.name] = tuple(pin["pins"])
    return found, notes


def step_pins(
    pipeline: Pipeline, step: Step, models: Mapping[str, tuple[str, ...] | None]
) -> tuple[str, ...]:
    """The pins of the models a component step receives (one environment: they must agree)."""
    pins = {
        pinned
        for _, b in step.bindings
        if b.kind == "output" and b.step is not None and (pinned := models.get(b.step))
    }
    if len(pins) > 1:
        raise CompileError(
            f"pipeline {pipeline.name!r}, step {step.name!r}: it receives models built in "
            f"different environments; a step runs in one environment, so give each its own step"
        )
    found = next(iter(pins), None)
    return found or ()


# ---------------------------------------------------------------------------------------------
# compiling


def _check_store_packages(pipeline: Pipeline, step: Step, image: StepImage, store: str) -> None:
    """A step reaches a remote store itself on Kubeflow: its image needs the store's filesystem."""
    if not is_remote(store):
        return
    from conveyor.engine.environments import requirement_name

    scheme = store.split("://", 1)[0]
    needed = {"fsspec", *(requirement_name(r) for r in _STORE_PACKAGES.get(scheme, ()))}
    missing = sorted(needed - {requirement_name(pin) for pin in image.pins})
    if missing:
        package = next(iter(_STORE_PACKAGES.get(scheme, ("fsspec",)))).split(">")[0]
        raise CompileError(
            f"pipeline {pipeline.name!r}, step {step.name!r}: on Kubeflow a step reads the "
            f"artifact store {store} itself, so its environment needs {', '.join(missing)}, "
            f"which it lacks; add {package!r} to its @component(packages=[...]) (it brings "
            f"fsspec), then push its image and compile again"
        )


def _publish_bundle(store: ArtifactStore, bundle: Bundle) -> str:
    staged = store.root / ".staging" / f"bundle-{bundle.sha256}.tar"
    staged.parent.mkdir(parents=True, exist_ok=True)
    staged.write_bytes(bundle.data)
    try:
        store.put_file(bundle_key(bundle.sha256), staged)
    finally:
        staged.unlink(missing_ok=True)
    return bundle.sha256


def _file_inputs(
    pipeline: Pipeline, step: Step, values: Mapping[str, Any], settings: Settings,
    store: ArtifactStore,
) -> dict[str, FileContent]:  # fmt: skip
    """The content of a component's `Path` inputs, published to the store."""
    from conveyor.engine.files import FileHasher, publish

    assert step.component is not None and step.component.spec is not None
    component = step.component.spec
    found = {}
    hasher = FileHasher(settings.project_root)
    for name, binding in step.bindings:
        if component.input(name).codec.format != "file" or binding.kind == "output":
            continue
        value = (
            values.get(binding.param)
            if binding.kind == "param" and binding.param
            else (binding.value)
        )
        where = f"pipeline {pipeline.name!r}, step {step.name!r}, parameter {name!r}"
        if value is None:
            raise CompileError(
                f"{where}: the file it reads is named by pipeline parameter {binding.param!r}, "
                f"which has no value; a Path input is its content, published when compiling: "
                f"pass --param {binding.param}=PATH"
            )
        resolved = hasher.resolve(value, where)
        ref = publish(store, resolved)
        found[name] = FileContent(
            ref.sha256, ref.codec.format, ref.size, str(value),
            binding.param if binding.kind == "param" else None,
        )  # fmt: skip
    return found


def _store_variables(url: str) -> tuple[str, ...]:
    from conveyor.runners.remote import store_variables

    return store_variables(url)


def _refuse_maps(pipeline: Pipeline) -> None:
    """Maps and collected lists have no KFP form yet (dsl.ParallelFor and dsl.Collected would
    be it): say so before anything is built or published."""
    for step in pipeline.steps:
        collected = [name for name, b in step.bindings if b.kind == "collect"]
        if step.map is not None or collected:
            what = (
                f"maps {step.name}.map(...)"
                if step.map is not None
                else (f"collects a list of step outputs into {step.name}({collected[0]}=...)")
            )
            raise CompileError(
                f"pipeline {pipeline.name!r} {what}, which does not compile for Kubeflow yet "
                f"(it would need dsl.ParallelFor and dsl.Collected). Run it with the local or "
                f"Prefect engine, or write the items as separate steps for the KFP pipeline."
            )


def compile(
    pipeline_or_name: Pipeline | str,
    *,
    target: str = "kfp",
    output: str | Path | None = None,
    registry: str | None = None,
    params: Mapping[str, Any] | None = None,
    database_secret: str = "conveyor-database",
    database_secret_key: str = "url",
    store_secret: str | None = None,
    env_secret: str | None = None,
    settings: Settings | None = None,
    images: ImageResolver | None = None,
) -> CompileResult:
    """Compile a pipeline to a Kubeflow Pipelines v2 spec (YAML); write it to `output` if given.

    Args:
        pipeline_or_name: a `@pipeline` object, a pipeline name, or `path.py:attr`.
        target: "kfp" (Kubeflow Pipelines v2).
        output: where to write the YAML (default: only return it).
        registry: the registry the images must have been pushed to (default: as recorded).
        params: parameter values known now: which file a `Path` input reads, which model a
            `load_model` resolves to (each stays a pipeline parameter a run may set).
        database_secret, database_secret_key: the Kubernetes secret (and key) holding the
            database URL, mounted into host tasks only.
        store_secret: a Kubernetes secret with the artifact store's credentials (keys named as
            the variables), mounted into every task.
        env_secret: the Kubernetes secret holding the variables components list in `env=`.
    """
    started = time.perf_counter()
    if target not in TARGETS:
        raise CompileError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    settings = settings or Settings.load()
    pipeline = resolve_pipeline(pipeline_or_name, settings)
    _refuse_maps(pipeline)
    values = compile_params(pipeline, params or {})
    store = ArtifactStore(settings.artifact_store, cache_dir=settings.artifact_cache)
    resolver = images or RegistryImages(settings, pipeline.name, registry)
    models, notes = model_pins(pipeline, values, settings)
    if pipeline.outputs is not None and not isinstance(pipeline.outputs, Binding):
        notes.append(
            "the pipeline returns several outputs; KFP declares a single returned output as the "
            "pipeline's, so these stay outputs of their steps"
        )
    if not store.remote:
        notes.append(
            f"the artifact store is the folder {store.url}: every task must see it at that path "
            f"(kfp.local: keep it under the pipeline root); on a cluster use s3:// or gs:// "
            f"(CONVEYOR_ARTIFACTS)"
        )
    from conveyor.engine.fingerprint import Fingerprinter
    from conveyor.runners.remote import publish_package, publish_runtime

    bundler = Bundler(settings.project_root)
    fingerprints = Fingerprinter(settings.project_root)
    published: dict[str, str] = {}  # module -> its bundle (steps of one module share it)

    def bundle_of(module: str) -> str:
        if module not in published:
            published[module] = _publish_bundle(store, bundler.build(module))
        return published[module]

    step_images: dict[str, StepImage] = {}
    bundles: dict[str, str] = {}
    code: dict[str, str] = {}
    files: dict[str, dict[str, FileContent]] = {}
    for step in pipeline.steps:
        fn = step.component.fn if step.component is not None else None
        if step.host is not None:
            fn = step.host.fn  # a @host_step's function (a builtin has none: conveyor's code)
        if fn is not None:
            code[step.name] = fingerprints.fingerprint(fn)
        if step.component is not None and step.component.spec is not None:
            component = step.component.spec
            step_images[step.name] = resolver.component(
                step.name, component, step_pins(pipeline, step, models)
            )
            _check_store_packages(pipeline, step, step_images[step.name], store.url)
            bundles[step.name] = bundle_of(component.module)
            files[step.name] = _file_inputs(pipeline, step, values, settings, store)
        elif step.host is not None and step.host.fn is not None:  # a @host_step: its module
            bundles[step.name] = bundle_of(step.host.spec.module)
    hosts = any(step.host is not None for step in pipeline.steps)
    build = KfpBuild(
        store=store.url,
        runtime=publish_runtime(store),
        images=step_images,
        bundles=bundles,
        code=code,
        package=publish_package(store) if hosts else None,
        host_image=resolver.host(store.url) if hosts else None,
        files={k: v for k, v in files.items() if v},
        models=models,
        store_variables=_store_variables(store.url),
    )
    options = KfpOptions(database_secret, database_secret_key, store_secret, env_secret)
    from conveyor.backends.kfp.check import validate
    from conveyor.backends.kfp.compiler import compile_pipeline

    text = compile_pipeline(pipeline, build, options)
    validate(text, pipeline.name)
    path = None
    if output is not None:
        from conveyor._runtime.files import write_text_atomic

        path = Path(output)
        write_text_atomic(path, text)
    shown = {name: image.reference for name, image in step_images.items()}
    if build.host_image is not None:
        shown.update({s.name: build.host_image.reference for s in pipeline.steps if s.host})
    return CompileResult(
        pipeline.name, target, text, path, time.perf_counter() - started, shown, tuple(notes)
    )


__all__ = [
    "CompileResult",
    "ImageResolver",
    "RegistryImages",
    "compile",
    "compile_params",
    "host_requirements",
    "remote_environments",
]
