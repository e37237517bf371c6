"""The local engine: runs a planned DAG with a bounded thread pool, the cache and retries.

Independent steps run concurrently (up to `max_parallel`). A step whose cache key has an entry is
skipped and reuses its outputs. A failing step is retried as its component says, then fails the
run; steps downstream of it are skipped, independent branches still finish.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from conveyor._hashing import to_jsonable
from conveyor.artifacts import ArtifactRef, ArtifactStore, Codec
from conveyor.cache import CacheIndex
from conveyor.dag import Pipeline, Step
from conveyor.errors import ConveyorError, HostStepError, StepFailed
from conveyor.fingerprint import Fingerprinter
from conveyor.hooks import HookChain, RunHooks
from conveyor.host import HostContext, call_user_host_step
from conveyor.planning import (
    CachePolicy,
    HostImplementations,
    Plan,
    cache_parts,
    input_values,
    make_plan,
)
from conveyor.results import (
    CACHED,
    DONE,
    FAILED,
    SKIPPED,
    SUCCEEDED,
    RunInfo,
    RunResult,
    StepResult,
)
from conveyor.runners.base import Runner, Task
from conveyor.settings import Settings

log = logging.getLogger("conveyor.engine")

RETRY_BASE_DELAY = float(os.environ.get("CONVEYOR_RETRY_DELAY", "1.0"))


def new_run_id() -> str:
    """Sortable, unique: UTC time plus random suffix."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


class LocalEngine:
    """conveyor's own executor of pipeline DAGs."""

    name = "local"

    def __init__(
        self,
        settings: Settings,
        runner: Runner,
        *,
        hooks: RunHooks | None = None,
        host_impls: HostImplementations | None = None,
        policy: CachePolicy | None = None,
        max_parallel: int | None = None,
        tags: tuple[str, ...] = (),
    ) -> None:
        self.settings = settings
        self.runner = runner
        self.hooks = hooks or HookChain()
        self.host_impls = dict(host_impls or {})
        self.policy = policy or CachePolicy()
        self.max_parallel = max(1, max_parallel or os.cpu_count() or 2)
        self.tags = tags
        self.store = ArtifactStore(settings.artifact_dir)
        self.index = CacheIndex(self.store)
        self.fingerprinter = Fingerprinter(settings.project_root)

    def plan(self, pipeline: Pipeline, params: Mapping[str, Any]) -> Plan:
        """Bind parameters, build environments, check host steps, predict the cache."""
        return make_plan(
            pipeline,
            params,
            self.runner,
            self.store,
            self.fingerprinter,
            policy=self.policy,
            host_impls=self.host_impls,
        )

    def run(
        self, pipeline: Pipeline, params: Mapping[str, Any], *, plan: Plan | None = None
    ) -> RunResult:
        """Plan (unless given a plan), then run every step."""
        started = time.perf_counter()
        plan = plan or self.plan(pipeline, params)
        info = RunInfo(
            run_id=new_run_id(),
            pipeline=pipeline.name,
            params=plan.params,
            partition=plan.partition,
            partition_dates=tuple(pipeline.calendar.dates(*plan.partition))
            if plan.partition
            else (),
            engine=self.name,
            runner=self.runner.name,
            project_root=str(self.settings.project_root),
            started_at=datetime.now(UTC),
            tags=self.tags,
        )
        return _Run(self, pipeline, plan, info, started).execute()


