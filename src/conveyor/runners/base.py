"""The runner contract: prepare environments before a run, then run single tasks in them.

A runner owns isolation and timeouts; the engine owns ordering, caching and retries. Every runner
runs the same executor protocol (`python -m conveyor.executor SPEC`), so a step behaves the same
in-process, in a venv, in a container and on Kubernetes.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from conveyor.component_spec import ComponentSpec
from conveyor.environment import EnvironmentSpec, merge_requirements
from conveyor.errors import StepFailed, StepKilled, StepTimeout

# Variables every step process gets besides its declared `env`: enough for Python and locale.
BASE_VARIABLES = ("PATH", "LANG", "LC_ALL", "TZ", "SSL_CERT_FILE", "SSL_CERT_DIR")


@dataclass(frozen=True, slots=True)
class PreparedEnvironment:
    """A built environment a task can run in."""

    key: str
    spec: EnvironmentSpec
    location: str  # a venv folder, an image tag, or "inprocess"
    interpreter: str  # full version of the Python inside, e.g. "3.11.7"
    lock_path: str | None = None
    pins: tuple[str, ...] = ()
    build_seconds: float = 0.0
    built: bool = False  # True when this plan had to build it (False: reused)


@dataclass(frozen=True, slots=True)
class Task:
    """One attempt of one step, as the engine hands it to a runner."""

    step: str
    component: ComponentSpec
    spec: dict[str, Any]
    workdir: Path
    environment: PreparedEnvironment
    project_root: Path
    log: Callable[[str], None]

    @property
    def spec_path(self) -> Path:
        return self.workdir / "task.json"

    @property
    def result_path(self) -> Path:
        return Path(self.spec["result"])


class Runner(Protocol):
    """What the engine needs from a runner."""

    name: str

    def environment_spec(self, component: ComponentSpec) -> EnvironmentSpec: ...

    def prepare(
        self, needs: Mapping[EnvironmentSpec, Sequence[str]]
    ) -> dict[EnvironmentSpec, PreparedEnvironment]: ...

    def run(self, task: Task) -> dict[str, Any]: ...

    def limitations(self, component: ComponentSpec) -> list[str]: ...

    def close(self) -> None: ...


def python_version() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def requirement_spec(component: ComponentSpec, python: str | None = None) -> EnvironmentSpec:
    """Declared packages plus what moving the step's values needs (pandas for DataFrames)."""
    requirements = merge_requirements(component.packages, component.implied_packages)
    return EnvironmentSpec(requirements, python or python_version())


def step_variables(component: ComponentSpec, extra: Mapping[str, str] = ()) -> dict[str, str]:
    """The environment of a step process: basics plus the declared `env` names, never CONVEYOR_*."""
    variables = {k: os.environ[k] for k in BASE_VARIABLES if k in os.environ}
    variables.update({k: os.environ[k] for k in component.env if k in os.environ})
    variables.update(extra)
    return {k: v for k, v in variables.items() if not k.startswith("CONVEYOR_")}


def write_task_spec(task: Task) -> None:
    task.workdir.mkdir(parents=True, exist_ok=True)
    task.spec_path.write_text(json.dumps(task.spec, indent=1))


def read_result(
    task: Task,
    returncode: int | None,
    stderr_tail: str,
    *,
    timed_out: bool = False,
    oom: bool = False,
    limit: str | None = None,
) -> dict[str, Any]:
    """The executor's result document, or the StepFailed that explains its absence."""
    step = task.step
    if timed_out:
        raise StepTimeout(step, f"timed out after {task.component.timeout:g} s and was killed")
    if oom:
        raise StepKilled(step, f"killed: out of memory (limit {limit})")
    try:
        result = json.loads(task.result_path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        result = None
    if result is not None and result.get("status") == "failed":
        error = result.get("error", {})
        raise StepFailed(
            step,
            error.get("message", "failed"),
            error_type=error.get("type", ""),
            remote_traceback=error.get("traceback", ""),
        )
    if returncode is not None and returncode < 0:
        import signal

        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        raise StepKilled(step, f"killed by {name}" + _tail(stderr_tail))
    if result is None or result.get("status") != "succeeded":
        code = "an unknown status" if returncode is None else f"exit code {returncode}"
        raise StepFailed(step, f"ended with {code} and no result file" + _tail(stderr_tail))
    if returncode not in (0, None):
        raise StepFailed(step, f"ended with exit code {returncode}" + _tail(stderr_tail))
    return result


def _tail(text: str) -> str:
    text = text.strip()
    return f"; last output:\n{text}" if text else ""
