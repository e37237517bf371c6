"""Warm steps for the venv runner: which steps may fork from a warm server, and running them.

A step is forked from its environment's warm server (`runners/zygote.py`) when warm steps are on
(the default; `CONVEYOR_WARM=off` or `[tool.conveyor] warm = false` turns them off), its
component allows it (`warm=True`, the default) and its sandbox would be the server's own: no
network, no declared `env` variables (they may change how packages behave at import), no memory
or cpu limit (enforced on a process the orchestrator starts: cgroups or RLIMIT_DATA), and every
file it needs under a folder the server can hand to steps. Any other step starts a fresh
interpreter in a bubblewrap sandbox of its own, as before, with the same outputs and cache key
(the cache never depends on how a step was started). When a server cannot start or a forked step
cannot make its sandbox, the step falls back to a fresh interpreter and this runner stops trying
warm starts.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from conveyor.dsl.component import ComponentSpec
from conveyor.engine.settings import Settings, warm_source
from conveyor.engine.tasks import Task
from conveyor.errors import StepKilled
from conveyor.runners.containers import RUNTIME, Mounts
from conveyor.runners.locks import codec_imports
from conveyor.runners.process import _pump
from conveyor.runners.sandbox import STAGE
from conveyor.runners.zygote import (
    KILL_WAIT_SECONDS,
    POOL,
    ServerGone,
    ServerKey,
    SetupFailed,
    WarmServer,
)

log = logging.getLogger("conveyor.venv")
LEARNED = "conveyor-imports.json"  # in the environment's folder: what its steps imported
MAX_LEARNED = 5000


def warm_problem(settings: Settings) -> str | None:
    """Why warm steps are off (None: they are on)."""
    if settings.warm:
        return None
    return f"turned off by {warm_source(settings.project_root / 'pyproject.toml')}"


def cold_reason(component: ComponentSpec) -> str | None:
    """Why a component's steps start a fresh interpreter even when warm steps are on."""
    if not component.warm:
        return "warm=False"
    if component.network:
        return "network=True"
    if component.env:
        return "it declares env variables"
    if component.memory or component.cpu:
        return "it has a memory or cpu limit"
    return None


def _learned_file(task: Task) -> Path:
    return Path(task.environment.location) / LEARNED


def _learned(task: Task) -> list[str]:
    """Modules earlier steps of this environment imported (in any run): a new server imports
    them before its first fork."""
    try:
        names = json.loads(_learned_file(task).read_text())
    except (OSError, ValueError):
        return []
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


def _learn(task: Task, imported: Sequence[str]) -> None:
    """Remember what a step imported, for the next server of its environment (best effort:
    two orchestrators writing at once keep one list, and the next step adds the rest)."""
    known = _learned(task)
    new = [n for n in imported if isinstance(n, str) and n not in known]
    if not new:
        return
    path = _learned_file(task)
    staging = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    try:
        staging.write_text(json.dumps(sorted([*known, *new])[:MAX_LEARNED]))
        os.replace(staging, path)
    except OSError as exc:  # a read-only environment folder: learning stays in this process
        log.debug("cannot remember the imports of %s: %s", task.environment.key, exc)
        staging.unlink(missing_ok=True)


def _binds(mounts: Mounts, stages: Sequence[tuple[Path, str]], runtime: Path) -> list[list[str]]:
    """(path in the server, path in the step, mode) for each of the step's mounts, or raise
    LookupError for a file outside every folder the server sees."""
    binds = []
    for host, inside, mode in mounts.entries:
        if inside == RUNTIME:
            if host != runtime.resolve():
                raise LookupError(f"runtime {host} is not the server's")
            continue
        for index, (root, root_mode) in enumerate(stages):
            if host.is_relative_to(root) and (mode == "ro" or root_mode == "rw"):
                binds.append([f"{STAGE}/{index}/{host.relative_to(root)}", inside, mode])
                break
        else:
            raise LookupError(f"{host} is outside the folders a warm server sees")
    return binds


