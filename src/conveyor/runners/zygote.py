"""Warm fork servers for the venv runner: one per environment, kept for the orchestrator process.

A step normally starts a new interpreter and re-imports pandas or scikit-learn. A warm server
(`conveyor._runtime.zygote`, run in a bubblewrap sandbox of the environment by
`sandbox.server_command`) imports them once and forks a child per step, which builds its own
sandbox (its own folder, inputs and code bundle at the usual `/conveyor/...` paths; own PID,
mount, user, network, IPC and UTS namespaces; uid 65534; no capabilities) before running the
executor. What a step can observe of an earlier one is in docs/runners.md ("Warm steps").

Servers are keyed by environment, runtime, the host folders they can hand to steps and the
step variables, and kept across the runs of one orchestrator process (a run's runner closes,
the pool stays): at most `MAX_SERVERS`, a server unused for `IDLE_SECONDS` is closed when the
pool is next used, and all end with the process (`--die-with-parent`, from a thread that lives
as long as the process, since the kernel's parent-death signal follows the spawning thread).
"""

from __future__ import annotations

import atexit
import itertools
import json
import logging
import os
import queue
import socket
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conveyor.runners.sandbox import server_command

log = logging.getLogger("conveyor.zygote")

# Environments kept warm at once; the least recently used is closed first. A server holds what it
# imported (100-170 MB for the reference flows' pandas / scikit-learn / XGBoost environments);
# the demo has five environments, and with four servers one of them was started twice a demo.
MAX_SERVERS = 8
IDLE_SECONDS = 600.0
START_SECONDS = 300.0  # to start a server and import its modules
KILL_WAIT_SECONDS = 10.0  # for a killed step's exit report before the whole server is killed
MAX_MESSAGE = 1 << 20


class ServerGone(Exception):
    """The warm server ended (or never started); `started` says whether the step had begun."""

    def __init__(self, reason: str, started: bool) -> None:
        super().__init__(reason)
        self.started = started


class SetupFailed(Exception):
    """A forked step could not make its sandbox; the step has not run."""


@dataclass(frozen=True, slots=True)
class ServerKey:
    """What makes two servers interchangeable."""

    python: str
    environment: str
    runtime: str
    stages: tuple[tuple[str, str], ...]  # host folder, "ro" | "rw"
    variables: tuple[tuple[str, str], ...]


@dataclass(slots=True)
class _Pending:
    events: queue.Queue[dict[str, Any]] = field(default_factory=queue.Queue)
    forked: bool = False


class _Spawner:
    """Starts server processes from one thread that lives as long as the process (see above)."""

    def __init__(self) -> None:
        self._requests: queue.Queue[tuple[Callable[[], Any], queue.Queue[Any]]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def call(self, fn: Callable[[], Any]) -> Any:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="conveyor-zygote-spawner", daemon=True
                )
                self._thread.start()
        answer: queue.Queue[Any] = queue.Queue()
        self._requests.put((fn, answer))
        ok, value = answer.get()
        if not ok:
            raise value
        return value

    def _loop(self) -> None:
        while True:
            fn, answer = self._requests.get()
            try:
                answer.put((True, fn()))
            except BaseException as exc:
                answer.put((False, exc))


