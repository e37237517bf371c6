"""A host step as a Kubeflow Pipelines task: one load_table, write_table, register_model,
load_model or @host_step, run from its inline spec in the host image.

    python -c "$BOOTSTRAP" STORE PACKAGE_SHA256 SPEC [--bundle SHA256] --executor-input JSON
        [--input NAME=PATH]... [--output NAME=PATH]... --run-id ID

The bootstrap (`conveyor._runtime.bootstrap`) fetches the whole conveyor package from the
artifact store and hands over to `main`. Inputs arrive as KFP gives them (artifact files at
their paths, parameters in the executor input), the database URL in CONVEYOR_DATABASE_URL from
the Kubernetes secret only host tasks mount. The step runs with the same implementation as a
local run's (`conveyor.db.host_steps`), and its output is written where KFP expects it, with
`executor_output.json`. Differences from a local run: the run's id is KFP's, the run itself is
recorded by KFP (not in conveyor's runs table), and register_model records no training-data
reads or git version (the task sees neither the other tasks' results nor the repository).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import traceback
from collections.abc import Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from conveyor._runtime import kfp_io
from conveyor._runtime.codecs import decode_json_value, write_file
from conveyor._runtime.executor import apply_overrides, from_store, load_spec
from conveyor._runtime.hashing import sha256_path
from conveyor.backends.kfp.build import RUN_PARAMETER
from conveyor.dsl.artifacts import ArtifactRef, Codec, read_value
from conveyor.engine.store import ArtifactStore
from conveyor.errors import ConveyorError, ExecutorProtocolError, HostStepError

log = logging.getLogger("conveyor.host_task")

EXIT_OK, EXIT_FAILED, EXIT_PROTOCOL = 0, 1, 2


def _parse(argv: list[str]) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(spec, executor input, run id) from the command line."""
    if not argv:
        raise ExecutorProtocolError("usage: host_task SPEC [flags...]")
    rest, run_id = [], ""
    args = iter(argv[1:])
    for flag in args:
        if flag == "--run-id":
            run_id = next(args, "")
            continue
        rest.append(flag)
    spec = load_spec(argv[0])
    for key in ("kind", "pipeline", "run_parameters"):
        if key not in spec:
            raise ExecutorProtocolError(f"host task spec is missing {key!r}")
    apply_overrides(spec, rest)
    executor_input = spec.pop("executor_input", None)
    if executor_input is None:
        raise ExecutorProtocolError("a host task needs --executor-input (KFP's {{$}})")
    if not spec.get("store"):
        raise ExecutorProtocolError("a host task needs --store (the artifact store's URL)")
    return spec, executor_input, run_id or "kfp"


def run_parameters(spec: dict[str, Any], executor_input: dict[str, Any]) -> dict[str, Any]:
    """The pipeline run's parameters, as the host task received them (typed)."""
    given = (executor_input.get("inputs") or {}).get("parameterValues") or {}
    found = {}
    for name, item in spec["run_parameters"].items():
        value = given.get(f"{RUN_PARAMETER}{name}", item.get("value"))
        value = kfp_io.cast(value, item.get("kfp_parameter"))
        found[name] = decode_json_value(value, item.get("type"))
    return found


def partition_of(spec: dict[str, Any], params: Mapping[str, Any]) -> tuple[date, date] | None:
    """The run's partition, from the pipeline's partition parameters."""
    names = spec.get("partition")
    if not names:
        return None
    first, last = (names, names) if isinstance(names, str) else names
    if params.get(first) is None or params.get(last) is None:
        return None
    return params[first], params[last]


def _arguments(spec: dict[str, Any], store: ArtifactStore) -> dict[str, Any]:
    """The host step's keyword arguments: parameters decoded, inputs loaded (or referenced)."""
    kwargs = {
        name: decode_json_value(item.get("value"), item.get("type"))
        for name, item in spec["parameters"].items()
    }
    by_ref = set(spec.get("by_ref") or ())
    for name, item in spec["inputs"].items():
        codec = Codec(item["format"], item.get("type"))
        if name not in by_ref:
            kwargs[name] = read_value(item["path"], codec, item.get("sha256"))
            continue
        # a reference (register_model's model): its content is what the registry records, and
        # the store must hold it (the producing step published it; a copy makes sure)
        ref = ArtifactRef(sha256_path(item["path"]), codec, Path(item["path"]).stat().st_size)
        if item.get("sha256") and item["sha256"] != ref.sha256:
            raise HostStepError(
                f"step {spec['step']!r}, input {name!r}: {item['path']} does not match the "
                f"content hash its producer recorded ({item['sha256'][:12]})"
            )
        if not store.exists(ref):
            staged = store.root / ".staging" / f"input-{ref.sha256[:16]}-{os.getpid()}"
            staged.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(item["path"], staged)
            store.ingest(staged, ref)
        kwargs[name] = ref
    return kwargs