class WarmSteps:
    """One venv runner's warm starts: its live forked steps, and whether warm starts work."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.broken: str | None = None
        self._live: set[tuple[WarmServer, int]] = set()
        self._lock = threading.Lock()

    @classmethod
    def create(cls, settings: Settings) -> WarmSteps | None:
        """Warm starts for a runner, or None when they are turned off."""
        return None if warm_problem(settings) else cls(settings)

    def _stages(self) -> list[tuple[Path, str]]:
        """Host folders the server binds for its steps: runs (writable), store and caches."""
        candidates = [(self.settings.run_dir, "rw")]
        store = self.settings.artifact_store
        if "://" not in store or store.startswith("file://"):
            candidates.append((Path(store.removeprefix("file://")), "ro"))
        candidates += [(self.settings.bundle_cache, "ro"), (self.settings.artifact_cache, "ro")]
        return [(path.resolve(), mode) for path, mode in candidates if path.is_dir()]

    def run(
        self,
        task: Task,
        bwrap: str,
        mounts: Mounts,
        command: list[str],
        variables: dict[str, str],
        runtime: Path,
    ) -> tuple[int, str, bool] | None:
        """Run the step forked from its environment's warm server: (exit code, stderr tail,
        timed out), or None when it must start a fresh interpreter instead (nothing ran)."""
        if self.broken is not None or cold_reason(task.component) is not None:
            return None
        stages = self._stages()
        try:
            binds = _binds(mounts, stages, runtime)
        except LookupError as exc:
            log.debug("step %s starts cold: %s", task.step, exc)
            return None
        key = ServerKey(
            python=command[0],
            environment=str(Path(task.environment.location).resolve()),
            runtime=str(runtime.resolve()),
            stages=tuple((str(path), mode) for path, mode in stages),
            variables=tuple(sorted(variables.items())),
        )
        from packaging.requirements import Requirement

        distributions = [Requirement(r).name for r in task.environment.spec.requirements]
        modules = [*codec_imports(task.environment.pins), *_learned(task)]
        try:
            server = POOL.get(key, bwrap, modules, distributions)
        except ServerGone as exc:
            self._give_up(task, f"its warm server did not start ({exc})")
            return None
        return self._run_forked(task, server, binds, command[4:])

    def _run_forked(
        self, task: Task, server: WarmServer, binds: list[list[str]], argv: list[str]
    ) -> tuple[int, str, bool] | None:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            step_id = server.start(binds, argv, out_w, err_w)
        except ServerGone as exc:
            for fd in (out_r, err_r):
                os.close(fd)
            POOL.discard(server)
            log.debug("step %s starts cold: %s", task.step, exc)
            return None
        finally:
            os.close(out_w)
            os.close(err_w)
        log.debug("step %s forked from the warm server of %s", task.step, task.environment.key)
        tail: deque[str] = deque(maxlen=40)
        readers = [
            threading.Thread(
                target=_pump, args=(os.fdopen(fd, errors="replace"), task.log, t), daemon=True
            )
            for fd, t in ((out_r, None), (err_r, tail))
        ]
        for reader in readers:
            reader.start()
        with self._lock:
            self._live.add((server, step_id))
        timed_out = False
        try:
            event = server.wait(step_id, task.component.timeout)
            if event is None:  # its timeout: the server ends the step's PID namespace
                timed_out = True
                server.kill(step_id)
                event = server.wait(step_id, KILL_WAIT_SECONDS)
                if event is None:  # the server does not answer: end it, and the step with it
                    POOL.discard(server)
        except SetupFailed as exc:
            POOL.discard(server)
            self._give_up(task, f"a forked step could not make its sandbox ({exc})")
            return None
        except ServerGone as exc:
            POOL.discard(server)
            if not exc.started:
                log.debug("step %s starts cold: %s", task.step, exc)
                return None
            raise StepKilled(
                task.step, f"killed: its environment's warm server ended ({exc})"
            ) from None
        except BaseException:  # Ctrl-C in the orchestrator: the step must not outlive it
            server.kill(step_id)
            raise
        finally:
            with self._lock:
                self._live.discard((server, step_id))
            for reader in readers:
                reader.join(timeout=5)
        if event is not None and event.get("imported"):
            server.preload(event["imported"])  # imported before the next step forks
            _learn(task, event["imported"])
        returncode = -9 if event is None else int(event["status"])
        return returncode, "\n".join(tail), timed_out

    def _give_up(self, task: Task, problem: str) -> None:
        self.broken = problem
        log.warning("step %s starts a fresh interpreter: %s; later steps of this run too",
                    task.step, problem)  # fmt: skip

    def kill_all(self) -> None:
        """End every forked step of this runner that is still running."""
        with self._lock:
            live = list(self._live)
        for server, step_id in live:
            server.kill(step_id)
