"""Child processes for steps: streamed output, a timeout that kills the whole process tree."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

KILL_GRACE_SECONDS = 3.0


@dataclass(frozen=True, slots=True)
class ProcessOutcome:
    returncode: int
    stderr_tail: str
    timed_out: bool


class ProcessGroup:
    """Live step processes of one runner, so an interrupted run can kill them all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: set[subprocess.Popen[str]] = set()

    def add(self, proc: subprocess.Popen[str]) -> None:
        with self._lock:
            self._live.add(proc)

    def discard(self, proc: subprocess.Popen[str]) -> None:
        with self._lock:
            self._live.discard(proc)

    def kill_all(self) -> None:
        with self._lock:
            live = list(self._live)
        for proc in live:
            _kill_group(proc, signal.SIGKILL)


def _kill_group(proc: subprocess.Popen[str], sig: signal.Signals) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _descendants(proc: subprocess.Popen[str]) -> list[Any]:
    """Every process below `proc`, found while their parents live: a child that called setsid
    left the process group but not the tree (inside a sandbox's PID namespace none of this is
    needed: killing its outer process ends every process in it)."""
    import psutil

    try:
        return list(psutil.Process(proc.pid).children(recursive=True))
    except psutil.Error:
        return []


def _kill_tree(proc: subprocess.Popen[str], descendants: list[Any]) -> None:
    import psutil

    _kill_group(proc, signal.SIGKILL)
    for child in descendants:
        try:
            child.kill()
        except psutil.Error:
            pass


def _pump(stream: IO[str], sink: Callable[[str], None], tail: deque[str] | None) -> None:
    for line in stream:
        line = line.rstrip("\n")
        sink(line)
        if tail is not None:
            tail.append(line)
    stream.close()


def run_process(
    command: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str | Path,
    timeout: float | None,
    log: Callable[[str], None],
    group: ProcessGroup | None = None,
    grace: float = KILL_GRACE_SECONDS,
) -> ProcessOutcome:
    """Run `command` in its own session; stream its lines to `log`; kill it after `timeout`
    (SIGTERM, then SIGKILL after `grace` seconds; at once when `grace` is 0)."""
    proc = subprocess.Popen(
        list(command),
        env=dict(env),
        cwd=str(cwd),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        bufsize=1,
        start_new_session=True,
    )
    if group is not None:
        group.add(proc)
    tail: deque[str] = deque(maxlen=40)
    assert proc.stdout is not None and proc.stderr is not None
    readers = [
        threading.Thread(target=_pump, args=(proc.stdout, log, None), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr, log, tail), daemon=True),
    ]
    for reader in readers:
        reader.start()
    timed_out = False
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        descendants = _descendants(proc)
        if grace > 0:
            _kill_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        _kill_tree(proc, descendants)
        proc.wait()
    except BaseException:  # Ctrl-C in the orchestrator: the step must not outlive it
        _kill_group(proc, signal.SIGKILL)
        proc.wait()
        raise
    finally:
        if group is not None:
            group.discard(proc)
    _kill_group(proc, signal.SIGKILL)  # grandchildren left behind in the group
    for reader in readers:
        reader.join(timeout=5)
    return ProcessOutcome(proc.returncode, "\n".join(tail), timed_out)
