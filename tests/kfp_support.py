"""Compiling for Kubeflow Pipelines in tests: images resolved without a Docker engine, and the
normalisation golden files are compared under."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from conveyor.backends.kfp.build import StepImage
from conveyor.dsl.component import ComponentSpec


class FakeImages:
    """Images named by a hash of what they would hold (as the real keys are): no engine, no
    registry. `salt` stands for a rebuilt environment (another base image, another lock)."""

    def __init__(self, registry: str = "registry.test/ml", salt: str = "") -> None:
        self.registry = registry
        self.salt = salt

    def _image(self, what: str) -> StepImage:
        key = hashlib.sha256(f"{what}{self.salt}".encode()).hexdigest()[:24]
        digest = hashlib.sha256(f"image {key}".encode()).hexdigest()
        return StepImage(f"{self.registry}/conveyor-env@sha256:{digest}", key, "3.11.2",
                         (f"fake=={key[:6]}",), f"/locks/{key}.txt")  # fmt: skip

    def component(self, step: str, component: ComponentSpec, pins: tuple[str, ...]) -> StepImage:
        return self._image(repr((component.packages, component.implied_packages, pins)))

    def host(self, store: str) -> StepImage:
        return self._image("host")


_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}")
_SDK = re.compile(r"^(sdkVersion: )kfp-\S+$", re.M)
_HASH = re.compile(r"\b[0-9a-f]{64}\b")


def normalized(text: str, store: str | Path | None = None) -> str:
    """A compiled spec without what legitimately differs between machines and code edits: image
    digests, the kfp version, the store's folder, and content hashes (code bundles, runtime,
    cache keys, fingerprints), which are numbered by first appearance, so the golden still says
    which tasks share a bundle or an image."""
    text = _DIGEST.sub("@sha256:<digest>", text)
    text = _SDK.sub(r"\1kfp-<version>", text)
    if store is not None:
        text = text.replace(str(store), "<store>")
    numbers: dict[str, int] = {}

    def number(match: re.Match[str]) -> str:
        return f"<hash-{numbers.setdefault(match.group(0), len(numbers) + 1)}>"

    return _HASH.sub(number, text)


def render_task(
    spec: dict,
    task: str,
    root: Path,
    parameters: dict | None = None,
    artifacts: dict[str, Path] | None = None,
    run_id: str = "run-1",
) -> tuple[list[str], dict, dict[str, Path]]:
    """What a KFP launcher does for one task of a compiled spec, in miniature: the executor
    input, the container's arguments with every placeholder filled, and the output artifact
    paths. `parameters`: input parameter values; `artifacts`: input artifact files."""
    import json

    component = spec["components"][spec["root"]["dag"]["tasks"][task]["componentRef"]["name"]]
    container = spec["deploymentSpec"]["executors"][component["executorLabel"]]["container"]
    outputs = component.get("outputDefinitions") or {}
    paths = {name: root / "outputs" / task / name for name in outputs.get("artifacts") or {}}
    executor_input = {
        "inputs": {
            "parameterValues": dict(parameters or {}),
            "artifacts": {n: {"artifacts": [{"name": n, "uri": str(p), "metadata": {}}]}
                          for n, p in (artifacts or {}).items()},
        },
        "outputs": {
            "artifacts": {n: {"artifacts": [{"name": n, "uri": str(p)}]} for n, p in paths.items()},
            "parameters": {n: {"outputFile": str(root / "outputs" / task / f"{n}.param")}
                           for n in outputs.get("parameters") or {}},
            "outputFile": str(root / "outputs" / task / "executor_output.json"),
        },
    }  # fmt: skip
    filled = []
    for arg in container["args"]:
        arg = arg.replace("{{$}}", json.dumps(executor_input))
        arg = arg.replace("{{$.pipeline_job_uuid}}", run_id)
        for name, path in (artifacts or {}).items():
            arg = arg.replace(f"{{{{$.inputs.artifacts['{name}'].path}}}}", str(path))
        for name, path in paths.items():
            arg = arg.replace(f"{{{{$.outputs.artifacts['{name}'].path}}}}", str(path))
        assert "{{$" not in arg, f"unfilled placeholder in {arg[:200]}"
        filled.append(arg)
    return filled, executor_input, paths


def as_bootstrapped(args: list[str]) -> list[str]:
    """The arguments the bootstrap hands the entry's main: after STORE RUNTIME, plus --store."""
    return [*args[2:], "--store", args[0]]
