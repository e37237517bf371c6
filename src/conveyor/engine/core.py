"""The engine: plans a pipeline run, then drives its steps (here with a bounded thread pool).

Independent steps run concurrently (up to `max_parallel`). A step whose cache key has an entry is
skipped and reuses its outputs. A failing step is retried as its component says, then fails the
run; steps downstream of it are skipped, independent branches still finish. The Prefect back end
drives the same `Execution` with one Prefect task per step (`conveyor.backends.prefect_flow`).
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from conveyor.dsl.pipeline import Pipeline
from conveyor.engine.bundles import Bundler
from conveyor.engine.cache import CacheIndex
from conveyor.engine.files import FileHasher
from conveyor.engine.fingerprint import Fingerprinter
from conveyor.engine.hooks import HookChain, RunHooks
from conveyor.engine.planning import CachePolicy, HostImplementations, Plan, make_plan
from conveyor.engine.progress import waiting
from conveyor.engine.results import RunInfo, RunResult, StepResult
from conveyor.engine.retry import RetryPolicy
from conveyor.engine.run_state import RunState
from conveyor.engine.services import EngineServices
from conveyor.engine.settings import Settings
from conveyor.engine.step_runner import StepRunner
from conveyor.engine.store import ArtifactStore
from conveyor.engine.tasks import Runner

log = logging.getLogger("conveyor.engine")


def new_run_id() -> str:
    """Sortable, unique: UTC time plus random suffix."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


@dataclass(frozen=True, slots=True)
class Execution:
    """A planned run ready to be driven: its state, and how each of its steps runs."""

    state: RunState
    steps: StepRunner
    services: EngineServices


class Engine:
    """Plans runs and executes them with its services (runner, cache, hooks, host steps)."""

    name = "local"

    def __init__(
        self,
        settings: Settings,
        runner: Runner,
        *,
        hooks: RunHooks | None = None,
        host_impls: HostImplementations | None = None,
        registry: Any = None,
        policy: CachePolicy | None = None,
        retry: RetryPolicy | None = None,
        max_parallel: int | None = None,
        tags: tuple[str, ...] = (),
    ) -> None:
        store = ArtifactStore(settings.artifact_store, cache_dir=settings.artifact_cache)
        self.services = EngineServices(
            settings=settings,
            runner=runner,
            hooks=hooks or HookChain(),
            host_impls=dict(host_impls or {}),
            policy=policy or CachePolicy(),
            retry=retry or RetryPolicy.from_environment(),
            store=store,
            index=CacheIndex(store),
            fingerprinter=Fingerprinter(settings.project_root),
            bundler=Bundler(settings.project_root),
            files=FileHasher(settings.project_root),
            registry=registry,
        )
        self.max_parallel = max(1, max_parallel or os.cpu_count() or 2)
        self.tags = tags

    @property
    def settings(self) -> Settings:
        return self.services.settings

    @property
    def runner(self) -> Runner:
        return self.services.runner

    def plan(self, pipeline: Pipeline, params: Mapping[str, Any]) -> Plan:
        """Bind parameters, build environments, check host steps, predict the cache."""
        services = self.services
        with waiting(f"planning {pipeline.name}: environments, code, cache"):
            return make_plan(
                pipeline,
                params,
                services.runner,
                services.store,
                services.fingerprinter,
                policy=services.policy,
                host_impls=services.host_impls,
                bundles=(services.bundler, services.settings.bundle_cache)
                if services.runner.uses_bundles
                else None,
                files=services.files,
            )

    def run(
        self, pipeline: Pipeline, params: Mapping[str, Any], *, plan: Plan | None = None
    ) -> RunResult:
        """Plan (unless given a plan), then run every step."""
        started = time.perf_counter()
        plan = plan or self.plan(pipeline, params)
        return drive_with_threads(
            self.execution(pipeline, plan, started=started), self.max_parallel
        )

    def execution(
        self,
        pipeline: Pipeline,
        plan: Plan,
        tags: tuple[str, ...] = (),
        *,
        started: float | None = None,
        engine: str | None = None,
        run_id: str | None = None,
    ) -> Execution:
        """A planned run for a driver: `engine` names who drives it in the run's record,
        `run_id` is the id it gave the run already (a Prefect flow run's name holds it)."""
        pipeline = plan.pipeline  # with its maps expanded into item steps
        info = RunInfo(
            run_id=run_id or new_run_id(),
            pipeline=pipeline.name,
            params=plan.params,
            partition=plan.partition,
            partition_dates=tuple(pipeline.calendar.dates(*plan.partition))
            if plan.partition
            else (),
            engine=engine or self.name,
            runner=self.runner.name,
            project_root=str(self.settings.project_root),
            started_at=datetime.now(UTC),
            tags=tuple(dict.fromkeys(self.tags + tags)),  # a backfill's tag once, not twice
        )
        state = RunState(pipeline, plan, info, self.services.hooks, started or time.perf_counter())
        return Execution(state, StepRunner(self.services, state), self.services)


def drive_with_threads(execution: Execution, max_parallel: int) -> RunResult:
    """Run every step of an execution, independent ones concurrently, at most `max_parallel`."""
    state = execution.state
    state.start()
    pending = {s.name: s for s in state.pipeline.steps}
    running: dict[Future[StepResult], str] = {}
    pool = ThreadPoolExecutor(max_parallel, thread_name_prefix="conveyor-step")
    try:
        while pending or running:
            state.skip_blocked(pending)
            for step in state.ready(pending):
                if len(running) >= max_parallel:
                    break
                del pending[step.name]
                state.begin(step)
                running[pool.submit(execution.steps.execute, step)] = step.name
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                running.pop(future)
                state.finish(future.result())
    except BaseException:
        execution.services.runner.close()
        pool.shutdown(wait=False, cancel_futures=True)
        state.interrupt(list(pending) + list(running.values()))
        state.complete()
        raise
    pool.shutdown(wait=True)
    return state.complete()
