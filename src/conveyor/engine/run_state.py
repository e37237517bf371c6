"""One run's state while it executes: which steps finished how, and what they produced.

Drivers (the local thread pool, Prefect tasks) decide order and concurrency from it: `ready`
steps may start, `skip_blocked` settles steps whose upstream failed, `finish` records a result
and reports it to the hooks, `complete` builds the RunResult. Thread-safe.
"""

from __future__ import annotations

import logging
import threading
import time
from types import MappingProxyType

from conveyor.dsl.artifacts import ArtifactRef
from conveyor.dsl.pipeline import Pipeline, Step
from conveyor.engine.hooks import RunHooks
from conveyor.engine.planning import Plan, partition_label
from conveyor.engine.results import (
    DONE,
    FAILED,
    SKIPPED,
    SUCCEEDED,
    RunInfo,
    RunResult,
    StepResult,
)

log = logging.getLogger("conveyor.engine")


class RunState:
    """The results and outputs of one run so far; reports each change to the run hooks."""

    def __init__(
        self, pipeline: Pipeline, plan: Plan, info: RunInfo, hooks: RunHooks, started: float
    ) -> None:
        self.pipeline = pipeline
        self.plan = plan
        self.info = info
        self.hooks = hooks
        self.started = started
        self.partition = partition_label(pipeline, plan.params)
        self.results: dict[str, StepResult] = {}
        self.outputs: dict[str, dict[str, ArtifactRef]] = {}
        self._running: dict[str, int] = {}  # map -> its items running now (max_parallel)
        self._begun: set[str] = set()
        self._groups = {s.name: s.group for s in pipeline.steps if s.group is not None}
        self._lock = threading.Lock()

    def start(self) -> None:
        """Report the run as started (after planning, before the first step)."""
        self.hooks.run_started(run=self.info)

    def status(self, name: str) -> str | None:
        result = self.results.get(name)
        return result.status if result else None

    def ready(self, pending: dict[str, Step]) -> list[Step]:
        """Pending steps whose upstream steps all succeeded or were cached (or, for items a
        step collects while allowing failures, finished either way), within their map's
        `max_parallel`. A driver calls `begin` for each step it starts."""
        found = []
        starting: dict[str, int] = {}
        for step in pending.values():
            tolerant = step.tolerant
            if not all(
                self.status(u) in DONE or (u in tolerant and self.status(u) in (FAILED, SKIPPED))
                for u in step.upstream
            ):
                continue
            if step.group is not None and step.group[1] is not None:
                group, limit = step.group[0], step.group[1]
                if self._running.get(group, 0) + starting.get(group, 0) >= limit:
                    continue
                starting[group] = starting.get(group, 0) + 1
            found.append(step)
        return found

    def begin(self, step: Step) -> None:
        """A driver starts `step` (counted against its map's `max_parallel`)."""
        if step.group is not None:
            with self._lock:
                self._begun.add(step.name)
                self._running[step.group[0]] = self._running.get(step.group[0], 0) + 1

    def skip_blocked(self, pending: dict[str, Step]) -> None:
        """Settle (and remove from `pending`) every step downstream of a failed or skipped one."""
        changed = True
        while changed:
            changed = False
            for name, step in list(pending.items()):
                blocked = [
                    u for u in step.upstream
                    if self.status(u) in (FAILED, SKIPPED) and u not in step.tolerant
                ]  # fmt: skip
                if blocked:
                    del pending[name]
                    reason = f"upstream {blocked[0]} did not succeed"
                    self.finish(StepResult(name, step.kind, SKIPPED, reason))
                    changed = True

    def interrupt(self, names: list[str]) -> None:
        """Mark steps that never finished because the run was interrupted."""
        for name in names:
            if name not in self.results:
                kind = self.pipeline.step(name).kind
                self.finish(StepResult(name, kind, FAILED, "run interrupted"))

    def finish(self, result: StepResult) -> None:
        """Record a step's result and tell the hooks."""
        group = self._groups.get(result.name)
        with self._lock:
            if group is not None and result.name in self._begun:
                self._begun.discard(result.name)
                self._running[group[0]] -= 1
            self.results[result.name] = result
            if result.status in DONE:
                self.outputs[result.name] = result.artifacts
        level = logging.WARNING if result.status == FAILED else logging.INFO
        detail = f" ({result.reason})" if result.reason not in ("", result.status) else ""
        log.log(
            level, "step %s: %s%s in %.2fs", result.name, result.status, detail, result.duration
        )
        self.hooks.step_finished(run=self.info, result=result)

    def upstream(self) -> dict[str, dict[str, ArtifactRef]]:
        """The outputs of every finished step, by step name (a copy)."""
        with self._lock:
            return dict(self.outputs)

    def snapshot(self) -> dict[str, StepResult]:
        """The results so far (a copy)."""
        with self._lock:
            return dict(self.results)

    def complete(self) -> RunResult:
        """The run's result; reported to the hooks as finished."""
        ordered = {
            s.name: self.results[s.name] for s in self.pipeline.steps if s.name in self.results
        }
        failed = [r for r in ordered.values() if r.status not in DONE]
        status = SUCCEEDED if len(ordered) == len(self.pipeline.steps) and not failed else FAILED
        first_error = next((r.error for r in ordered.values() if r.status == FAILED), None)
        result = RunResult(
            run_id=self.info.run_id,
            pipeline=self.pipeline.name,
            status=status,
            params=self.plan.params,
            steps=MappingProxyType(ordered),
            duration=time.perf_counter() - self.started,
            outputs=self.pipeline.outputs,
            error=first_error,
            plan_seconds=self.plan.seconds,
        )
        self.hooks.run_finished(run=self.info, result=result)
        return result
