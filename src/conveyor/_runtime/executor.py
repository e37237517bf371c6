"""The executor protocol: the single way a step runs outside the orchestrator.

    python -m conveyor._runtime.executor SPEC [--input NAME=PATH]... [--output NAME=PATH]...
                                              [--result PATH] [--store URL] [--bundle SHA256]
                                              [--executor-input JSON]

SPEC is a JSON task spec, as a file path, a URL (s3://..., file://...) or inline (`{...}`):

    {"protocol": 1, "step": "train", "module": "components.train", "qualname": "train",
     "packages": ["scikit-learn>=1.5"],
     "inputs":     {"features": {"path": "...", "format": "parquet", "sha256": "..."}},
     "parameters": {"alpha": {"value": 0.5}, "as_of": {"value": "2024-01-02", "type": "date"}},
     "outputs":    {"output": {"path": ".../output", "format": "joblib"}},
     "returns": "single", "result": ".../result.json"}

The flags override paths, so a compiled KFP task can pass its own path placeholders. The executor
imports the step's module, loads and verifies the inputs, calls the function, writes each output
atomically with its sha256, and writes a result file (`status`, `outputs`, `timings`, or `error`
with the original traceback). It imports only the stdlib-only core: never Prefect, SQLAlchemy,
kfp or anything the step did not declare.

With `--store URL` (or `"store"` in the spec) the step needs nothing from the machine that
planned it: the code bundle (`--bundle`, or `"bundle"`) is fetched from `<store>/bundles/` and
put on the path, inputs named only by their sha256 are fetched from the store, outputs are
published to it under their hash, and the result may be written to a URL. Local paths and
`file://` use the standard library; other URLs need fsspec (and e.g. s3fs) in the step's own
environment, and the store's credentials in its variables.

With `--executor-input` (KFP's `{{$}}`), the step runs as a Kubeflow Pipelines task: run-time
parameter values come from that document, and the executor writes `executor_output.json` where
it says, listing the output parameters and artifacts (see `conveyor._runtime.kfp_io`).
"""

from __future__ import annotations

import importlib
import json
import sys
import time

from conveyor._runtime.codecs import decode_json_value, preload, read_file, write_file
from conveyor._runtime.files import atomic_write
from conveyor._runtime.step_mode import IN_STEP
from conveyor.errors import ArtifactError, ExecutorProtocolError
from conveyor.version import EXECUTOR_PROTOCOL

TYPE_CHECKING = False  # not `from typing import ...`: step processes should not pay for typing

if TYPE_CHECKING:  # every import here costs each step process; keep this module lean
    from os import PathLike
    from typing import Any

EXIT_OK = 0
EXIT_STEP_FAILED = 1
EXIT_PROTOCOL = 2


def load_spec(source: str) -> dict[str, Any]:
    """A task spec from a file path or inline JSON."""
    try:
        if source.lstrip().startswith("{"):
            text = source
        elif "://" in source:
            from conveyor._runtime.remote import read_bytes

            text = read_bytes(source).decode()
        else:
            with open(source) as f:
                text = f.read()
        spec: dict[str, Any] = json.loads(text)
    except (OSError, ArtifactError, json.JSONDecodeError) as exc:
        raise ExecutorProtocolError(f"cannot read task spec {source[:200]!r}: {exc}") from exc
    if not isinstance(spec, dict):
        raise ExecutorProtocolError(f"task spec must be a JSON object, got {type(spec).__name__}")
    if spec.get("protocol") != EXECUTOR_PROTOCOL:
        raise ExecutorProtocolError(
            f"task spec has protocol {spec.get('protocol')!r}, this executor speaks "
            f"{EXECUTOR_PROTOCOL}; rebuild the step environment (`conveyor envs prune`)"
        )
    for key in ("step", "module", "qualname", "inputs", "parameters", "outputs", "returns"):
        if key not in spec:
            raise ExecutorProtocolError(f"task spec is missing {key!r}")
    return spec


def _resolve(module: str, qualname: str) -> Any:
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return getattr(obj, "fn", obj)  # a Component wraps the plain function


