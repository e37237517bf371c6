"""The venv runner: one uv virtual environment per environment key, built once and reused.

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
from conveyor.errors import EnvironmentBuildError
from conveyor.runners.base import read_result, requirement_spec, step_variables, write_task_spec
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
from conveyor.runners.process import ProcessGroup, run_process
from conveyor.runners.runtime import runtime_bundle

log = logging.getLogger("conveyor.venv")
MARKER = "conveyor-env.json"


class VenvRunner:
    """Runs each step with `python -m conveyor._runtime.executor` in its environment's Python."""

    name = "venv"
    uses_bundles = False

    def __init__(self, settings: Settings, interpreter: str | None = None) -> None:
        self.settings = settings
        self.interpreter = interpreter or sys.executable
        self.locker = Locker(settings.lock_dir)
        self.processes = ProcessGroup()
        self._runtime: Path | None = None

    def environment_spec(self, component: ComponentSpec) -> EnvironmentSpec:
        return requirement_spec(component)

    def limitations(self, component: ComponentSpec) -> list[str]:
        notes = []
        if component.memory or component.cpu:
            notes.append("cpu/memory limits are not enforced by the venv runner (use docker)")
        return notes

    # ------------------------------------------------------------------------------ environments

    def prepare(
        self, needs: Mapping[EnvironmentSpec, Sequence[str]]
    ) -> dict[EnvironmentSpec, PreparedEnvironment]:
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
        from filelock import FileLock

        env_dir = self.settings.env_dir
        target = env_dir / key
        if (target / MARKER).is_file():
            (target / MARKER).touch()
            return target, False
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
        write_task_spec(task)
        python = Path(task.environment.location) / "bin" / "python"
        if not python.exists():
            raise EnvironmentBuildError(
                f"environment {task.environment.key} of step {task.step!r} disappeared from "
                f"{task.environment.location} (pruned while running?); run again to rebuild it"
            )
        path = f"{self.runtime()}:{task.project_root}"
        variables = step_variables(
            task.component,
            {
                "PYTHONPATH": path,
                "PATH": f"{python.parent}:/usr/local/bin:/usr/bin:/bin",
                "HOME": str(task.workdir),
                "PYTHONUNBUFFERED": "1",
            },
        )
        outcome = run_process(
            [str(python), "-s", "-m", "conveyor._runtime.executor", str(task.spec_path)],
            env=variables,
            cwd=task.project_root,
            timeout=task.component.timeout,
            log=task.log,
            group=self.processes,
        )
        return read_result(
            task, outcome.returncode, outcome.stderr_tail, timed_out=outcome.timed_out
        )

    def close(self) -> None:
        self.processes.kill_all()


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
