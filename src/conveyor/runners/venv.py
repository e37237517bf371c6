"""The venv runner: one uv virtual environment per environment key, built once and reused.

Building environments (uv, which reaches the package index) happens at plan time, outside any
sandbox. Running a step happens inside one (see `runners/sandbox.py`): the step sees its
environment, its code bundle, its inputs and its own folder, and nothing of the orchestrator.
Where the sandbox cannot run, steps run as plain processes of the orchestrator's user in the
project, the plan and every run say which protections are off, and `isolation = "strict"` under
[tool.conveyor] refuses that.

Environments live under `CONVEYOR_ENV_DIR` (default `~/.cache/conveyor/envs/<key>`), shared by
every step, run, pipeline and project with the same lock. A build happens in a temporary folder
under a file lock and is renamed into place only when complete, so a failed install leaves
nothing behind and two steps needing one environment build it once.
"""

from __future__ import annotations

import json
import logging
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from conveyor.dsl.component import ComponentSpec
from conveyor.engine.environments import EnvironmentSpec, PreparedEnvironment, environment_key
from conveyor.engine.progress import waiting
from conveyor.engine.settings import Settings
from conveyor.engine.tasks import Task
from conveyor.errors import (
    ConveyorError,
    EnvironmentBuildError,
    StepFailed,
    StepKilled,
    StepTimeout,
)
from conveyor.runners.base import read_result, requirement_spec, step_variables, write_task_spec
from conveyor.runners.cgroups import step_groups
from conveyor.runners.containers import CODE, RUNTIME, WORK
from conveyor.runners.env_users import record_use
from conveyor.runners.locks import (
    IMPORT_CHECK,
    Locker,
    codec_imports,
    find_uv,
    import_check_error,
    installer_error,
    run_uv,
)
from conveyor.runners.process import KILL_GRACE_SECONDS, ProcessGroup, run_process
from conveyor.runners.runtime import runtime_bundle
from conveyor.runners.sandbox import (
    UNPROTECTED,
    bwrap_command,
    executor_command,
    memory_limited,
    sandbox_problem,
    step_mounts,
)
from conveyor.runners.warm import WarmSteps, cold_reason

log = logging.getLogger("conveyor.venv")
MARKER = "conveyor-env.json"
# how running out of a data-segment limit shows in a step's error or last output
OUT_OF_MEMORY = ("MemoryError", "Cannot allocate memory", "can't start new thread")


