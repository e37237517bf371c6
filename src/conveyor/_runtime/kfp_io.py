"""A step under Kubeflow Pipelines: reading KFP's executor input, writing its executor output.

A compiled KFP task passes its executor input (`{{$}}`, a JSON document) to the executor with
`--executor-input`. From it a step takes what only exists at run time:

- the values of its KFP input parameters (pipeline parameters, and JSON values handed over by
  an upstream step as a KFP output parameter), which the task spec marks with `"kfp_parameter"`
  (the parameter type, e.g. `NUMBER_INTEGER`: protobuf carries every number as a float);
- the content hash an upstream step recorded in its output artifact's metadata, so the input is
  verified like any other;
- where to write `executor_output.json` (`outputs.outputFile`) and the URIs of its output
  artifacts. KFP (the backend's launcher and `kfp.local` alike) registers the outputs listed
  there: parameter values, and artifacts with their metadata (content hash, size, format; a
  `Metrics` artifact's metadata holds the metrics themselves, as KFP's UI shows them).

The artifact files themselves travel by path (`--input NAME=PATH`, `--output NAME=PATH` with
KFP's path placeholders). Standard library only: this module is copied into every step.
"""

from __future__ import annotations

import json
import os

from conveyor.errors import ExecutorProtocolError

TYPE_CHECKING = False  # not `from typing import ...`: step processes should not pay for typing

if TYPE_CHECKING:
    from typing import Any

# How a KFP parameter reached the step: JSON types of `inputs.parameterValues`
INTEGER = "NUMBER_INTEGER"


def parse(text: str) -> dict[str, Any]:
    """The executor input document KFP rendered for `{{$}}`."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ExecutorProtocolError(f"--executor-input is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise ExecutorProtocolError("--executor-input must be a JSON object (KFP's {{$}})")
    return document


def cast(value: Any, kfp_type: str | None) -> Any:
    """A parameter value as its KFP type says (protobuf carries every number as a float)."""
    if kfp_type == INTEGER and isinstance(value, float) and value.is_integer():
        return int(value)  # protobuf's Value has one number type
    return value


def _first_artifact(section: dict[str, Any], name: str) -> dict[str, Any]:
    found = section.get(name, {}).get("artifacts") or [{}]
    artifact: dict[str, Any] = found[0]
    return artifact


def apply_inputs(spec: dict[str, Any], executor_input: dict[str, Any]) -> None:
    """Fill a task spec's run-time values from KFP's executor input (in place)."""
    inputs = executor_input.get("inputs") or {}
    values = inputs.get("parameterValues") or {}
    artifacts = inputs.get("artifacts") or {}
    step = spec.get("step")
    for name, item in spec["parameters"].items():
        if "kfp_parameter" in item and name in values:
            item["value"] = cast(values[name], item["kfp_parameter"])
    for name, item in list(spec["inputs"].items()):
        if item.get("kfp_parameter"):  # a JSON value an upstream step handed over as a parameter
            if name not in values:
                raise ExecutorProtocolError(
                    f"step {step!r}: KFP passed no value for input parameter {name!r}"
                )
            value = cast(values[name], item.get("kfp_parameter"))
            spec["parameters"][name] = {"value": value, **_typed(item)}
            del spec["inputs"][name]
            continue
        compiled = item.get("compiled_from")
        if compiled is not None:  # a file whose content was published when the spec was compiled
            given = values.get(name, compiled["value"])
            if given != compiled["value"]:
                raise ExecutorProtocolError(
                    f"step {step!r}, input {name!r}: pipeline parameter "
                    f"{compiled['parameter']!r} is {given!r}, but this pipeline was compiled "
                    f"with the content of {compiled['value']!r} (a Path input is its content, "
                    f"published to the artifact store at compile time); compile again with "
                    f"--param {compiled['parameter']}={given}"
                )
            continue
        metadata = _first_artifact(artifacts, name).get("metadata") or {}
        if not item.get("sha256") and isinstance(metadata.get("sha256"), str):
            item["sha256"] = metadata["sha256"]  # verified when the codec reads it


def _typed(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": item["type"]} if item.get("type") else {}


def output_document(
    spec: dict[str, Any], outputs: dict[str, Any], executor_input: dict[str, Any]
) -> dict[str, Any]:
    """KFP's ExecutorOutput for a succeeded step: its parameter values and output artifacts."""
    declared = (executor_input.get("outputs") or {}).get("artifacts") or {}
    document: dict[str, Any] = {}
    for name, written in outputs.items():
        item = spec["outputs"][name]
        if item.get("kfp_parameter"):
            with open(item["path"]) as f:
                document.setdefault("parameterValues", {})[name] = json.load(f)
            continue
        artifact = _first_artifact(declared, name)
        if "uri" not in artifact:
            raise ExecutorProtocolError(
                f"step {spec.get('step')!r}: KFP declared no output artifact {name!r}"
            )
        if item.get("type") == "metrics":  # KFP shows a Metrics artifact's metadata as metrics
            with open(item["path"]) as f:
                metadata: dict[str, Any] = {k: float(v) for k, v in json.load(f).items()}
        else:
            metadata = {"sha256": written["sha256"], "size": written["size"],
                        "format": written["format"]}  # fmt: skip
            if written.get("type"):
                metadata["type"] = written["type"]
        document.setdefault("artifacts", {})[name] = {
            "artifacts": [{"name": artifact.get("name", ""), "uri": artifact["uri"],
                           "metadata": metadata}]
        }  # fmt: skip
    return document


def write_output(executor_input: dict[str, Any], document: dict[str, Any]) -> None:
    """Write `executor_output.json` where KFP reads it (`outputs.outputFile`)."""
    from conveyor._runtime.files import write_text_atomic

    path = (executor_input.get("outputs") or {}).get("outputFile")
    if not path:
        raise ExecutorProtocolError("the executor input names no outputs.outputFile")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    write_text_atomic(path, json.dumps(document))
