"""What every runner shares: the step's environment variables, its task spec and its result.

The contract itself (Task, Runner) is the engine's: `conveyor.engine.tasks`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from conveyor.dsl.component import ComponentSpec
from conveyor.engine.environments import EnvironmentSpec, merge_requirements
from conveyor.engine.tasks import Task
from conveyor.errors import StepFailed, StepKilled, StepTimeout

# Variables every step process gets besides its declared `env`: enough for Python and locale.
BASE_VARIABLES = ("PATH", "LANG", "LC_ALL", "TZ", "SSL_CERT_FILE", "SSL_CERT_DIR")
_NO_EXTRA: Mapping[str, str] = MappingProxyType({})


def python_version() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def requirement_spec(component: ComponentSpec, python: str | None = None) -> EnvironmentSpec:
    """Declared packages plus what moving the step's values needs (pandas for DataFrames)."""
    requirements = merge_requirements(component.packages, component.implied_packages)
    return EnvironmentSpec(requirements, python or python_version())


def step_variables(
    component: ComponentSpec, extra: Mapping[str, str] = _NO_EXTRA
) -> dict[str, str]:
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
    result: dict[str, Any] | None
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