def _check_model(spec: dict[str, Any], found: dict[str, Any] | None, name: str) -> None:
    """A loaded model must fit the images compiled for the steps it feeds."""
    compiled = spec.get("model_pins")
    runtime = sorted(found["pins"]) if found is not None else None
    if found is None or sorted(compiled or []) == runtime:
        return
    if compiled is None:
        reason = "no such model existed when the pipeline was compiled"
    else:
        reason = "they were built with the pins of another version"
    raise HostStepError(
        f"step {spec['step']!r}: model {name!r} v{found['version']} was built with "
        f"{', '.join(runtime or []) or 'no pins'}, but the steps it feeds run in images compiled "
        f"without them ({reason}). Push and compile the pipeline again "
        f"(`conveyor images push {spec['pipeline']}`, `conveyor compile {spec['pipeline']} "
        f"--target kfp`) so they get the model's environment"
    )


def run(spec: dict[str, Any], executor_input: dict[str, Any], run_id: str) -> dict[str, Any]:
    """Run one host task; returns the KFP executor output it wrote."""
    os.environ.setdefault("CONVEYOR_HOME", tempfile.mkdtemp(prefix="conveyor-host-"))
    from conveyor._runtime import remote
    from conveyor.db.api import Registry
    from conveyor.db.host_steps import implementations
    from conveyor.dsl.host import HostContext, call_user_host_step
    from conveyor.engine.planning import ModelPin
    from conveyor.engine.results import RunInfo
    from conveyor.engine.settings import Settings

    kfp_io.apply_inputs(spec, executor_input)
    from_store(spec)  # the @host_step's bundle onto sys.path; output paths for parameters
    settings = Settings.load()
    store = ArtifactStore(spec["store"], cache_dir=Path(remote.cache_dir()) / "artifacts")
    params = run_parameters(spec, executor_input)
    partition = partition_of(spec, params)
    info = RunInfo(
        run_id=run_id, pipeline=spec["pipeline"], params=params, partition=partition,
        partition_dates=(), engine="kfp", runner="kfp", project_root=str(Path.cwd()),
        started_at=datetime.now(UTC),
    )  # fmt: skip
    kwargs = _arguments(spec, store)
    context = HostContext(
        run=info,
        step=spec["step"],
        params=params,
        partition=partition,
        store=store,
        project_root=Path.cwd(),
        log=logging.getLogger(f"conveyor.step.{spec['step']}"),
        upstream=dict(spec.get("upstream") or {}),
        environments={k: SimpleNamespace(**v) for k, v in (spec.get("environments") or {}).items()},
        code=dict(spec.get("code") or {}),
        registry=Registry(settings),
    )
    kind = spec["kind"]
    if kind == "user":
        import importlib

        target: Any = importlib.import_module(spec["module"])
        for part in spec["qualname"].split("."):
            target = getattr(target, part)
        value = call_user_host_step(target, context, kwargs)
    else:
        impls = implementations(settings)
        if kind == "load_model":
            resolver = getattr(impls["load_model"], "resolve_at_plan")  # noqa: B009
            found = resolver(**kwargs)
            _check_model(spec, found, kwargs["name"])
            if found is not None:  # load exactly the version checked
                context.pinned = ModelPin(kwargs["name"], found["version"], tuple(found["pins"]))
        if kind not in impls:
            raise HostStepError(f"step {spec['step']!r}: no implementation of {kind!r}")
        value = impls[kind](context, **kwargs)
    written = {}
    for name, item in spec["outputs"].items():
        if spec.get("output_is_ref"):
            if not isinstance(value, ArtifactRef):
                raise HostStepError(f"host step {spec['step']!r} must return an ArtifactRef")
            Path(item["path"]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(store.local_path(value), item["path"])
            written[name] = value.to_dict()
            continue
        sha256, size = write_file(value, item["format"], item.get("type"), item["path"])
        written[name] = {"sha256": sha256, "size": size, "format": item["format"],
                         **({"type": item["type"]} if item.get("type") else {})}  # fmt: skip
    document = kfp_io.output_document(spec, written, executor_input)
    kfp_io.write_output(executor_input, document)
    return document


def main(argv: list[str] | None = None) -> int:
    """Entry point of a KFP host task (after the bootstrap)."""
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    argv = sys.argv[1:] if argv is None else argv
    try:
        spec, executor_input, run_id = _parse(argv)
    except ExecutorProtocolError as exc:
        print(f"conveyor host task: {exc}", file=sys.stderr)
        return EXIT_PROTOCOL
    try:
        run(spec, executor_input, run_id)
    except ConveyorError as exc:
        print(f"conveyor host task, step {spec['step']!r}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except Exception:  # the user's @host_step (or a sink) raised: keep its traceback
        print(f"conveyor host task, step {spec['step']!r} failed:", file=sys.stderr)
        traceback.print_exc()
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
