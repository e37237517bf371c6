"""The docker runner: every step in its own container, on an image built once per environment.

A step runs `python -m conveyor._runtime.executor SPEC` in a fresh container of its
environment's image (see `runners/images.py`), its paths pointed by the executor's overrides at
fixed mounts (see `runners/containers.py`): conveyor's runtime, the step's code bundle and each
of its input files read-only, the attempt's work folder read-write; never the project, the
database or the artifact store. The container runs as a fixed non-root user, without network
unless the component asks for it, with the component's cpu/memory limits and only its declared
variables. A timeout kills and removes the container; an out-of-memory kill is named; a
container whose exit status is lost fails the step. Every container carries labels naming the
run, the step and the orchestrator process, so containers left by a killed orchestrator are
removed the next time a docker runner starts. An image this engine lacks is pulled by digest
when `conveyor images push` recorded it in the artifact store, else built.

By default a step does not get a container of its own but a `docker exec` into a warm container
of its image and limits, with the same paths, user, limits and endings (see
`runners/warm_containers.py`); `CONVEYOR_WARM=off` turns that off.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from conveyor.dsl.component import ComponentSpec
from conveyor.engine.environments import EnvironmentSpec, PreparedEnvironment
from conveyor.engine.settings import Settings
from conveyor.engine.store import ArtifactStore
from conveyor.engine.tasks import Task
from conveyor.errors import EnvironmentBuildError, ExecutorProtocolError, StepFailed
from conveyor.runners.base import (
    BASE_VARIABLES,
    read_result,
    requirement_spec,
    step_variables,
    write_task_spec,
)
from conveyor.runners.containers import (
    CODE,
    INPUTS,
    OWNER_LABEL,
    RUNTIME,
    STEP_USER,
    WAIT_SECONDS,
    WORK,
    Mounts,
    container_name,
    exit_status,
    expire,
    open_to_step,
    owner_label,
    pump_output,
    readable_by_step,
    remove_orphans,
)
from conveyor.runners.engine_paths import EnginePaths, engine_paths
from conveyor.runners.images import (
    ENV_PREFIX,
    IMAGE_PATH,
    BaseImage,
    DockerEnvironmentSpec,
    ImageBuilder,
    connect,
)
from conveyor.runners.locks import Locker
from conveyor.runners.runtime import runtime_bundle
from conveyor.runners.warm_containers import (
    NONCE_VARIABLE,
    WarmContainer,
    WarmPool,
    create_options,
    exec_command,
    stage_in,
    stage_mounts,
    stage_out,
    sweep_command,
    unfit,
    wants_warm,
    warm_key,
)

log = logging.getLogger("conveyor.docker")
KILL_WAIT_SECONDS = 10  # for a timed-out step's exec to end once killed; a removal to finish


class DockerRunner:
    """Runs each step in a container of its environment's image."""

    name = "docker"
    uses_bundles = True  # containers never see the project: code travels as a bundle

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.locker = Locker(settings.lock_dir)
        self._owner = owner_label()
        self._lock = threading.Lock()
        self._client: Any = None
        self._builder: ImageBuilder | None = None
        self._idle: list[Any] = []  # API clients not in use: one per concurrent step
        self._live: dict[str, Any] = {}  # container id -> the client running it
        self._runtime: Path | None = None
        self._paths: EnginePaths | None = None
        self.warm = WarmPool(settings.run_dir, self._owner)

    # ------------------------------------------------------------------------------ engine

    @property
    def builder(self) -> ImageBuilder:
        """The image builder; the first use connects and removes orphaned containers."""
        with self._lock:
            if self._builder is None:
                self._client = connect()
                # push records live in the artifact store every machine of the project shares
                store = ArtifactStore(
                    self.settings.artifact_store, cache_dir=self.settings.artifact_cache
                )
                self._builder = ImageBuilder(self.settings, self._client, store)
                remove_orphans(self._client)
                self.warm.sweep_stages()
            return self._builder

    @property
    def paths(self) -> EnginePaths:
        """Where the engine finds this process's files (translated when it runs in a container)."""
        if self._paths is None:
            self._paths = engine_paths(self.builder.client.api)
        return self._paths

    def _take_client(self) -> Any:
        """An API client for one step: requests sessions are not meant to be shared by threads."""
        builder = self.builder  # connects (and checks the engine) on first use
        with self._lock:
            if self._idle:
                return self._idle.pop()
        import docker

        # the version the first client negotiated: no extra round trip per client
        return docker.from_env(version=builder.client.api.api_version).api

    def _give_back(self, api: Any) -> None:
        with self._lock:
            self._idle.append(api)

    # ------------------------------------------------------------------------------ environments

    def environment_spec(self, component: ComponentSpec) -> EnvironmentSpec:
        base = self.builder.base(component.image or self.settings.base_image)
        plain = requirement_spec(component, python=base.python_minor)
        return DockerEnvironmentSpec(plain.requirements, plain.python, image=base.reference)

    def limitations(self, component: ComponentSpec) -> list[str]:
        if component.gpu:
            return ["gpu needs the NVIDIA container toolkit on the Docker engine"]
        return []

    def prepare(
        self, needs: Mapping[EnvironmentSpec, Sequence[str]]
    ) -> dict[EnvironmentSpec, PreparedEnvironment]:
        prepared = {}
        for spec, steps in needs.items():
            who = "step " + ", ".join(steps) if len(steps) == 1 else "steps " + ", ".join(steps)
            image = getattr(spec, "image", None) or self.settings.base_image
            base: BaseImage = self.builder.base(image)
            started = time.perf_counter()
            lock = self.locker.lock(spec, who=who)
            key, tag, built = self.builder.ensure(spec, base, lock, who)
            prepared[spec] = PreparedEnvironment(
                key=key,
                spec=spec,
                location=tag,
                interpreter=base.python,
                lock_path=str(lock.path),
                pins=lock.pins,
                build_seconds=time.perf_counter() - started,
                built=built,
            )
        return prepared

    # ------------------------------------------------------------------------------ running

    def runtime(self) -> Path:
        if self._runtime is None:
            bundle = runtime_bundle(self.settings.runtime_dir)
            for path in (bundle, *bundle.rglob("*")):  # made under the host's umask
                if not readable_by_step(path):
                    path.chmod(path.stat().st_mode | (0o055 if path.is_dir() else 0o044))
            self._runtime = bundle
        return self._runtime

    def mounts(self, task: Task) -> Mounts:
        """What a step sees, at fixed paths under /conveyor: conveyor's runtime, its code bundle
        and each input file read-only, its own attempt folder read-write. Nothing else: not
        the project, not the database, not another run's folder, not the artifact store."""
        if task.code is None:
            raise ExecutorProtocolError(
                f"step {task.step!r} has no code bundle; the docker runner ships code as bundles "
                f"(planned by the engine when the runner says `uses_bundles`)"
            )
        entries = [
            (self.runtime().resolve(), RUNTIME, "ro"),
            (task.code.resolve(), CODE, "ro"),
            (task.workdir.resolve(), WORK, "rw"),
        ]
        for name, item in task.spec["inputs"].items():
            if "items" in item:  # a collected list: one file per item
                for i, one in enumerate(item["items"]):
                    entries.append((Path(one["path"]).resolve(), f"{INPUTS}/{name}/{i}", "ro"))
            else:
                entries.append((Path(item["path"]).resolve(), f"{INPUTS}/{name}", "ro"))
        return Mounts(tuple(entries), shown_as=((CODE, Path(task.project_root)),))

    def container_config(self, task: Task, mounts: Mounts) -> dict[str, Any]:
        """The create-container arguments for one attempt (without the host config)."""
        component = task.component
        declared = set(component.env)
        # the image has its own PATH, locale and CA bundle; the host's would point nowhere
        variables = {
            k: v
            for k, v in step_variables(component).items()
            if k not in BASE_VARIABLES or k in declared or k == "TZ"
        }
        variables.update(
            PATH=IMAGE_PATH,
            PYTHONPATH=f"{RUNTIME}:{CODE}",
            HOME=WORK,
            PYTHONUNBUFFERED="1",
            PYTHONDONTWRITEBYTECODE="1",  # the code bundle is mounted read-only
        )
        # The spec keeps host paths (it is the attempt's record); the executor's path overrides,
        # the same ones a KFP task uses, point it at the mounts.
        command = [f"{ENV_PREFIX}/bin/python", "-s", "-m", "conveyor._runtime.executor"]
        command.append(mounts.inside(task.spec_path))
        for flag, section in (("--input", "inputs"), ("--output", "outputs")):
            for name, item in task.spec[section].items():
                if "items" in item:
                    for i, one in enumerate(item["items"]):
                        command += [flag, f"{name}[{i}]={mounts.inside(one['path'])}"]
                else:
                    command += [flag, f"{name}={mounts.inside(item['path'])}"]
        command += ["--result", mounts.inside(task.result_path)]
        workdir = task.workdir.resolve()
        run_id = workdir.parent.parent.name  # <runs>/<run id>/<step>/attempt-N
        return {
            "image": task.environment.location,
            "command": command,
            "user": STEP_USER,
            "working_dir": WORK,
            "environment": variables,
            "name": container_name(run_id, task.step, workdir.name),
            "labels": {
                "conveyor.run": run_id,
                "conveyor.step": task.step,
                "conveyor.attempt": workdir.name,
                "conveyor.project": str(task.project_root),
                OWNER_LABEL: self._owner,
            },
        }

    def host_config(self, api: Any, task: Task, mounts: Mounts) -> Any:
        component = task.component
        options: dict[str, Any] = {
            "binds": mounts.binds(self.paths.source),
            "network_mode": "bridge" if component.network else "none",
        }
        if component.memory:
            # equal limits: no swap to hide in, so running past the limit is an OOM kill
            options["mem_limit"] = options["memswap_limit"] = component.memory
        if component.cpu:
            options["nano_cpus"] = int(component.cpu * 1e9)
        if component.gpu:
            from docker.types import DeviceRequest

            options["device_requests"] = [
                DeviceRequest(count=component.gpu, capabilities=[["gpu"]])
            ]
        return api.create_host_config(**options)

    def run(self, task: Task) -> dict[str, Any]:
        import docker
        import requests

        write_task_spec(task)
        open_to_step(task)
        api = self._take_client()
        try:
            if wants_warm(task.component, self.settings) and self.warm.fits(task):
                try:
                    return self._run_warm(api, task)
                except _Stale:  # an idle container that ended meanwhile: another one
                    return self._run_warm(api, task)
            return self._run(api, task)
        except (docker.errors.DockerException, requests.RequestException) as exc:
            # the engine refused or went away: a step failure, so the engine's retries apply
            raise StepFailed(
                task.step, f"the Docker engine failed to run its container: {exc}"
            ) from exc
        finally:
            self._give_back(api)

    def _run(self, api: Any, task: Task) -> dict[str, Any]:
        import docker

        mounts = self.mounts(task)
        config = self.container_config(task, mounts)
        try:
            created = api.create_container(
                host_config=self.host_config(api, task, mounts), **config
            )
        except docker.errors.ImageNotFound as exc:
            raise EnvironmentBuildError(
                f"image {task.environment.location} of step {task.step!r} disappeared (pruned "
                f"while running?); run again to rebuild it"
            ) from exc
        container = created["Id"]
        with self._lock:
            self._live[container] = api
        tail: deque[str] = deque(maxlen=40)
        timer = None
        expired = threading.Event()
        try:
            stream = api.attach(container, stdout=True, stderr=True, stream=True, demux=True)
            api.start(container)
            if task.component.timeout:
                timer = threading.Timer(task.component.timeout, expire, (api, container, expired))
                timer.daemon = True
                timer.start()
            pump_output(stream, task.log, tail)
            code, oom = exit_status(api, container, bool(task.component.memory))
        finally:
            if timer is not None:
                timer.cancel()
            self._remove(api, container)
        return _translated(task, mounts, code, oom, expired.is_set(), tail)

    # ------------------------------------------------------------------------------ warm

    def _run_warm(self, api: Any, task: Task) -> dict[str, Any]:
        """Run the step as an exec in a warm container of its key (see warm_containers.py)."""
        mounts = self.mounts(task)  # the paths a fresh container would give it: same command
        config = self.container_config(task, mounts)
        import docker

        reused = self.warm.take(task)
        box = reused or self._start_warm(api, task)
        nonce = secrets.token_hex(16)
        clean = f"{nonce} clean"
        tail: deque[str] = deque(maxlen=41)
        timer = None
        expired = threading.Event()
        code = None
        try:
            stage_in(box, task, mounts)
            try:
                execution = api.exec_create(
                    box.id,
                    exec_command(config["command"]),
                    user="0:0",
                    environment={**config["environment"], NONCE_VARIABLE: nonce},
                    workdir=WORK,
                )["Id"]
            except docker.errors.APIError as exc:
                if reused is None:
                    raise
                raise _Stale(str(exc)) from exc
            stream = api.exec_start(execution, stream=True, demux=True)
            if task.component.timeout:
                timer = threading.Timer(
                    task.component.timeout, self._expire_warm, (box, execution, expired)
                )
                timer.daemon = True
                timer.start()

            def sink(line: str) -> None:
                if not line.startswith(nonce):  # the wrapper's reports are not the step's
                    task.log(line)

            pump_output(stream, sink, tail)
            code = _exec_status(api, execution)
        finally:
            if timer is not None:
                timer.cancel()
                timer.join()  # a kill under way must end before another step gets the box
            if tail and tail[-1] == clean:
                tail.pop()
            else:  # processes or files of the step may be left: no other step may see them
                box.broken = True
            try:
                stage_out(box, task)
            except OSError as exc:  # removed by close(), or not ours to empty
                log.debug("stage of %s: %s", box.name, exc)
                box.broken = True
            if not self.warm.give_back(box):
                self._discard(api, box)
        if unfit(tail, nonce):
            image = task.environment.location
            log.warning("image %s lacks a tool warm containers need (setpriv, find, tar, "
                        "xargs, sleep): its steps get a container each", image)  # fmt: skip
            self.warm.unfit.add(task.environment.location)
            return self._run(api, task)
        oom = code == 137 and bool(task.component.memory) and not expired.is_set()
        return _translated(task, mounts, code, oom, expired.is_set(), tail)

    def _start_warm(self, api: Any, task: Task) -> WarmContainer:
        """A new warm container for `task`'s key, running and busy."""
        import docker

        closings = self.warm.closings
        stage, name = self.warm.new_stage(task)
        host = self.host_config(api, task, stage_mounts(stage, self.runtime()))
        host.update(Init=True, AutoRemove=True)  # reaps left processes; gone when it exits
        try:
            created = api.create_container(
                host_config=host, **create_options(task, name, self._owner)
            )
        except docker.errors.ImageNotFound as exc:
            shutil.rmtree(stage, ignore_errors=True)
            raise EnvironmentBuildError(
                f"image {task.environment.location} of step {task.step!r} disappeared (pruned "
                f"while running?); run again to rebuild it"
            ) from exc
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        box = WarmContainer(created["Id"], name, warm_key(task), stage, None)
        if not self.warm.add(box, closings):
            self._discard(api, box)
            raise StepFailed(task.step, "the run was interrupted while its container started")
        try:
            box.stdin = api.attach_socket(box.id, params={"stdin": 1, "stream": 1})
            api.start(box.id)
        except BaseException:
            self._discard(api, box)
            raise
        return box

    def _expire_warm(self, box: WarmContainer, execution: str, expired: threading.Event) -> None:
        """A step's timeout: kill the step user's processes (docker cannot kill an exec); if
        the step's exec has not ended soon after, kill the whole container."""
        expired.set()
        api = self._take_client()
        try:
            sweep = api.exec_create(box.id, sweep_command(), user=STEP_USER)["Id"]
            # its exit status says little: the wrapper's own sweep, or the step, may kill it
            api.exec_start(sweep)
            if _exec_status(api, execution, KILL_WAIT_SECONDS) is not None:
                return
            log.warning("a timed-out step in %s outlived its kill", box.name)
        except Exception as exc:
            log.warning("could not end a timed-out step in %s: %s", box.name, exc)
        finally:
            self._give_back(api)
        box.broken = True
        api = self._take_client()
        try:
            api.kill(box.id)  # its steps end with it; the step's thread removes it
        except Exception as exc:
            log.debug("kill %s at a timeout: %s", box.name, exc)
        finally:
            self._give_back(api)

    def _discard(self, api: Any, box: WarmContainer) -> None:
        self.warm.drop(box)
        self._remove(api, box.id)
        try:  # an exited warm container may be in the middle of removing itself
            api.wait(box.id, timeout=KILL_WAIT_SECONDS, condition="removed")
        except Exception as exc:
            log.debug("wait for the removal of %s: %s", box.name, exc)

    def _remove(self, api: Any, container: str) -> None:
        import docker

        with self._lock:
            self._live.pop(container, None)
        try:
            api.remove_container(container, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if "already in progress" not in str(exc):
                log.warning("could not remove container %s: %s", container[:12], exc)

    def close(self) -> None:
        """Kill and remove every live container (an interrupted run must not leave any)."""
        with self._lock:
            live = list(self._live)
        warm = self.warm.close()
        if not live and not warm:
            return
        # a client of its own: a step's client is busy streaming that container's output, and
        # sharing its session across threads could wait on it until the container ends
        api = self._take_client()
        try:
            for container in live:
                self._remove(api, container)
            for box in warm:
                self._discard(api, box)
        finally:
            self._give_back(api)


class _Stale(Exception):
    """An idle warm container could not take a step (it ended meanwhile)."""


def _translated(
    task: Task, mounts: Mounts, code: int | None, oom: bool, timed_out: bool, tail: deque[str]
) -> dict[str, Any]:
    """`_outcome`, its error showing host paths, where the user can open the files."""
    try:
        return _outcome(task, code, oom, timed_out, "\n".join(tail))
    except StepFailed as exc:
        raise mounts.shown_on_host(exc) from None


def _exec_status(api: Any, execution: str, wait: float = WAIT_SECONDS) -> int | None:
    """The exit code of an exec whose output has ended (None: unknown, e.g. its container
    was removed, or still running after `wait` seconds)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            state = api.exec_inspect(execution)
        except Exception as exc:
            log.debug("no exit status for exec %s: %s", execution[:12], exc)
            return None
        if not state.get("Running"):
            code = state.get("ExitCode")
            return None if code is None else int(code)
        if time.monotonic() > deadline:
            return None
        time.sleep(0.01)


def _outcome(
    task: Task, code: int | None, oom: bool, timed_out: bool, stderr: str
) -> dict[str, Any]:
    """The result document of a finished container, or the StepFailed that explains why not."""
    if timed_out:
        return read_result(task, None, stderr, timed_out=True)
    if oom:
        return read_result(task, code, stderr, oom=True, limit=task.component.memory_text)
    if code is None:
        raise StepFailed(
            task.step,
            "its container vanished before reporting an exit status (removed from outside, or "
            "the Docker engine restarted); run it again" + _tail(stderr),
        )
    if code > 128:  # docker follows the shell: 128 + the signal that killed the process
        code = -(code - 128)
    return read_result(task, code, stderr)


def _tail(text: str) -> str:
    text = text.strip()
    return f"; last output:\n{text}" if text else ""