class _Run:
    """The state of one run while it executes."""

    def __init__(
        self, engine: LocalEngine, pipeline: Pipeline, plan: Plan, info: RunInfo, started: float
    ) -> None:
        self.engine = engine
        self.pipeline = pipeline
        self.plan = plan
        self.info = info
        self.started = started
        self.run_dir = engine.settings.run_dir / info.run_id
        self.results: dict[str, StepResult] = {}
        self.outputs: dict[str, dict[str, ArtifactRef]] = {}
        self._lock = threading.Lock()

    # -------------------------------------------------------------------------- scheduling

    def execute(self) -> RunResult:
        engine = self.engine
        engine.hooks.run_started(self.info)
        pending = {s.name: s for s in self.pipeline.steps}
        running: dict[Future[StepResult], str] = {}
        pool = ThreadPoolExecutor(engine.max_parallel, thread_name_prefix="conveyor-step")
        try:
            while pending or running:
                self._skip_blocked(pending)
                for name, step in list(pending.items()):
                    if len(running) >= engine.max_parallel:
                        break
                    if all(self._status(u) in DONE for u in step.upstream):
                        del pending[name]
                        running[pool.submit(self._execute_step, step)] = name
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    name = running.pop(future)
                    self._finish(future.result())
        except BaseException:
            engine.runner.close()
            pool.shutdown(wait=False, cancel_futures=True)
            for name in list(pending) + list(running.values()):
                if name not in self.results:
                    self._finish(StepResult(name, self._kind(name), FAILED, "run interrupted"))
            self._complete()
            raise
        pool.shutdown(wait=True)
        return self._complete()

    def _kind(self, name: str) -> str:
        return self.pipeline.step(name).kind

    def _status(self, name: str) -> str | None:
        result = self.results.get(name)
        return result.status if result else None

    def _skip_blocked(self, pending: dict[str, Step]) -> None:
        changed = True
        while changed:
            changed = False
            for name, step in list(pending.items()):
                blocked = [u for u in step.upstream if self._status(u) in (FAILED, SKIPPED)]
                if blocked:
                    del pending[name]
                    self._finish(
                        StepResult(
                            name, step.kind, SKIPPED, f"upstream {blocked[0]} did not succeed"
                        )
                    )
                    changed = True

    def _finish(self, result: StepResult) -> None:
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

    def _complete(self) -> RunResult:
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

    def _execute_step(self, step: Step) -> StepResult:
        started = time.perf_counter()
        started_at = datetime.now(UTC)
        try:
            if step.component is not None:
                result = self._component_step(step)
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

    def _component_step(self, step: Step) -> StepResult:
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
                engine.index.remember(self.pipeline.name, step.name, parts)
                return StepResult(
                    step.name, "component", CACHED, "cached", artifacts=entry.outputs,
                    metrics=entry.metrics, **base,
                )  # fmt: skip
            reason = explain_miss_for(engine.index, self.pipeline.name, step.name, parts)
        engine.index.remember(self.pipeline.name, step.name, parts)

        attempts = component.retries + 1
        for attempt in range(1, attempts + 1):
            workdir = self.run_dir / step.name / f"attempt-{attempt}"
            task = Task(
                step=step.name,
                component=component,
                spec=self._task_spec(step, workdir, values, refs),
                workdir=workdir,
                environment=env,
                project_root=engine.settings.project_root,
                log=_StepLog(step.name, workdir / "log.txt"),
            )
            engine.hooks.step_started(self.info, step.name, attempt, reason)
            log.info("step %s: running (%s)%s", step.name, reason,
                     f", attempt {attempt}/{attempts}" if attempt > 1 else "")  # fmt: skip
            try:
                result = engine.runner.run(task)
            except StepFailed as exc:
                task.log.close()
                if attempt == attempts:
                    return StepResult(
                        step.name, "component", FAILED, reason, attempts=attempt,
                        error=str(exc), log_path=str(task.log.path), **base,
                    )  # fmt: skip
                delay = RETRY_BASE_DELAY * 2 ** (attempt - 1)
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
            "protocol": 1,
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


def explain_miss_for(index: CacheIndex, pipeline: str, step: str, parts: Any) -> str:
    from conveyor.cache import explain_miss

    return explain_miss(index.latest(pipeline, step), parts)


class _StepLog:
    """Receives a step's output lines: to its log file and to the `conveyor.step.NAME` logger."""

    def __init__(self, step: str, path: Path) -> None:
        self.path = path
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

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
