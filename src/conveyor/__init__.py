"""conveyor: ML pipelines of plain Python functions, each step in its own environment.

Names are re-exported lazily: `import conveyor` loads nothing, and a step process (which gets
only the stdlib-only core on its path) can still `from conveyor import component, pipeline`.
"""

from __future__ import annotations

import importlib

from conveyor.version import __version__

TYPE_CHECKING = False  # not `from typing import ...`: step processes should not pay for typing

_EXPORTS: dict[str, str] = {
    "ArtifactRef": "conveyor.dsl.artifacts",
    "Component": "conveyor.dsl.component",
    "ConveyorError": "conveyor.errors",
    "HostContext": "conveyor.dsl.host",
    "Metrics": "conveyor.dsl.artifacts",
    "Pipeline": "conveyor.dsl.pipeline",
    "after": "conveyor.dsl.pipeline",
    "RunResult": "conveyor.engine.results",
    "StepFailed": "conveyor.errors",
    "StepResult": "conveyor.engine.results",
    "component": "conveyor.dsl.component",
    "host_step": "conveyor.dsl.host",
    "load_model": "conveyor.dsl.host",
    "load_table": "conveyor.dsl.host",
    "pipeline": "conveyor.dsl.pipeline",
    "register_model": "conveyor.dsl.host",
    "run": "conveyor.ops.run",
    "write_table": "conveyor.dsl.host",
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
    from conveyor._runtime.step_mode import IN_STEP, step_export

    if IN_STEP.get():  # a step has only the stdlib-only core on its path
        return step_export(name, module)
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from typing import Any

    from conveyor.dsl.artifacts import ArtifactRef, Metrics
    from conveyor.dsl.component import Component, component
    from conveyor.dsl.host import (
        HostContext,
        host_step,
        load_model,
        load_table,
        register_model,
        write_table,
    )
    from conveyor.dsl.pipeline import Pipeline, after, pipeline
    from conveyor.engine.results import RunResult, StepResult
    from conveyor.errors import ConveyorError, StepFailed
    from conveyor.ops.run import run
