"""What a step container sees and how it ends: mounts, the step user, output, exit, orphans.

The docker runner's container-level pieces, kept apart from its running of steps. Paths inside a
container are fixed (`/conveyor/...`) and the host folders behind them are bind-mounted; the step
runs as a fixed non-root user that must be able to read the project and write its work folder.
Each container is labelled with its orchestrator process, so containers whose orchestrator died
(kill -9, a crash) are found and removed the next time a docker runner starts.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from conveyor.engine.tasks import Task
from conveyor.errors import ConveyorError, ExecutorProtocolError, StepFailed

log = logging.getLogger("conveyor.docker")

# Fixed places inside every step container. Host paths are not reused: an image may hide them
# (e.g. under /root, mode 0700, which the step user cannot cross).
RUNTIME = "/conveyor/runtime"  # conveyor's stdlib-only core
CODE = "/conveyor/code"  # the step's code bundle (never the project)
INPUTS = "/conveyor/inputs"  # one read-only file per input value
WORK = "/conveyor/work"  # the attempt's own folder: spec, result, outputs
STEP_USER = "1000:1000"  # the base image's `conveyor` user; fixed, so output folders can be chowned
OWNER_LABEL = "conveyor.owner"  # "<hostname>/<pid>/<process start time>" of the orchestrator
WAIT_SECONDS = 120  # for the exit status once the output has ended (the process is gone by then)


def _process_start(pid: int) -> str:
    """The start time of `pid` (clock ticks since boot), so a reused pid is not mistaken for it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[-1].split()[19]


def owner_label() -> str:
    return f"{socket.gethostname()}/{os.getpid()}/{_process_start(os.getpid())}"


def _owner_alive(owner: str) -> bool:
    host, _, rest = owner.partition("/")
    pid, _, started = rest.partition("/")
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another machine's (or a malformed) label: not ours to judge
    try:
        os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    now = _process_start(int(pid))  # "" where there is no /proc (macOS): trust the pid alone
    return not (started and now) or now == started


def container_name(run_id: str, step: str, attempt: str) -> str:
    """A readable, unique name (`docker ps`); the random end avoids clashes with leftovers."""
    name = f"conveyor-{run_id}-{step}-{attempt}"[:180] + "-" + os.urandom(3).hex()
    return re.sub(r"[^a-zA-Z0-9_.-]", "-", name)


def readable_by_step(path: Path) -> bool:
    """Whether the step user can read `path` (and enter it, for a folder)."""
    uid, gid = (int(part) for part in STEP_USER.split(":"))
    info = path.stat()
    shift = 6 if info.st_uid == uid else 3 if info.st_gid == gid else 0
    need = 0o5 if path.is_dir() else 0o4
    return (info.st_mode >> shift) & need == need


def open_to_step(task: Task) -> None:
    """Let the step user read its spec and inputs and write its result and outputs."""
    uid, gid = (int(part) for part in STEP_USER.split(":"))
    out = task.workdir / "out"
    out.mkdir(parents=True, exist_ok=True)
    for path in (task.workdir, out, task.spec_path):
        if os.geteuid() == 0:
            os.chown(path, uid, gid)
        elif os.geteuid() != uid:  # we cannot chown: open it instead
            path.chmod(0o777 if path.is_dir() else 0o644)
    items = [one for item in task.spec["inputs"].values() for one in item.get("items", [item])]
    for item in items:
        path = Path(item["path"])
        if not readable_by_step(path):  # written under a strict umask
            try:
                path.chmod(path.stat().st_mode | 0o044)
            except OSError as exc:
                raise ConveyorError(
                    f"step {task.step!r}: its input {path} is not readable by the step user "
                    f"and cannot be opened to it ({exc}); fix its permissions"
                ) from exc


def expire(api: Any, container: str, expired: threading.Event) -> None:
    expired.set()
    try:
        api.kill(container)
    except Exception as exc:  # already gone: the step ended at the deadline
        log.debug("kill %s at its timeout: %s", container[:12], exc)


class OutputStream(Protocol):
    """The SDK's demultiplexed attach stream: (stdout, stderr) chunks, closed when done."""

    def __iter__(self) -> Iterator[tuple[bytes | None, bytes | None]]: ...

    def close(self) -> None: ...