class VenvRunner:
    """Runs each step with `python -m conveyor._runtime.executor` in its environment's Python."""

    name = "venv"

    def __init__(self, settings: Settings, interpreter: str | None = None) -> None:
        self.settings = settings
        self.interpreter = interpreter or sys.executable
        self.locker = Locker(settings.lock_dir)
        self.processes = ProcessGroup()
        self._runtime: Path | None = None
        # why steps cannot be sandboxed here (None: they are); asked once per runner
        self.sandbox_problem = sandbox_problem()
        # a sandboxed step never sees the project: its code travels as a bundle
        self.uses_bundles = self.sandbox_problem is None
        # steps forked from a warm server of their environment (None: each starts an interpreter)
        self.warm = WarmSteps.create(settings) if self.sandbox_problem is None else None

    def environment_spec(self, component: ComponentSpec) -> EnvironmentSpec:
        return requirement_spec(component)

    def protections_off(self) -> str | None:
        """What steps of this runner are not protected from, or None when they are sandboxed."""
        if self.sandbox_problem is None:
            return None
        return f"venv steps run unsandboxed ({self.sandbox_problem}): " + "; ".join(UNPROTECTED)

    def check_isolation(self) -> None:
        """Refuse to run unsandboxed steps when the project asks for `isolation = "strict"`."""
        if self.sandbox_problem is not None and self.settings.isolation == "strict":
            raise ConveyorError(
                f'isolation = "strict" in {self.settings.project_root / "pyproject.toml"}, but '
                f"venv steps cannot be sandboxed here: {self.sandbox_problem}. Install "
                f"bubblewrap on Linux with user namespaces, use --runner docker, or remove the "
                f"setting to run them unprotected"
            )

    def limitations(self, component: ComponentSpec) -> list[str]:
        notes = []
        if self.sandbox_problem is not None:
            notes.append(f"not sandboxed: {self.sandbox_problem}")
        if component.cpu or component.memory:
            groups = step_groups(component.memory, component.cpu)  # can they be made here?
            if groups is not None:
                groups.remove()
            elif component.cpu:
                notes.append("cpu limit is not enforced: no writable cpu cgroup here (use docker)")
            if groups is None and component.memory and not memory_limited([], 1)[1]:
                notes.append("memory limit is not enforced: no writable memory cgroup, no prlimit")
        if self.warm is not None and (reason := cold_reason(component)) is not None:
            notes.append(f"starts a fresh interpreter ({reason})")
        return notes

    # ------------------------------------------------------------------------------ environments

    def prepare(
        self, needs: Mapping[EnvironmentSpec, Sequence[str]]
    ) -> dict[EnvironmentSpec, PreparedEnvironment]:
        self.check_isolation()  # at plan time: before any environment is built
        prepared = {}
        for spec, steps in needs.items():
            who = "step " + ", ".join(steps) if len(steps) == 1 else "steps " + ", ".join(steps)
            lock = self.locker.lock(spec, who=who)
            key = environment_key("venv", platform.python_version(), lock.sha256)
            started = time.perf_counter()
            path, built = self._ensure_built(key, spec, lock.path, lock.pins, who)
            record_use(path, self.settings)
            prepared[spec] = PreparedEnvironment(
                key=key,
                spec=spec,
                location=str(path),
                interpreter=platform.python_version(),
                lock_path=str(lock.path),
                pins=lock.pins,
                build_seconds=time.perf_counter() - started,
                built=built,
            )
        return prepared

    def _ensure_built(
        self, key: str, spec: EnvironmentSpec, lock_path: Path, pins: tuple[str, ...], who: str
    ) -> tuple[Path, bool]:
        env_dir = self.settings.env_dir
        target = env_dir / key
        if (target / MARKER).is_file():
            (target / MARKER).touch()
            return target, False
        from filelock import FileLock  # only a build pays for it: a warm run never locks

        env_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(str(env_dir / f".{key}.lock"), timeout=1800):
            if (target / MARKER).is_file():
                return target, False
            staging = env_dir / f".{key}.building"
            shutil.rmtree(staging, ignore_errors=True)
            try:
                self._build(staging, spec, lock_path, pins, who)
                if target.exists():  # a half-made folder from an older conveyor; replace it
                    shutil.rmtree(target)
                staging.rename(target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            log.info("built environment %s for %s (%s)", key, who, spec.describe())
        return target, True

    def _build(
        self, path: Path, spec: EnvironmentSpec, lock_path: Path, pins: tuple[str, ...], who: str
    ) -> None:
        uv = find_uv()
        steps = [
            [uv, "venv", "--quiet", "--relocatable", "--python", self.interpreter, str(path)],
        ]
        if pins:
            python = str(path / "bin" / "python")
            # steps cannot rely on writing .pyc files on first import (PYTHONDONTWRITEBYTECODE
            # is common in CI and images; a sandboxed environment is read-only), and compiling
            # pandas' sources on every step start costs seconds: compile once, here
            steps.append(
                [uv, "pip", "sync", "--compile-bytecode", "--python", python, str(lock_path)]
            )
        title = (
            f"building environment {path.name.strip('.').removesuffix('.building')[:12]} for {who}"
        )
        with waiting(f"{title} ({len(pins)} packages)") as detail:
            for command in steps:
                proc = run_uv(command, detail)
                if proc.returncode != 0:
                    raise installer_error(
                        "build the environment", spec.requirements, proc.stderr, who
                    )
        modules = codec_imports(pins)
        if modules:  # a lock can resolve and install yet fail on import: find out before any run
            python = str(path / "bin" / "python")
            proc = subprocess.run(
                [python, "-I", "-c", IMPORT_CHECK, *modules],
                capture_output=True, text=True, check=False, cwd=path,
            )  # fmt: skip
            if proc.returncode != 0:
                raise import_check_error(proc.stderr, pins, who, lock_path)
        metadata = {
            "kind": "venv",
            "requirements": list(spec.requirements),
            "python": platform.python_version(),
            "lock": str(lock_path),
            "pins": list(pins),
            "created": time.time(),
        }
        (path / MARKER).write_text(json.dumps(metadata, indent=1))

    # ------------------------------------------------------------------------------ running

    def runtime(self) -> Path:
        if self._runtime is None:
            self._runtime = runtime_bundle(self.settings.runtime_dir)
        return self._runtime

    def run(self, task: Task) -> dict[str, Any]:
        self.check_isolation()
        write_task_spec(task)
        python = Path(task.environment.location) / "bin" / "python"
        if not python.exists():
            raise EnvironmentBuildError(
                f"environment {task.environment.key} of step {task.step!r} disappeared from "
                f"{task.environment.location} (pruned while running?); run again to rebuild it"
            )
        if self.sandbox_problem is None:
            return self._run_sandboxed(task, python)
        variables = step_variables(
            task.component,
            {
                "PYTHONPATH": f"{self.runtime()}:{task.project_root}",
                "PATH": f"{python.parent}:/usr/local/bin:/usr/bin:/bin",
                "HOME": str(task.workdir),
                "PYTHONUNBUFFERED": "1",
            },
        )
        command = [str(python), "-s", "-m", "conveyor._runtime.executor", str(task.spec_path)]
        return self._execute(task, command, variables, cwd=task.project_root)

    def _run_sandboxed(self, task: Task, python: Path) -> dict[str, Any]:
        import shutil

        bwrap = shutil.which("bwrap")
        assert bwrap is not None  # sandbox_problem found it
        (task.workdir / "out").mkdir(parents=True, exist_ok=True)
        mounts = step_mounts(task, self.runtime())
        environment = Path(task.environment.location)
        step_command = executor_command(str(python), task, mounts)
        command = bwrap_command(bwrap, task, environment, mounts, step_command)
        variables = step_variables(
            task.component,
            {
                "PYTHONPATH": f"{RUNTIME}:{CODE}",
                "PATH": f"{python.parent}:/usr/local/bin:/usr/bin:/bin",
                "HOME": WORK,
                "TMPDIR": "/tmp",
                "PYTHONUNBUFFERED": "1",
                "PYTHONDONTWRITEBYTECODE": "1",  # the code is mounted read-only
            },
        )
        try:
            if self.warm is not None:
                outcome = self.warm.run(
                    task, bwrap, mounts, step_command, variables, self.runtime()
                )
                if outcome is not None:
                    return _result(task, *outcome)
            # grace 0: killing bwrap ends its PID namespace, every process of the step at once
            return self._execute(task, command, variables, cwd=task.workdir, grace=0)
        except StepFailed as exc:
            raise mounts.shown_on_host(exc) from None

    def _execute(
        self,
        task: Task,
        command: list[str],
        variables: dict[str, str],
        *,
        cwd: Path,
        grace: float = KILL_GRACE_SECONDS,
    ) -> dict[str, Any]:
        """Run the step's command under its limits (cgroups where writable, else RLIMIT_DATA
        for memory) and read its result."""
        component = task.component
        groups = step_groups(component.memory, component.cpu)
        if groups is not None:
            command = groups.enter(command)
        else:
            command, _ = memory_limited(command, component.memory)
        try:
            outcome = run_process(
                command,
                env=variables,
                cwd=cwd,
                timeout=component.timeout,
                log=task.log,
                group=self.processes,
                grace=grace,
            )
            oom = groups is not None and groups.oom_killed()
        finally:
            if groups is not None:
                groups.remove()
        if oom and not outcome.timed_out:
            return read_result(task, outcome.returncode, "", oom=True, limit=component.memory_text)
        return _result(task, outcome.returncode, outcome.stderr_tail, outcome.timed_out)

    def close(self) -> None:
        self.processes.kill_all()
        if self.warm is not None:
            self.warm.kill_all()


def _result(task: Task, returncode: int, stderr_tail: str, timed_out: bool) -> dict[str, Any]:
    """The step's result; a step that ran out of its memory limit is named as an OOM kill, like
    the docker runner's (past RLIMIT_DATA an allocation fails with MemoryError, a thread cannot
    start, or an interpreter that cannot raise either dies)."""
    try:
        return read_result(task, returncode, stderr_tail, timed_out=timed_out)
    except (StepKilled, StepTimeout):
        raise
    except StepFailed as exc:
        limit = task.component.memory_text
        text = f"{exc.error_type} {exc.detail} {stderr_tail}"
        if limit and any(sign in text for sign in OUT_OF_MEMORY):
            raise StepKilled(task.step, f"killed: out of memory (limit {limit})") from exc
        raise


def list_environments(env_dir: Path) -> list[dict[str, Any]]:
    """Metadata of every built environment under `env_dir`."""
    found = []
    for marker in sorted(env_dir.glob(f"*/{MARKER}")):
        try:
            data = json.loads(marker.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        data["key"] = marker.parent.name
        data["path"] = str(marker.parent)
        data["last_used"] = marker.stat().st_mtime
        found.append(data)
    return found