class WarmServer:
    """One running fork server and the steps it runs."""

    def __init__(self, key: ServerKey, bwrap: str, spawner: _Spawner) -> None:
        self.key = key
        self.last_used = time.monotonic()
        self.preloaded: set[str] = set()
        self._asked = False
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._pending: dict[int, _Pending] = {}
        self._ready: queue.Queue[dict[str, Any]] = queue.Queue()
        self._gone: str | None = None
        self._output: deque[str] = deque(maxlen=3)  # its last lines, to say why it ended
        self._drained = threading.Event()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._sock = ours
        python = key.python
        command = [python, "-s", "-m", "conveyor._runtime.zygote", "--fd", str(theirs.fileno())]
        stages = [(Path(host), mode) for host, mode in key.stages]
        command = server_command(bwrap, Path(key.environment), Path(key.runtime), stages, command)
        try:
            self._proc: subprocess.Popen[str] = spawner.call(
                lambda: subprocess.Popen(
                    command,
                    env=dict(key.variables),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    errors="replace",
                    pass_fds=(theirs.fileno(),),
                    start_new_session=True,
                )
            )
        finally:
            theirs.close()
        threading.Thread(target=self._read, name="conveyor-zygote-reader", daemon=True).start()
        threading.Thread(target=self._drain, name="conveyor-zygote-output", daemon=True).start()

    @property
    def alive(self) -> bool:
        return self._gone is None

    def preload(self, modules: Sequence[str], distributions: Sequence[str] = ()) -> None:
        """Ask the server to import these (from the environment) before its next fork."""
        new = [m for m in modules if m not in self.preloaded]
        if not new and not distributions and self._asked:
            return
        self._asked = True  # the first request is always sent: its answer says the server is up
        self.preloaded.update(new)
        self._send({"op": "preload", "modules": new, "distributions": list(distributions)})

    def wait_ready(self, timeout: float) -> dict[str, Any]:
        """The server's answer to its first preload (what it imported, what failed)."""
        try:
            answer = self._ready.get(timeout=timeout)
        except queue.Empty:
            self.close()
            raise ServerGone(f"the warm server did not start within {timeout:g} s", False) from None
        if "gone" in answer:
            raise ServerGone(answer["gone"], False)
        return answer

    def start(self, binds: list[list[str]], argv: list[str], stdout: int, stderr: int) -> int:
        """Ask for a forked step; returns its id. The descriptors are sent, not closed."""
        self.last_used = time.monotonic()
        with self._lock:
            if self._gone is not None:
                raise ServerGone(self._gone, False)
            step_id = next(self._ids)
            self._pending[step_id] = _Pending()
        message = json.dumps({"op": "run", "id": step_id, "binds": binds, "argv": argv})
        try:
            socket.send_fds(self._sock, [message.encode()], [stdout, stderr])
        except OSError as exc:
            self._forget(step_id)
            raise ServerGone(f"cannot reach the warm server ({exc})", False) from exc
        return step_id

    def wait(self, step_id: int, timeout: float | None) -> dict[str, Any] | None:
        """The step's exit report, or None once it has run `timeout` seconds (it is still
        running). The time counts from its fork: a server still importing what earlier steps
        taught it delays a step without eating into its timeout."""
        pending = self._pending[step_id]
        deadline = None
        while True:
            if pending.forked and deadline is None and timeout is not None:
                deadline = time.monotonic() + timeout
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                event = pending.events.get(timeout=left if pending.forked else START_SECONDS)
            except queue.Empty:
                if not pending.forked:
                    self._forget(step_id)
                    raise ServerGone("the warm server did not fork the step", False) from None
                return None
            if event["event"] == "forked":
                pending.forked = True
                continue
            self._forget(step_id)
            if event["event"] == "gone":
                raise ServerGone(event["reason"], pending.forked)
            if event["event"] == "setup-failed":
                raise SetupFailed(event.get("error", "unknown"))
            self.last_used = time.monotonic()
            return event

    def kill(self, step_id: int) -> None:
        """End a step's whole process tree (its PID namespace)."""
        self._send({"op": "kill", "id": step_id})

    def close(self) -> None:
        """End the server: closing its socket ends its loop; the process is then killed."""
        with self._lock:
            if self._gone is None:
                self._gone = "the warm server was closed"
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self._proc.pid, 9)
            except (ProcessLookupError, PermissionError):
                pass
            self._proc.wait()

    def _forget(self, step_id: int) -> None:
        with self._lock:
            self._pending.pop(step_id, None)

    def _send(self, message: dict[str, Any]) -> None:
        try:
            self._sock.send(json.dumps(message).encode())
        except OSError as exc:
            log.debug("warm server unreachable: %s", exc)

    def _read(self) -> None:
        reason = "the warm server ended"
        while True:
            try:
                data = self._sock.recv(MAX_MESSAGE)
            except OSError as exc:
                reason = f"the warm server ended ({exc})"
                break
            if not data:
                break
            message = json.loads(data)
            if message.get("event") == "preloaded":
                self._ready.put(message)
                if message.get("failed"):
                    log.debug("warm server could not preload %s", message["failed"])
                continue
            with self._lock:
                pending = self._pending.get(message.get("id", -1))
            if pending is not None:
                pending.events.put(message)
        try:
            code: int | None = self._proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            code = None
        if code is not None:
            reason += f" with exit code {code}"
        self._drained.wait(timeout=2)
        if self._output:
            reason += ": " + " / ".join(self._output)
        with self._lock:
            if self._gone is None:
                self._gone = reason
            waiting = list(self._pending.values())
        for pending in waiting:
            pending.events.put({"event": "gone", "reason": reason})
        self._ready.put({"gone": reason})

    def _drain(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self._output.append(line.rstrip())
            log.debug("warm server %s: %s", Path(self.key.environment).name[:12], line.rstrip())
        self._drained.set()


class ServerPool:
    """The process's warm servers (one per key), created on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._servers: dict[ServerKey, WarmServer] = {}
        self._starting: dict[ServerKey, threading.Lock] = {}
        self._spawner = _Spawner()
        self._owner = os.getpid()
        atexit.register(self.close)
        # a forked copy of the orchestrator must neither use nor close the parent's servers
        os.register_at_fork(after_in_child=self._forget_all)

    def _forget_all(self) -> None:
        self._lock = threading.Lock()
        self._servers = {}
        self._starting = {}
        self._spawner = _Spawner()

    def get(
        self, key: ServerKey, bwrap: str, modules: Sequence[str], distributions: Sequence[str]
    ) -> WarmServer:
        """The running server for `key`, started (and its modules imported) if needed."""
        self._evict_idle()
        with self._lock:
            gate = self._starting.setdefault(key, threading.Lock())
        with gate:  # one start per key; other steps of the environment wait for it
            with self._lock:
                server = self._servers.get(key)
            if server is not None and server.alive:
                server.last_used = time.monotonic()
                return server
            try:
                server = WarmServer(key, bwrap, self._spawner)
            except OSError as exc:
                raise ServerGone(f"the warm server could not start ({exc})", False) from exc
            server.preload(modules, distributions)
            answer = server.wait_ready(START_SECONDS)
            log.debug("warm server for %s imported %s", key.environment, answer.get("loaded"))
            with self._lock:
                self._servers[key] = server
                extra = sorted(self._servers.values(), key=lambda s: s.last_used)
                extra = extra[: max(0, len(extra) - MAX_SERVERS)]
                for old in extra:
                    del self._servers[old.key]
            for old in extra:
                old.close()
            return server

    def discard(self, server: WarmServer) -> None:
        """Close a server that misbehaved; the next step of its environment starts another."""
        with self._lock:
            if self._servers.get(server.key) is server:
                del self._servers[server.key]
        server.close()

    def _evict_idle(self) -> None:
        now = time.monotonic()
        with self._lock:
            idle = [s for s in self._servers.values() if now - s.last_used > IDLE_SECONDS]
            for server in idle:
                del self._servers[server.key]
        for server in idle:
            server.close()

    def close(self) -> None:
        """Close every server (at exit; they would die with the process anyway)."""
        with self._lock:
            servers = list(self._servers.values())
            self._servers.clear()
        for server in servers:
            server.close()


# One pool per orchestrator process: servers outlive a run's runner so the next run of the same
# process finds its environment warm (the engine makes a runner per run).
POOL = ServerPool()