def _user_traceback(exc: BaseException) -> str:
    """The traceback without the executor's own frames."""
    import traceback

    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _failure(spec: dict[str, Any], exc: BaseException, stage: str) -> dict[str, Any]:
    message = str(exc)
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        declared = ", ".join(spec.get("packages") or []) or "nothing"
        message = (
            f"No module named {exc.name!r} in the environment of step {spec['step']!r}, which "
            f"has only what the component declares ({declared}) plus conveyor's runtime. "
            f"Add the package to @component(packages=[...])."
        )
    return {
        "protocol": EXECUTOR_PROTOCOL,
        "step": spec.get("step"),
        "status": "failed",
        "error": {
            "stage": stage,
            "type": type(exc).__name__,
            "message": message,
            "traceback": _user_traceback(exc),
        },
    }


def _read(item: dict[str, Any]) -> Any:
    return read_file(item["path"], item["format"], item.get("type"), item.get("sha256"))


def run_task(spec: dict[str, Any]) -> tuple[dict[str, Any], BaseException | None]:
    """Run one task; return the result document and the exception, if user code raised one."""
    timings: dict[str, float] = {}
    stage = "import"
    try:
        t0 = time.perf_counter()
        fn = _resolve(spec["module"], spec["qualname"])
        values = [*spec["inputs"].values(), *spec["outputs"].values()]
        preload(one["format"] for item in values for one in item.get("items", [item]))
        timings["import"] = time.perf_counter() - t0

        stage = "load"
        t0 = time.perf_counter()
        kwargs: dict[str, Any] = {}
        for name, item in spec["inputs"].items():
            if "items" in item:  # a collected list: each value in item order
                kwargs[name] = [_read(one) for one in item["items"]]
            else:
                kwargs[name] = _read(item)
        for name, item in spec["parameters"].items():
            kwargs[name] = decode_json_value(item.get("value"), item.get("type"))
        timings["load"] = time.perf_counter() - t0

        stage = "run"
        t0 = time.perf_counter()
        returned = fn(**kwargs)
        timings["run"] = time.perf_counter() - t0

        stage = "save"
        t0 = time.perf_counter()
        outputs = _save_outputs(spec, returned)
        timings["save"] = time.perf_counter() - t0
    except Exception as exc:
        return _failure(spec, exc, stage), exc
    return {
        "protocol": EXECUTOR_PROTOCOL,
        "step": spec["step"],
        "status": "succeeded",
        "outputs": outputs,
        "timings": timings,
        "python": ".".join(map(str, sys.version_info[:3])),
    }, None


def _save_outputs(spec: dict[str, Any], returned: Any) -> dict[str, Any]:
    outputs: dict[str, Any] = {}
    declared = spec["outputs"]
    if spec["returns"] == "none":
        return outputs
    for name, item in declared.items():
        if spec["returns"] == "namedtuple":
            if not hasattr(returned, name):
                raise TypeError(
                    f"step {spec['step']!r} must return its NamedTuple (with field {name!r}); "
                    f"it returned {type(returned).__name__}"
                )
            value = getattr(returned, name)
        else:
            value = returned
        try:
            sha256, size = write_file(value, item["format"], item.get("type"), item["path"])
        except TypeError as exc:
            raise TypeError(f"step {spec['step']!r}, output {name!r}: {exc}") from exc
        outputs[name] = {"sha256": sha256, "size": size, "format": item["format"]}
        if item.get("type"):
            outputs[name]["type"] = item["type"]
    return outputs


def write_result(path: str | PathLike[str], result: dict[str, Any]) -> None:
    """Write a result document atomically (to a path, or a URL of the store)."""
    if "://" in str(path):
        from conveyor._runtime.remote import write_text

        write_text(str(path), json.dumps(result, indent=1))
        return
    with atomic_write(path) as f:
        json.dump(result, f, indent=1)


