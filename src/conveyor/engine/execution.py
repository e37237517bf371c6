"""Executing a run's steps: the cache, the runner, retries, host steps, bookkeeping.

`RunExecution` holds one run's state. The local engine drives it with a thread pool; the Prefect
engine drives it with one Prefect task per step. Either way each step goes through the same code.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from conveyor._runtime.hashing import to_jsonable
from conveyor.dsl.artifacts import ArtifactRef, Codec
from conveyor.dsl.host import HostContext, call_user_host_step
from conveyor.dsl.pipeline import Pipeline, Step
from conveyor.engine.cache import explain_miss
from conveyor.engine.planning import Plan, cache_parts, input_values, partition_label
from conveyor.engine.results import (
    CACHED,
    DONE,
    FAILED,
    SKIPPED,
    SUCCEEDED,
    RunInfo,
    RunResult,
    StepResult,
)
from conveyor.engine.tasks import Task
from conveyor.errors import ConveyorError, HostStepError, StepFailed
from conveyor.version import EXECUTOR_PROTOCOL

if TYPE_CHECKING:
    from conveyor.engine.core import Engine

log = logging.getLogger("conveyor.engine")


class RunExecution:
    """The state of one run while it executes, and how each step executes.

    Engines decide the order and concurrency (threads locally, tasks under Prefect); this class
    runs one step at a time through the cache, the runner or a host implementation, and keeps
    the results.
    """

    def __init__(
        self, engine: Engine, pipeline: Pipeline, plan: Plan, info: RunInfo, started: float
    ) -> None:
        self.engine = engine
        self.pipeline = pipeline
        self.plan = plan
        self.info = info
        self.started = started
        self.run_dir = engine.settings.run_dir / info.run_id
        self.partition = partition_label(pipeline, plan.params)
        self.results: dict[str, StepResult] = {}
        self.outputs: dict[str, dict[str, ArtifactRef]] = {}
        self._lock = threading.Lock()

    # -------------------------------------------------------------------------- bookkeeping

    def start(self) -> None:
        """Report the run as started (after planning, before the first step)."""
        self.engine.hooks.run_started(self.info)

    def ready(self, pending: dict[str, Step]) -> list[Step]:
        """Pending steps whose upstream steps all succeeded or were cached."""
        return [s for s in pending.values() if all(self.status(u) in DONE for u in s.upstream)]

    def interrupt(self, names: list[str]) -> None:
        """Mark steps that never finished because the run was interrupted."""
        for name in names:
            if name not in self.results:
                self.finish(StepResult(name, self._kind(name), FAILED, "run interrupted"))

    def _kind(self, name: str) -> str:
        return self.pipeline.step(name).kind

    def status(self, name: str) -> str | None:
        result = self.results.get(name)
        return result.status if result else None

    def skip_blocked(self, pending: dict[str, Step]) -> None:
        changed = True
        while changed:
            changed = False
            for name, step in list(pending.items()):
                blocked = [u for u in step.upstream if self.status(u) in (FAILED, SKIPPED)]
                if blocked:
                    del pending[name]
                    self.finish(
                        StepResult(
                            name, step.kind, SKIPPED, f"upstream {blocked[0]} did not succeed"
                        )
                    )
                    changed = True

    def finish(self, result: StepResult) -> None:
        with self._lock:
            self.results[result.name] = result
            if result.status in DONE:
                self.outputs[result.name] = result.artifacts
        level = logging.WARNING if result.status == FAILED else logging.INFO
        detail = f" ({result.reason})" if result.reason else ""
        log.log(
            level, "step %s: %s%s in %.2fs", result.name, result.status, detail, result.duration
        )
        self.engine.hooks.step_finished(self.info, result)

    def complete(self) -> RunResult:
        ordered = {
            s.name: self.results[s.name] for s in self.pipeline.steps if s.name in self.results
        }
        failed = [r for r in ordered.values() if r.status != SUCCEEDED and r.status not in DONE]
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
        self.engine.hooks.run_finished(self.info, result)
        return result

    # -------------------------------------------------------------------------- one step

    def execute_step(
        self, step: Step, attempt: int | None = None, log_sink: Callable[[str], None] | None = None
    ) -> StepResult:
        """Run one step: every attempt its component allows, or only `attempt` (Prefect retries)."""
        started = time.perf_counter()
        started_at = datetime.now(UTC)
        try:
            if step.component is not None:
                result = self._component_step(step, attempt, log_sink)
            else:
                result = self._host_step(step)
        except ConveyorError as exc:
            result = StepResult(step.name, step.kind, FAILED, "failed", error=str(exc))
        except Exception as exc:  # a host step implementation or a bug: never lose the message
            log.debug("step %s raised", step.name, exc_info=True)
            result = StepResult(
                step.name, step.kind, FAILED, "failed", error=f"{type(exc).__name__}: {exc}"
            )
        result.duration = time.perf_counter() - started
        result.started_at = started_at
        result.store = self.engine.store
        result.returns = step.spec.returns
        return result

    def _upstream(self) -> dict[str, dict[str, ArtifactRef]]:
        with self._lock:
            return dict(self.outputs)

    def _component_step(
        self, step: Step, only_attempt: int | None, log_sink: Callable[[str], None] | None
    ) -> StepResult:
        engine = self.engine
        component = step.component.spec  # type: ignore[union-attr]
        step_plan = self.plan.steps[step.name]
        env = step_plan.environment
        assert component is not None and env is not None
        upstream = self._upstream()
        parts = cache_parts(step, step_plan.code or "", env.key, self.plan.params, upstream)
        key = parts.key
        values, refs = input_values(step, self.plan.params, upstream)
        reason = engine.policy.bypass_reason(step)
        base = {
            "environment": env.key,
            "cache_key": key,
            "inputs": {**to_jsonable(values), **{k: r.sha256 for k, r in refs.items()}},
        }
        if reason is None:
            entry = engine.index.lookup(key)
            if entry is not None:
                engine.index.remember(self.pipeline.name, step.name, parts, self.partition)
                return StepResult(
                    step.name, "component", CACHED, "cached", artifacts=entry.outputs,
                    metrics=entry.metrics, **base,
                )  # fmt: skip
            reason = explain_miss(
                engine.index.latest(self.pipeline.name, step.name, self.partition), parts
            )
        engine.index.remember(self.pipeline.name, step.name, parts, self.partition)

        attempts = component.retries + 1
        tries = [only_attempt] if only_attempt else range(1, attempts + 1)
        for attempt in tries:
            workdir = self.run_dir / step.name / f"attempt-{attempt}"
            task = Task(
                step=step.name,
                component=component,
                spec=self._task_spec(step, workdir, values, refs),
                workdir=workdir,
                environment=env,
                project_root=engine.settings.project_root,
                log=StepLog(step.name, workdir / "log.txt", log_sink),
            )
            engine.hooks.step_started(self.info, step.name, attempt, reason)
            log.info("step %s: running (%s)%s", step.name, reason,
                     f", attempt {attempt}/{attempts}" if attempt > 1 else "")  # fmt: skip
            try:
                result = engine.runner.run(task)
            except StepFailed as exc:
                task.log.close()
                if attempt >= attempts or only_attempt:
                    return StepResult(
                        step.name, "component", FAILED, reason, attempts=attempt,
                        error=str(exc), log_path=str(task.log.path), **base,
                    )  # fmt: skip
                delay = engine.retry_delay * 2 ** (attempt - 1)
                log.warning("step %s: attempt %d failed (%s); retrying in %.0fs",
                            step.name, attempt, exc.detail.splitlines()[0], delay)  # fmt: skip
                time.sleep(delay)
                continue
            task.log.close()
            artifacts = self._ingest(workdir, result)
            metrics = self._metrics(step, artifacts)
            engine.index.record(key, artifacts, metrics)
            return StepResult(
                step.name, "component", SUCCEEDED, reason, attempts=attempt, artifacts=artifacts,
                metrics=metrics, timings=result.get("timings", {}), log_path=str(task.log.path),
                **base,
            )  # fmt: skip
        raise AssertionError("unreachable")

    def _task_spec(
        self, step: Step, workdir: Path, values: dict[str, Any], refs: dict[str, ArtifactRef]
    ) -> dict[str, Any]:
        component = step.component.spec  # type: ignore[union-attr]
        assert component is not None
        store = self.engine.store
        parameters = {}
        for name, value in values.items():
            entry: dict[str, Any] = {"value": to_jsonable(value)}
            json_type = component.input(name).codec.json_type
            if json_type:
                entry["type"] = json_type
            parameters[name] = entry
        return {
            "protocol": EXECUTOR_PROTOCOL,
            "step": step.name,
            "module": component.module,
            "qualname": component.qualname,
            "packages": list(component.packages),
            "inputs": {
                name: {
                    "path": str(store.path_for(ref.sha256)),
                    "sha256": ref.sha256,
                    **ref.codec.to_dict(),
                }
                for name, ref in refs.items()
            },
            "parameters": parameters,
            "outputs": {
                o.name: {"path": str(workdir / "out" / o.name), **o.codec.to_dict()}
                for o in component.outputs
            },
            "returns": component.returns,
            "result": str(workdir / "result.json"),
        }

    def _ingest(self, workdir: Path, result: dict[str, Any]) -> dict[str, ArtifactRef]:
        artifacts = {}
        for name, data in result.get("outputs", {}).items():
            ref = ArtifactRef.from_dict(data)
            self.engine.store.ingest(workdir / "out" / name, ref)
            artifacts[name] = ref
        return artifacts

    def _metrics(self, step: Step, artifacts: dict[str, ArtifactRef]) -> dict[str, float] | None:
        metrics: dict[str, float] = {}
        for output in step.spec.outputs:
            if output.codec == Codec("json", "metrics") and output.name in artifacts:
                metrics.update(self.engine.store.load(artifacts[output.name]))
        return metrics or None

    def _host_step(self, step: Step) -> StepResult:
        engine = self.engine
        host = step.host
        assert host is not None
        values, refs = input_values(step, self.plan.params, self._upstream())
        kwargs = dict(values)
        for name, ref in refs.items():
            kwargs[name] = ref if name in host.spec.by_ref else engine.store.load(ref)
        context = HostContext(
            run=self.info,
            step=step.name,
            params=self.plan.params,
            partition=self.plan.partition,
            store=engine.store,
            project_root=engine.settings.project_root,
            log=logging.getLogger(f"conveyor.step.{step.name}"),
            upstream={n: b.step for n, b in step.bindings if b.kind == "output" and b.step},
            results=self._snapshot(),
            environments={
                n: p.environment for n, p in self.plan.steps.items() if p.environment is not None
            },
            code={n: p.code for n, p in self.plan.steps.items() if p.code},
            pinned=self.plan.models.get(step.name),
        )
        engine.hooks.step_started(self.info, step.name, 1, "host steps always run")
        if host.fn is not None:
            value = call_user_host_step(host, context, kwargs)
        else:
            impl = engine.host_impls.get(host.spec.kind)
            if impl is None:
                raise HostStepError(f"no implementation for host step {host.spec.kind!r}")
            value = impl(context, **kwargs)
        artifacts: dict[str, ArtifactRef] = {}
        if host.spec.outputs:
            output = host.spec.outputs[0]
            if host.spec.output_is_ref:
                if not isinstance(value, ArtifactRef):
                    raise HostStepError(f"host step {step.name!r} must return an ArtifactRef")
                artifacts["output"] = value
            else:
                artifacts["output"] = engine.store.put(value, output.codec)
        return StepResult(
            step.name, "host", SUCCEEDED, "host steps always run", attempts=1,
            artifacts=artifacts, environment="host",
            inputs={**to_jsonable(values), **{k: r.sha256 for k, r in refs.items()}},
        )  # fmt: skip

    def _snapshot(self) -> dict[str, StepResult]:
        with self._lock:
            return dict(self.results)


class StepLog:
    """Receives a step's output lines: to its log file and to the `conveyor.step.NAME` logger."""

    def __init__(self, step: str, path: Path, sink: Callable[[str], None] | None = None) -> None:
        self.path = path
        self.sink = sink
        self.logger = logging.getLogger(f"conveyor.step.{step}")
        self._lock = threading.Lock()
        self._file: Any = None

    def __call__(self, line: str) -> None:
        with self._lock:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("a")
            self._file.write(line + "\n")
        self.logger.info(line)
        if self.sink is not None:
            self.sink(line)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
