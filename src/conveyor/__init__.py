"""conveyor: ML pipelines of plain Python functions, each step in its own environment.

Names are re-exported lazily: `import conveyor` loads nothing, and a step process (which gets
only the stdlib-only core on its path) can still `from conveyor import component, pipeline`.
Every public name is below, in `__all__` and in the lazy table (a test keeps the three equal).
"""

from __future__ import annotations

import importlib

from conveyor.version import __version__

TYPE_CHECKING = False  # not `from typing import ...`: step processes should not pay for typing

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "ArtifactError": "conveyor.errors",
    "ArtifactIntegrityError": "conveyor.errors",
    "ArtifactRef": "conveyor.dsl.artifacts",
    "BackfillResult": "conveyor.ops.backfill",
    "CompileError": "conveyor.errors",
    "Component": "conveyor.dsl.component",
    "ComponentDefinitionError": "conveyor.errors",
    "ConveyorError": "conveyor.errors",
    "DatabaseError": "conveyor.errors",
    "DefinitionError": "conveyor.errors",
    "DiscoveryError": "conveyor.errors",
    "EnvironmentBuildError": "conveyor.errors",
    "ExecutorProtocolError": "conveyor.errors",
    "HostContext": "conveyor.dsl.host",
    "HostStepError": "conveyor.errors",
    "HostStepFailed": "conveyor.errors",
    "Metrics": "conveyor._runtime.codecs",
    "ModelRecord": "conveyor.db.registry",
    "ParameterError": "conveyor.errors",
    "Pipeline": "conveyor.dsl.pipeline",
    "PipelineDefinitionError": "conveyor.errors",
    "Registry": "conveyor.db.api",
    "RegistryError": "conveyor.errors",
    "RunFailed": "conveyor.errors",
    "RunHooks": "conveyor.engine.hooks",
    "RunInfo": "conveyor.engine.results",
    "RunResult": "conveyor.engine.results",
    "ScheduleError": "conveyor.errors",
    "Settings": "conveyor.engine.settings",
    "StepFailed": "conveyor.errors",
    "StepKilled": "conveyor.errors",
    "StepResult": "conveyor.engine.results",
    "StepTimeout": "conveyor.errors",
    "Table": "conveyor._runtime.tables",
    "TableSchemaError": "conveyor.errors",
    "after": "conveyor.dsl.pipeline",
    "backfill": "conveyor.ops.backfill",
    "compile": "conveyor.ops.compile",
    "component": "conveyor.dsl.component",
    "host_step": "conveyor.dsl.host",
    "load_model": "conveyor.dsl.host",
    "load_table": "conveyor.dsl.host",
    "pipeline": "conveyor.dsl.pipeline",
    "publish_report": "conveyor.ops.report",
    "read_table": "conveyor.db.api",
    "register_model": "conveyor.dsl.host",
    "run": "conveyor.ops.run",
    "write_table": "conveyor.dsl.host",
}

__all__ = [
    "ArtifactError",
    "ArtifactIntegrityError",
    "ArtifactRef",
    "BackfillResult",
    "CompileError",
    "Component",
    "ComponentDefinitionError",
    "ConveyorError",
    "DatabaseError",
    "DefinitionError",
    "DiscoveryError",
    "EnvironmentBuildError",
    "ExecutorProtocolError",
    "HostContext",
    "HostStepError",
    "HostStepFailed",
    "Metrics",
    "ModelRecord",
    "ParameterError",
    "Pipeline",
    "PipelineDefinitionError",
    "Registry",
    "RegistryError",
    "RunFailed",
    "RunHooks",
    "RunInfo",
    "RunResult",
    "ScheduleError",
    "Settings",
    "StepFailed",
    "StepKilled",
    "StepResult",
    "StepTimeout",
    "Table",
    "TableSchemaError",
    "__version__",
    "after",
    "backfill",
    "compile",
    "component",
    "host_step",
    "load_model",
    "load_table",
    "pipeline",
    "publish_report",
    "read_table",
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

    from conveyor._runtime.codecs import Metrics
    from conveyor._runtime.tables import Table
    from conveyor.db.api import Registry, read_table
    from conveyor.db.registry import ModelRecord
    from conveyor.dsl.artifacts import ArtifactRef
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
    from conveyor.engine.hooks import RunHooks
    from conveyor.engine.results import RunInfo, RunResult, StepResult
    from conveyor.engine.settings import Settings
    from conveyor.errors import (
        ArtifactError,
        ArtifactIntegrityError,
        CompileError,
        ComponentDefinitionError,
        ConveyorError,
        DatabaseError,
        DefinitionError,
        DiscoveryError,
        EnvironmentBuildError,
        ExecutorProtocolError,
        HostStepError,
        HostStepFailed,
        ParameterError,
        PipelineDefinitionError,
        RegistryError,
        RunFailed,
        ScheduleError,
        StepFailed,
        StepKilled,
        StepTimeout,
        TableSchemaError,
    )
    from conveyor.ops.backfill import BackfillResult, backfill
    from conveyor.ops.compile import compile
    from conveyor.ops.report import publish_report
    from conveyor.ops.run import run
