"""What a run returns: per-step status, reasons, timings and artifact references."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from types import MappingProxyType
from typing import Any

from conveyor.dsl.artifacts import ArtifactRef
from conveyor.dsl.placeholders import Binding
from conveyor.engine.store import ArtifactStore

SUCCEEDED, CACHED, FAILED, SKIPPED = "succeeded", "cached", "failed", "skipped"
DONE = (SUCCEEDED, CACHED)


@dataclass(frozen=True, slots=True)
class RunInfo:
    """Identity of a run, handed to hooks before anything runs."""

    run_id: str
    pipeline: str
    params: dict[str, Any]
    partition: tuple[date, date] | None
    partition_dates: tuple[date, ...]
    engine: str
    runner: str
    project_root: str
    started_at: datetime
    tags: tuple[str, ...] = ()
    code_version: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class StepResult:
    """The outcome of one step.

    Attributes:
        status: "succeeded", "cached", "failed" or "skipped".
        reason: why it ran ("parameter alpha changed"), was cached, or was skipped.
        artifacts: references to the outputs (not loaded).
        output: the output value(s), loaded from the store on access.
    """

    name: str
    kind: str
    status: str
    reason: str = ""
    duration: float = 0.0
    attempts: int = 0
    artifacts: dict[str, ArtifactRef] = field(default_factory=dict)
    error: str | None = None
    metrics: dict[str, float] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    environment: str | None = None
    cache_key: str | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    started_at: datetime | None = None
    log_path: str | None = None
    returns: str = "single"
    store: ArtifactStore | None = field(default=None, repr=False)

    @property
    def output(self) -> Any:
        """The step's return value: one value, a dict of NamedTuple fields, or None."""
        if not self.artifacts or self.store is None:
            return None
        loaded = {name: self.store.load(ref) for name, ref in self.artifacts.items()}
        if self.returns == "namedtuple":
            return loaded
        return loaded.get("output")


@dataclass(slots=True)
class RunResult:
    """The outcome of a pipeline run; `steps[name]` for each step, `output` for its returns."""

    run_id: str
    pipeline: str
    status: str
    params: dict[str, Any]
    steps: MappingProxyType[str, StepResult]
    duration: float
    outputs: Any = None
    error: str | None = None
    plan_seconds: float = 0.0
    flow_run_id: str | None = None  # the Prefect flow run, under the Prefect engine

    @property
    def ok(self) -> bool:
        return self.status == SUCCEEDED

    @property
    def output(self) -> Any:
        """The pipeline's returned values, loaded from the store."""
        return self._load(self.outputs)

    def _load(self, binding: Any) -> Any:
        if binding is None:
            return None
        if isinstance(binding, Binding) and binding.kind == "collect":
            return [self._load(item) for item in binding.items]
        if isinstance(binding, Binding):
            assert binding.step is not None  # a pipeline returns step outputs only
            step = self.steps[binding.step]
            ref = step.artifacts.get(binding.output or "output")
            if ref is None or step.store is None:
                return None
            return step.store.load(ref)
        if isinstance(binding, tuple):
            return tuple(self._load(b) for b in binding)
        return {k: self._load(v) for k, v in binding.items()}

    def summary(self) -> str:
        """`example succeeded in 3.10s: 4 steps, 3 cached, 1 ran (2.51s), 0 failed`."""
        steps = list(self.steps.values())
        ran = [s for s in steps if s.status in (SUCCEEDED, FAILED)]
        count = {status: sum(s.status == status for s in steps) for status in (CACHED, FAILED)}
        skipped = sum(s.status == SKIPPED for s in steps)
        text = (
            f"{self.pipeline} {self.status} in {self.duration:.2f}s: {len(steps)} steps, "
            f"{count[CACHED]} cached, {len(ran)} ran ({sum(s.duration for s in ran):.2f}s), "
            f"{count[FAILED]} failed"
        )
        return text + (f", {skipped} skipped" if skipped else "")
