"""conveyor: ML pipelines of plain Python functions, each step in its own environment.

Names are re-exported lazily: `import conveyor` loads nothing, and a step process (which gets
only the stdlib-only core on its path) can still `from conveyor import component, pipeline`.
"""

from __future__ import annotations

import importlib

from conveyor.version import __version__

TYPE_CHECKING = False  # not `from typing import ...`: step processes should not pay for typing

_EXPORTS: dict[str, str] = {
    "ArtifactRef": "conveyor.artifacts",
    "Component": "conveyor.component_spec",
    "ConveyorError": "conveyor.errors",
    "HostContext": "conveyor.host",
    "Metrics": "conveyor.artifacts",
    "Pipeline": "conveyor.dag",
    "after": "conveyor.dag",
    "RunResult": "conveyor.results",
    "StepFailed": "conveyor.errors",
    "StepResult": "conveyor.results",
    "component": "conveyor.component_spec",
    "host_step": "conveyor.host",
    "load_model": "conveyor.host",
    "load_table": "conveyor.host",
    "pipeline": "conveyor.dag",
    "register_model": "conveyor.host",
    "run": "conveyor.launch",
    "write_table": "conveyor.host",
}

__all__ = [
    "ArtifactRef",
    "Component",
    "ConveyorError",
    "HostContext",
    "Metrics",
    "Pipeline",
    "RunResult",
    "StepFailed",
    "StepResult",
    "__version__",
    "after",
    "component",
    "host_step",
    "load_model",
    "load_table",
    "pipeline",
    "register_model",
    "run",
    "write_table",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'conveyor' has no attribute {name!r}")
    from conveyor._step_mode import IN_STEP, STEP_MODE_EXPORTS

    if IN_STEP.get() and name in STEP_MODE_EXPORTS:
        return STEP_MODE_EXPORTS[name]
    if IN_STEP.get() and name == "Metrics":
        module = "conveyor._codecs"
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from typing import Any

    from conveyor.artifacts import ArtifactRef, Metrics
    from conveyor.component_spec import Component, component
    from conveyor.dag import Pipeline, after, pipeline
    from conveyor.errors import ConveyorError, StepFailed
    from conveyor.host import (
        HostContext,
        host_step,
        load_model,
        load_table,
        register_model,
        write_table,
    )
    from conveyor.launch import run
    from conveyor.results import RunResult, StepResult
