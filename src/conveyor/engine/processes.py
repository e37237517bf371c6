"""Whether a process still lives: how a run's owner, a heartbeat or a managed server is judged."""

from __future__ import annotations

from datetime import datetime


def process_alive(pid: int, since: datetime | None = None) -> bool:
    """Whether a process with this pid exists on this host and is not a zombie; with `since`
    (when the process was known to run), also that it is the same process, not a reuse of
    its pid by one started later."""
    import psutil  # imported here: a run imports this module, and rarely has a process to judge

    try:
        process = psutil.Process(pid)
        if since is not None and process.create_time() > since.timestamp() + 1:
            return False
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # it exists; it belongs to someone else
        return True


def release_children(grace: float = 5.0) -> list[int]:
    """Stop this process's child processes: SIGTERM, then SIGKILL after `grace` seconds.

    How a stopping serve or worker releases the flow runs it executes: each run's process ends
    (Prefect records it crashed, conveyor records it interrupted), so another worker or a
    `--resume` runs those partitions again. Returns the pids that were stopped.
    """
    import psutil

    children = psutil.Process().children(recursive=False)
    for child in children:
        try:
            child.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(children, timeout=grace)
    for child in alive:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=2)
    return [child.pid for child in children]
