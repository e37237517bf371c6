"""How one step executes: the cache, the runner and retries for components; host steps in-process.

A StepRunner belongs to one run. It reads the run's state (upstream outputs, the plan) and the
engine's services, never the engine itself. Retries: every attempt the component allows, waiting
as the RetryPolicy says, or exactly one attempt when a driver owns retries (Prefect).
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from conveyor._runtime.hashing import to_jsonable
from conveyor.dsl.artifacts import ArtifactRef, Codec
from conveyor.dsl.host import HostContext, call_user_host_step
from conveyor.dsl.pipeline import Step
from conveyor.engine.cache import HIT_REASON, CacheKeyParts, explain_miss
from conveyor.engine.files import publish as publish_path
from conveyor.engine.planning import cache_parts, file_inputs, input_values
from conveyor.engine.progress import waiting
from conveyor.engine.results import CACHED, FAILED, SUCCEEDED, StepResult
from conveyor.engine.run_state import RunState
from conveyor.engine.services import EngineServices
from conveyor.engine.store import ArtifactStore
from conveyor.engine.tasks import Task
from conveyor.errors import ConveyorError, HostStepError, HostStepFailed, StepFailed
from conveyor.version import EXECUTOR_PROTOCOL

log = logging.getLogger("conveyor.engine")


class StepRunner:
    """Runs the steps of one run, one call per step (drivers may call it from several threads)."""

    def __init__(self, services: EngineServices, state: RunState) -> None:
        self.services = services
        self.state = state
        self.run_dir = services.settings.run_dir / state.info.run_id
        # steps begun and not yet recorded as finished: their cache-key parts
        self._unfinished: dict[str, CacheKeyParts] = {}

    def execute(
        self, step: Step, attempt: int | None = None, log_sink: Callable[[str], None] | None = None
    ) -> StepResult:
        """Run one step: every attempt its component allows, or only `attempt` (Prefect retries)."""
        started = time.perf_counter()
        started_at = datetime.now(UTC)
        try:
            with waiting(f"step {step.name}") as detail:
                sink = _both(log_sink, detail)
                if step.component is not None:
                    result = self._component_step(step, attempt, sink)
                else:
                    result = self._host_step(step)
        except ConveyorError as exc:
            self._failed_outside_attempts(step)
            result = StepResult(step.name, step.kind, FAILED, "failed", error=str(exc))
        except Exception as exc:  # a bug in conveyor itself: never lose the message
            log.debug("step %s raised", step.name, exc_info=True)
            self._failed_outside_attempts(step)
            error = f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc().rstrip()}"
            result = StepResult(step.name, step.kind, FAILED, "failed", error=error)
        self._unfinished.pop(step.name, None)
        result.duration = time.perf_counter() - started
        result.started_at = started_at
        result.store = self.services.store
        result.returns = step.spec.returns
        return result

    def _failed_outside_attempts(self, step: Step) -> None:
        """An error of conveyor's own after the step began (an output it could not store, say):
        the step did finish, and failed, so its next run must not say it never finished."""
        parts = self._unfinished.pop(step.name, None)
        if parts is not None:
            self.services.index.remember(
                self.state.pipeline.name, step.name, parts, self.state.partition, "failed"
            )

    # ------------------------------------------------------------------------------ components

    def _component_step(
        self, step: Step, only_attempt: int | None, log_sink: Callable[[str], None] | None
    ) -> StepResult:
        services, state = self.services, self.state
        assert step.component is not None and step.component.spec is not None
        component = step.component.spec
        step_plan = state.plan.steps[step.name]
        env = step_plan.environment
        assert env is not None
        upstream = state.upstream()
        parts = cache_parts(
            step, step_plan.code or "", env.key, state.plan.params, upstream, services.files,
            step_plan.code_parts,
        )  # fmt: skip
        key = parts.key
        values, refs = input_values(step, state.plan.params, upstream)
        paths = file_inputs(step, values, services.files)
        reason = services.policy.bypass_reason(step)
        without = sorted(u for u in step.tolerant if u not in upstream)
        base: dict[str, Any] = {
            "environment": env.key,
            "cache_key": key,
            "inputs": {
                **to_jsonable(values),
                **_shas(refs),
                **{k: f.ref.sha256 for k, f in paths.items()},
            },
        }
        pipeline = state.pipeline.name
        if reason is None:
            entry, problem = services.index.check(key)
            if entry is not None:
                log.debug(
                    "step %s: cache key %s found in %s; outputs %s", step.name, key[:16],
                    services.store.url, {k: r.sha256[:12] for k, r in entry.outputs.items()},
                )  # fmt: skip
                services.index.remember(pipeline, step.name, parts, state.partition)
                return StepResult(
                    step.name, "component", CACHED, HIT_REASON, artifacts=entry.outputs,
                    metrics=entry.metrics, **base,
                )  # fmt: skip
            reason = problem or explain_miss(
                services.index.latest(pipeline, step.name, state.partition), parts
            )
        services.index.remember(pipeline, step.name, parts, state.partition, "running")
        self._unfinished[step.name] = parts
        log.debug("step %s: cache key %s, environment %s", step.name, key[:16], env.key)

        if without:  # a collector allowed to run without the items that failed
            reason = f"{reason}; without failed item(s) {', '.join(without)}"
        # path arguments travel like values: their content, through the store
        refs = {**refs, **{n: publish_path(services.store, f) for n, f in paths.items()}}
        attempts = component.retries + 1
        tries = [only_attempt] if only_attempt else range(1, attempts + 1)
        for attempt in tries:
            workdir = self.run_dir / step.name / f"attempt-{attempt}"
            step_log = StepLog(step.name, workdir / "log.txt", log_sink)
            task = Task(
                step=step.name,
                component=component,
                spec=self._task_spec(step, workdir, values, refs, step_plan.bundle),
                workdir=workdir,
                environment=env,
                project_root=services.settings.project_root,
                log=step_log,
                code=step_plan.code_dir,
            )
            services.hooks.step_started(
                run=state.info, step=step.name, attempt=attempt, reason=reason
            )
            log.info("step %s: running (%s)%s", step.name, reason,
                     f", attempt {attempt}/{attempts}" if attempt > 1 else "")  # fmt: skip
            try:
                result = services.runner.run(task)
            except StepFailed as exc:
                step_log.keep(str(exc))  # the step's log file ends with why it failed
                step_log.close()
                if attempt < attempts:  # tried again, here or by the driver (Prefect's retries)
                    services.hooks.attempt_failed(
                        run=state.info, step=step.name, attempt=attempt, error=str(exc)
                    )
                if attempt >= attempts or only_attempt:
                    services.index.remember(pipeline, step.name, parts, state.partition, "failed")
                    return StepResult(
                        step.name, "component", FAILED, reason, attempts=attempt,
                        error=str(exc), log_path=str(step_log.path), **base,
                    )  # fmt: skip
                delay = services.retry.delay(attempt)
                log.warning("step %s: attempt %d failed (%s); retrying in %.0fs",
                            step.name, attempt, exc.detail.splitlines()[0], delay)  # fmt: skip
                time.sleep(delay)
                continue
            step_log.close()
            artifacts = self._ingest(workdir, result)
            metrics = self._metrics(step, artifacts)
            services.index.record(key, artifacts, metrics)
            services.index.remember(pipeline, step.name, parts, state.partition, "succeeded")
            return StepResult(
                step.name, "component", SUCCEEDED, reason, attempts=attempt, artifacts=artifacts,
                metrics=metrics, timings=result.get("timings", {}), log_path=str(step_log.path),
                **base,
            )  # fmt: skip
        raise AssertionError("unreachable: the last attempt returns")

    def _task_spec(
        self,
        step: Step,
        workdir: Path,
        values: dict[str, Any],
        refs: Mapping[str, ArtifactRef | list[ArtifactRef]],
        bundle: str | None = None,
    ) -> dict[str, Any]:
        assert step.component is not None and step.component.spec is not None
        component = step.component.spec
        store = self.services.store
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
                name: (
                    {"items": [_input(store, r) for r in ref]}
                    if isinstance(ref, list)
                    else _input(store, ref)
                )
                for name, ref in refs.items()
            },
            "parameters": parameters,
            "outputs": {
                o.name: {"path": str(workdir / "out" / o.name), **o.codec.to_dict()}
                for o in component.outputs
            },
            "returns": component.returns,
            "result": str(workdir / "result.json"),
            **({"bundle": bundle} if bundle else {}),
        }

    def _ingest(self, workdir: Path, result: dict[str, Any]) -> dict[str, ArtifactRef]:
        artifacts = {}
        for name, data in result.get("outputs", {}).items():
            ref = ArtifactRef.from_dict(data)
            self.services.store.ingest(workdir / "out" / name, ref)
            artifacts[name] = ref
        return artifacts

    def _metrics(self, step: Step, artifacts: dict[str, ArtifactRef]) -> dict[str, float] | None:
        metrics: dict[str, float] = {}
        for output in step.spec.outputs:
            if output.codec == Codec("json", "metrics") and output.name in artifacts:
                metrics.update(self.services.store.load(artifacts[output.name]))
        return metrics or None

    # ------------------------------------------------------------------------------ host steps

    def _host_step(self, step: Step) -> StepResult:
        services, state = self.services, self.state
        host = step.host
        assert host is not None
        values, refs = input_values(step, state.plan.params, state.upstream())
        kwargs = dict(values)
        for name, ref in refs.items():
            if isinstance(ref, list):
                by_ref = name in host.spec.by_ref
                kwargs[name] = [r if by_ref else services.store.load(r) for r in ref]
            else:
                kwargs[name] = ref if name in host.spec.by_ref else services.store.load(ref)
        plan = state.plan
        context = HostContext(
            run=state.info,
            step=step.name,
            params=plan.params,
            partition=plan.partition,
            store=services.store,
            project_root=services.settings.project_root,
            log=logging.getLogger(f"conveyor.step.{step.name}"),
            upstream={n: b.step for n, b in step.bindings if b.kind == "output" and b.step},
            results=state.snapshot(),
            environments={n: p.environment for n, p in plan.steps.items() if p.environment},
            code={n: p.code for n, p in plan.steps.items() if p.code},
            pinned=plan.models.get(step.name),
            registry=services.registry,
        )
        services.hooks.step_started(
            run=state.info, step=step.name, attempt=1, reason="host steps always run"
        )
        try:
            if host.fn is not None:
                value = call_user_host_step(host, context, kwargs)
            else:
                impl = services.host_impls.get(host.spec.kind)
                if impl is None:
                    raise HostStepError(f"no implementation for host step {host.spec.kind!r}")
                value = impl(context, **kwargs)
        except ConveyorError:
            raise
        except Exception as exc:  # the user's (or a sink's) own error: keep its traceback
            raise HostStepFailed(
                step.name,
                str(exc),
                error_type=type(exc).__name__,
                remote_traceback=_user_traceback(exc),
            ) from exc
        artifacts: dict[str, ArtifactRef] = {}
        if host.spec.outputs:
            output = host.spec.outputs[0]
            if host.spec.output_is_ref:
                if not isinstance(value, ArtifactRef):
                    raise HostStepError(f"host step {step.name!r} must return an ArtifactRef")
                artifacts["output"] = value
            else:
                artifacts["output"] = services.store.put(value, output.codec)
        return StepResult(
            step.name, "host", SUCCEEDED, "host steps always run", attempts=1,
            artifacts=artifacts, environment="host",
            inputs={**to_jsonable(values), **_shas(refs)},
        )  # fmt: skip


def _input(store: ArtifactStore, ref: ArtifactRef) -> dict[str, Any]:
    """One input as the task spec names it (a remote store's value is fetched first)."""
    return {"path": str(store.local_path(ref)), "sha256": ref.sha256, **ref.codec.to_dict()}


def _shas(refs: Mapping[str, ArtifactRef | list[ArtifactRef]]) -> dict[str, Any]:
    """What a step's record shows of its inputs: a hash, or a collected list's hashes."""
    return {k: [r.sha256 for r in v] if isinstance(v, list) else v.sha256 for k, v in refs.items()}


def _user_traceback(exc: BaseException) -> str:
    """The traceback of `exc` without conveyor's own frames above the user's function."""
    import conveyor.dsl.host

    ours = {__file__, conveyor.dsl.host.__file__}
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None and tb.tb_frame.f_code.co_filename in ours:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


class StepLog:
    """Receives a step's output lines: to its log file and to the `conveyor.step.NAME` logger."""

    def __init__(self, step: str, path: Path, sink: Callable[[str], None] | None = None) -> None:
        self.path = path
        self.sink = sink
        self.logger = logging.getLogger(f"conveyor.step.{step}")
        self._lock = threading.Lock()
        self._file: Any = None

    def __call__(self, line: str) -> None:
        self.keep(line)
        self.logger.info(line)
        if self.sink is not None:
            self.sink(line)

    def keep(self, text: str) -> None:
        """Write `text` to the log file only (the driver reports it in its own words)."""
        with self._lock:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("a")
            self._file.write(text.rstrip("\n") + "\n")

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def _both(
    first: Callable[[str], None] | None, second: Callable[[str], None]
) -> Callable[[str], None]:
    """A log sink that feeds the driver's sink (if any) and the wait's latest line."""
    if first is None:
        return second

    def sink(line: str) -> None:
        first(line)
        second(line)

    return sink
