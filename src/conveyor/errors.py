"""Every error conveyor raises, rooted in one class.

Messages say what went wrong, where (component, step, parameter, file) and how to fix it.

    ConveyorError
    ├── DefinitionError            a @component or @pipeline is written wrong
    │   ├── ComponentDefinitionError
    │   └── PipelineDefinitionError
    ├── DiscoveryError             an unknown or ambiguous pipeline, a flow file that fails
    ├── ParameterError             a run parameter is unknown, missing or of the wrong type
    ├── EnvironmentBuildError      locking or installing a step's requirements failed
    ├── ArtifactError              an artifact cannot be written or read
    │   └── ArtifactIntegrityError an artifact's bytes no longer match their content hash
    ├── ExecutorProtocolError      a task spec or result file is malformed
    ├── StepFailed                 a step did not succeed (step name, original traceback)
    │   ├── StepTimeout            it ran past its timeout and was killed
    │   ├── StepKilled             it was killed from outside (out of memory, a signal)
    │   └── HostStepFailed         a host step's own code raised (its traceback kept)
    ├── HostStepError              a host step (load_table, write_table, ...) cannot run
    ├── ScheduleError              a deployments/*.toml entry is invalid, or an upstream never ran
    ├── CompileError               a pipeline cannot be compiled for another engine (Kubeflow)
    ├── DatabaseError              conveyor's database refused a read or write
    │   ├── TableSchemaError       a frame does not fit its table, or a name is not an identifier
    │   └── RegistryError          an unknown model or version, or nothing to promote or roll back
    └── RunFailed                  raised by run(..., raise_on_failure=True) when a run fails
"""

from __future__ import annotations

TYPE_CHECKING = False  # not `from typing import ...`: step processes import this module too

if TYPE_CHECKING:
    from collections.abc import Callable


class ConveyorError(Exception):
    """Base class of every error conveyor raises."""


class DefinitionError(ConveyorError):
    """A component or pipeline definition is invalid."""


class ComponentDefinitionError(DefinitionError):
    """A @component is written wrong."""


class PipelineDefinitionError(DefinitionError):
    """A @pipeline cannot be traced into a DAG."""


class DiscoveryError(ConveyorError):
    """A pipeline name or path cannot be resolved."""


class ParameterError(ConveyorError):
    """A run parameter is unknown, missing or invalid."""


class EnvironmentBuildError(ConveyorError):
    """Locking or building a step environment failed."""


class ArtifactError(ConveyorError):
    """An artifact cannot be written or read."""


class ArtifactIntegrityError(ArtifactError):
    """An artifact's content does not match its recorded hash."""


class ExecutorProtocolError(ConveyorError):
    """A task spec or task result does not follow the executor protocol."""


class HostStepError(ConveyorError):
    """A host step cannot run (no implementation, bad target, bad arguments)."""


class ScheduleError(ConveyorError):
    """A deployments/*.toml entry is invalid, or a scheduled run's upstream never succeeded."""


class CompileError(ConveyorError):
    """A pipeline cannot be compiled for another engine: an unsupported construct, an image
    that was never pushed, a spec that fails its checks."""


class DatabaseError(ConveyorError):
    """conveyor's database (SQLite or PostgreSQL) refused a read or write, or is unusable."""


class TableSchemaError(DatabaseError):
    """A frame does not fit the table it is written to, or a table/column name is invalid."""


class RegistryError(DatabaseError):
    """A model name or version is unknown, or there is nothing to promote or roll back to."""


class StepFailed(ConveyorError):
    """A step did not succeed.

    Attributes:
        step: the step name.
        error_type: the exception class name raised by user code, or a short cause.
        detail: the message.
        remote_traceback: the original traceback text from the step process, if any.
    """

    kind = "step"  # how the message names what failed

    def __init__(
        self,
        step: str,
        detail: str,
        *,
        error_type: str = "",
        remote_traceback: str = "",
    ) -> None:
        self.step = step
        self.detail = detail
        self.error_type = error_type
        self.remote_traceback = remote_traceback
        head = f"{self.kind} {step!r} failed: "
        head += f"{error_type}: {detail}" if error_type else detail
        if remote_traceback:
            head += f"\n\nOriginal traceback (from the {self.kind}):\n" + remote_traceback.rstrip()
        super().__init__(head)

    def __reduce__(self) -> tuple[Callable[..., StepFailed], tuple[object, ...]]:
        # keep picklable for process pools and Prefect
        return (
            _rebuild_step_failed,
            (type(self), self.step, self.detail, self.error_type, self.remote_traceback),
        )


def _rebuild_step_failed(
    cls: type[StepFailed], step: str, detail: str, error_type: str, remote_traceback: str
) -> StepFailed:
    return cls(step, detail, error_type=error_type, remote_traceback=remote_traceback)


class StepTimeout(StepFailed):
    """A step ran past its timeout and was killed."""


class StepKilled(StepFailed):
    """A step was killed from outside (out of memory, a signal)."""


class HostStepFailed(StepFailed):
    """A host step's own code (a @host_step function or a sink) raised; its traceback is kept."""

    kind = "host step"


class RunFailed(ConveyorError):
    """A pipeline run ended in failure."""
