"""Run hooks: how engines report runs and steps without depending on who listens.

The database layer records lineage through these; a run with no hooks still works. Every
argument is keyword-only and every method takes `**extra`, so conveyor can pass more later
without breaking a hook written today.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from conveyor.engine.results import RunInfo, RunResult, StepResult

log = logging.getLogger("conveyor")


class RunHooks:
    """Callbacks an engine makes; override what you need. Exceptions are logged, not raised,
    except from the `run_started` of a hook that sets `required = True`: the run then fails
    before its first step (the recorder: no data without a record of the run)."""

    required = False

    def run_started(self, *, run: RunInfo, **extra: Any) -> None:
        """Before the first step runs (after planning)."""

    def step_started(
        self, *, run: RunInfo, step: str, attempt: int, reason: str, **extra: Any
    ) -> None:
        """Before an attempt of a step; `reason` says why it runs ("no previous run", ...)."""

    def attempt_failed(
        self, *, run: RunInfo, step: str, attempt: int, error: str, **extra: Any
    ) -> None:
        """After an attempt failed and the step will be tried again."""

    def step_finished(self, *, run: RunInfo, result: StepResult, **extra: Any) -> None:
        """After a step succeeded, was cached, failed or was skipped."""

    def run_finished(self, *, run: RunInfo, result: RunResult, **extra: Any) -> None:
        """After the last step."""


class HookChain(RunHooks):
    """Calls several hooks in order; one failing hook never fails the run."""

    def __init__(self, hooks: Sequence[RunHooks] = ()) -> None:
        self.hooks = list(hooks)

    def _each(self, method: str, *, only_optional: bool = False, **arguments: Any) -> None:
        for hook in self.hooks:
            if only_optional and hook.required:
                continue
            try:
                getattr(hook, method)(**arguments)
            except Exception:
                log.exception("run hook %s.%s failed", type(hook).__name__, method)

    def run_started(self, *, run: RunInfo, **extra: Any) -> None:
        for hook in self.hooks:
            if hook.required:  # may raise: the run must not start unrecorded
                hook.run_started(run=run, **extra)
        self._each("run_started", run=run, only_optional=True, **extra)

    def step_started(
        self, *, run: RunInfo, step: str, attempt: int, reason: str, **extra: Any
    ) -> None:
        self._each("step_started", run=run, step=step, attempt=attempt, reason=reason, **extra)

    def attempt_failed(
        self, *, run: RunInfo, step: str, attempt: int, error: str, **extra: Any
    ) -> None:
        self._each("attempt_failed", run=run, step=step, attempt=attempt, error=error, **extra)

    def step_finished(self, *, run: RunInfo, result: StepResult, **extra: Any) -> None:
        self._each("step_finished", run=run, result=result, **extra)

    def run_finished(self, *, run: RunInfo, result: RunResult, **extra: Any) -> None:
        self._each("run_finished", run=run, result=result, **extra)
