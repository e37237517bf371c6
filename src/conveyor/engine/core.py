"""The local engine: runs a planned DAG with a bounded thread pool, the cache and retries.

Independent steps run concurrently (up to `max_parallel`). A step whose cache key has an entry is
skipped and reuses its outputs. A failing step is retried as its component says, then fails the
run; steps downstream of it are skipped, independent branches still finish.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from typing import Any

from conveyor.dsl.pipeline import Pipeline
from conveyor.engine.cache import CacheIndex
from conveyor.engine.execution import RunExecution
from conveyor.engine.fingerprint import Fingerprinter
from conveyor.engine.hooks import HookChain, RunHooks
from conveyor.engine.planning import CachePolicy, HostImplementations, Plan, make_plan
from conveyor.engine.results import RunInfo, RunResult, StepResult
from conveyor.engine.settings import Settings
from conveyor.engine.store import ArtifactStore
from conveyor.engine.tasks import Runner

log = logging.getLogger("conveyor.engine")

RETRY_BASE_DELAY = float(os.environ.get("CONVEYOR_RETRY_DELAY", "1.0"))


def new_run_id() -> str:
    """Sortable, unique: UTC time plus random suffix."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


class Engine:
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
        self.retry_delay = RETRY_BASE_DELAY
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
        execution = self.execution(pipeline, plan)
        execution.started = started
        return drive_with_threads(execution, self.max_parallel)

    def execution(self, pipeline: Pipeline, plan: Plan, tags: tuple[str, ...] = ()) -> RunExecution:
        """A RunExecution for a planned run (engines drive it)."""
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
            tags=self.tags + tags,
        )
        return RunExecution(self, pipeline, plan, info, time.perf_counter())


def drive_with_threads(execution: RunExecution, max_parallel: int) -> RunResult:
    """Run every step of an execution, independent ones concurrently, at most `max_parallel`."""
    execution.start()
    pending = {s.name: s for s in execution.pipeline.steps}
    running: dict[Future[StepResult], str] = {}
    pool = ThreadPoolExecutor(max_parallel, thread_name_prefix="conveyor-step")
    try:
        while pending or running:
            execution.skip_blocked(pending)
            for step in execution.ready(pending):
                if len(running) >= max_parallel:
                    break
                del pending[step.name]
                running[pool.submit(execution.execute_step, step)] = step.name
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                running.pop(future)
                execution.finish(future.result())
    except BaseException:
        execution.engine.runner.close()
        pool.shutdown(wait=False, cancel_futures=True)
        execution.interrupt(list(pending) + list(running.values()))
        execution.complete()
        raise
    pool.shutdown(wait=True)
    return execution.complete()