def pump_output(
    stream: OutputStream,
    sink: Callable[[str], None],
    tail: deque[str],
) -> None:
    """Send the container's output to `sink` line by line; keep the tail of stderr."""
    pending = [b"", b""]
    try:
        for frame in stream:
            for index, chunk in enumerate(frame):
                if not chunk:
                    continue
                *lines, pending[index] = (pending[index] + chunk).split(b"\n")
                for raw in lines:
                    line = raw.decode(errors="replace").rstrip("\r")
                    sink(line)
                    if index == 1:
                        tail.append(line)
    except Exception as exc:  # the engine went away mid-step: the exit status will say so
        log.debug("output stream ended: %s", exc)
    finally:
        stream.close()
    for index, rest in enumerate(pending):
        if rest:
            line = rest.decode(errors="replace")
            sink(line)
            if index == 1:
                tail.append(line)


def exit_status(api: Any, container: str, limited: bool) -> tuple[int | None, bool]:
    """(exit code or None when unknown, killed for memory)."""
    try:
        status = api.wait(container, timeout=WAIT_SECONDS)
        code = int(status["StatusCode"])
    except Exception as exc:  # vanished, engine gone, or no answer: unknown is not success
        log.debug("no exit status for %s: %s", container[:12], exc)
        return None, False
    if code == 0:
        return 0, False
    try:
        oom = bool(api.inspect_container(container)["State"].get("OOMKilled"))
    except Exception:
        oom = False
    return code, oom or (limited and code == 137)


def remove_orphans(client: Any) -> int:
    """Remove containers whose orchestrator process on this machine is gone; return how many."""
    import docker

    removed = 0
    # ignore_removed: other processes' containers end while we look (workers sharing an engine)
    listed = client.containers.list(all=True, filters={"label": OWNER_LABEL}, ignore_removed=True)
    for container in listed:
        if _owner_alive(container.labels.get(OWNER_LABEL, "")):
            continue
        try:
            container.remove(force=True)
            removed += 1
            log.info("removed container %s of step %s left by an interrupted run %s",
                     container.name, container.labels.get("conveyor.step", "?"),
                     container.labels.get("conveyor.run", "?"))  # fmt: skip
        except docker.errors.APIError as exc:
            log.debug("could not remove orphan %s: %s", container.name, exc)
    return removed


@dataclass(frozen=True, slots=True)
class Mounts:
    """Host folders bind-mounted into a step's container: (host path, container path, mode)."""

    entries: tuple[tuple[Path, str, str], ...]
    # how a container path is shown to the user when it differs from its host mount: the code
    # bundle is a copy of project files, so tracebacks point into the project
    shown_as: tuple[tuple[str, Path], ...] = ()

    def binds(self, source: Callable[[Path], Path] = lambda path: path) -> list[str]:
        """Docker's "host:container:mode" list (one host file may appear at several places);
        `source` maps a path to where the engine finds it (see `runners/engine_paths.py`)."""
        return [f"{source(host)}:{inside}:{mode}" for host, inside, mode in self.entries]

    def inside(self, path: str | Path) -> str:
        """Where a host path appears inside the container (the deepest mount holding it)."""
        path = Path(path).resolve()
        for host, inside, _ in sorted(self.entries, key=lambda e: -len(e[0].parts)):
            if path.is_relative_to(host):
                return str(PurePosixPath(inside, path.relative_to(host)))
        raise ExecutorProtocolError(
            f"{path} is outside every folder mounted into the step's container "
            f"({', '.join(str(e[0]) for e in self.entries)})"
        )

    def shown_on_host(self, exc: StepFailed) -> StepFailed:
        """`exc` with container paths in its detail and traceback turned back into host paths,
        where the user can open the files."""
        return type(exc)(
            exc.step,
            self.outside(exc.detail),
            error_type=exc.error_type,
            remote_traceback=self.outside(exc.remote_traceback),
        )

    def outside(self, text: str) -> str:
        """`text` with container paths turned back into host paths (for tracebacks)."""
        for inside, host in self.shown_as:
            text = text.replace(inside + "/", f"{host}/")
        for host, inside, _ in self.entries:
            text = text.replace(inside + "/", f"{host}/")
        return text