def from_store(spec: dict[str, Any]) -> None:
    """Fetch what a step needs from the store: its code bundle and inputs known by hash only."""
    import os

    from conveyor._runtime import remote
    from conveyor._runtime.bundles import unpack
    from conveyor._runtime.hashing import sha256_path

    store, cache = spec["store"], remote.cache_dir()
    bundle = spec.get("bundle")
    if bundle:
        archive = remote.fetch(
            remote.join(store, f"bundles/{bundle}.tar"),
            os.path.join(cache, "bundles", f"{bundle}.tar"),
        )
        if sha256_path(archive) != bundle:
            os.unlink(archive)
            raise ArtifactError(f"code bundle {bundle[:12]} in {store} does not match its hash")
        sys.path.insert(0, unpack(archive, os.path.join(cache, "bundles", bundle)))
    for entry in spec["inputs"].values():
        for item in entry.get("items", [entry]):
            if not item.get("path") or not os.path.exists(item["path"]):
                sha = item["sha256"]  # verified again when the codec reads it
                local = os.path.join(cache, "artifacts", remote.value_key(sha))
                item["path"] = remote.fetch(remote.join(store, remote.value_key(sha)), local)
    work = os.path.join(cache, "work", f"{spec['step']}-{os.getpid()}-{os.urandom(4).hex()}")
    for name, item in spec["outputs"].items():
        item.setdefault("path", os.path.join(work, name))


def to_store(spec: dict[str, Any], result: dict[str, Any]) -> None:
    """Publish a succeeded step's outputs to the store under their hash."""
    from conveyor._runtime import remote

    for name, output in result.get("outputs", {}).items():
        url = remote.join(spec["store"], remote.value_key(output["sha256"]))
        remote.publish(spec["outputs"][name]["path"], url)


def apply_overrides(spec: dict[str, Any], argv: list[str]) -> None:
    """Apply the executor's flags (paths, result, store, bundle, executor input) to a spec."""
    args = iter(argv)
    for flag in args:
        try:
            value = next(args)
        except StopIteration:
            raise ExecutorProtocolError(f"{flag} needs a value") from None
        if flag in ("--result", "--store", "--bundle"):
            spec[flag.removeprefix("--")] = value
            continue
        if flag == "--executor-input":
            from conveyor._runtime import kfp_io

            spec["executor_input"] = kfp_io.parse(value)
            continue
        name, sep, path = value.partition("=")
        section = {"--input": "inputs", "--output": "outputs"}.get(flag)
        index = None
        if name.endswith("]") and "[" in name:  # NAME[I]: item I of a collected list
            name, _, position = name[:-1].partition("[")
            index = int(position) if position.isdigit() else -1
        if section is None or not sep or name not in spec[section]:
            raise ExecutorProtocolError(f"bad override {flag} {value!r}")
        target = spec[section][name]
        if index is not None:
            items = target.get("items", [])
            if not 0 <= index < len(items):
                raise ExecutorProtocolError(f"bad override {flag} {value!r}: no such item")
            target = items[index]
        target["path"] = path


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m conveyor._runtime.executor`."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return EXIT_PROTOCOL if not argv else EXIT_OK
    IN_STEP.set(True)
    try:
        spec = load_spec(argv[0])
        apply_overrides(spec, argv[1:])
        executor_input = spec.pop("executor_input", None)
        if executor_input is not None:
            from conveyor._runtime import kfp_io

            kfp_io.apply_inputs(spec, executor_input)
    except ExecutorProtocolError as exc:
        print(f"conveyor executor: {exc}", file=sys.stderr)
        return EXIT_PROTOCOL
    if spec.get("store"):
        try:
            from_store(spec)
        except (OSError, ArtifactError, ValueError) as err:
            print(f"conveyor executor: {err}", file=sys.stderr)
            return EXIT_PROTOCOL
    result, failure = run_task(spec)
    if failure is not None and executor_input is not None:
        # under KFP the container's log is the only place a person reads the error; conveyor's
        # runners read it from the result and report it once (not line by line, as output)
        print(result["error"]["traceback"], file=sys.stderr, end="")
    try:
        if spec.get("store") and failure is None:
            to_store(spec, result)
        if executor_input is not None and failure is None:
            from conveyor._runtime import kfp_io

            document = kfp_io.output_document(spec, result["outputs"], executor_input)
            kfp_io.write_output(executor_input, document)
        if spec.get("result"):
            write_result(spec["result"], result)
    except (OSError, ArtifactError, ExecutorProtocolError) as err:
        print(f"conveyor executor: cannot write result: {err}", file=sys.stderr)
        return EXIT_PROTOCOL
    if isinstance(failure, ArtifactError):
        return EXIT_STEP_FAILED
    return EXIT_OK if failure is None else EXIT_STEP_FAILED


if __name__ == "__main__":
    sys.exit(main())
