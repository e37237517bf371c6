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
