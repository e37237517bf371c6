"""Run hooks: how engines report runs and steps without depending on who listens.

The database layer records lineage through these; a run with no hooks still works.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from conveyor.engine.results import RunInfo, RunResult, StepResult

log = logging.getLogger("conveyor")


class RunHooks:
    """Callbacks an engine makes; override what you need. Exceptions are logged, not raised."""

    def run_started(self, run: RunInfo) -> None:
        """Before the first step runs (after planning)."""

    def step_started(self, run: RunInfo, step: str, attempt: int, reason: str) -> None:
        """Before an attempt of a step."""

    def step_finished(self, run: RunInfo, result: StepResult) -> None:
        """After a step succeeded, was cached, failed or was skipped."""

    def run_finished(self, run: RunInfo, result: RunResult) -> None:
        """After the last step."""


class HookChain(RunHooks):
    """Calls several hooks in order; one failing hook never fails the run."""

    def __init__(self, hooks: Sequence[RunHooks] = ()) -> None:
        self.hooks = list(hooks)

    def _each(self, method: str, *args: object) -> None:
        for hook in self.hooks:
            try:
                getattr(hook, method)(*args)
            except Exception:
                log.exception("run hook %s.%s failed", type(hook).__name__, method)

    def run_started(self, run: RunInfo) -> None:
        self._each("run_started", run)

    def step_started(self, run: RunInfo, step: str, attempt: int, reason: str) -> None:
        self._each("step_started", run, step, attempt, reason)

    def step_finished(self, run: RunInfo, result: StepResult) -> None:
        self._each("step_finished", run, result)

    def run_finished(self, run: RunInfo, result: RunResult) -> None:
        self._each("run_finished", run, result)
