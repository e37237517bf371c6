"""The in-process runner: no isolation, the same serialization (so boundary bugs show here too)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from conveyor._runtime.executor import run_task, write_result
from conveyor._runtime.hashing import sha256_json
from conveyor.dsl.component import ComponentSpec
from conveyor.engine.environments import EnvironmentSpec, PreparedEnvironment
from conveyor.engine.tasks import Task
from conveyor.errors import StepFailed
from conveyor.runners.base import python_version, requirement_spec

log = logging.getLogger("conveyor.inprocess")


class InProcessRunner:
    """Runs the executor's `run_task` in the orchestrator process (tests, quick experiments)."""

    name = "inprocess"
    uses_bundles = False

    def environment_spec(self, component: ComponentSpec) -> EnvironmentSpec:
        return requirement_spec(component)

    def limitations(self, component: ComponentSpec) -> list[str]:
        notes = []
        if component.timeout:
            notes.append("timeout cannot be enforced in-process")
        if component.memory or component.cpu:
            notes.append("cpu/memory limits are not enforced in-process")
        if component.env:
            notes.append("env is not isolated in-process: the step sees the whole environment")
        return notes

    def prepare(
        self, needs: Mapping[EnvironmentSpec, Sequence[str]]
    ) -> dict[EnvironmentSpec, PreparedEnvironment]:
        # Nothing is built: the key hashes the requirement strings, not a lock, so planning
        # needs no package index.
        return {
            spec: PreparedEnvironment(
                key=sha256_json({"inprocess": python_version(), "req": list(spec.requirements)})[
                    :24
                ],
                spec=spec,
                location="inprocess",
                interpreter=python_version(),
            )
            for spec in needs
        }

    def run(self, task: Task) -> dict[str, Any]:
        for note in self.limitations(task.component):
            log.warning("step %s: %s", task.step, note)
        task.workdir.mkdir(parents=True, exist_ok=True)
        result, exc = run_task(task.spec)
        write_result(task.result_path, result)
        if exc is not None:
            error = result["error"]
            raise StepFailed(
                task.step,
                error["message"],
                error_type=error["type"],
                remote_traceback=error["traceback"],
            ) from exc
        return result

    def close(self) -> None:
        """Nothing to clean up."""
