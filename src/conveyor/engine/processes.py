"""Whether a process still lives: how a run's owner, a heartbeat or a managed server is judged."""

from __future__ import annotations

import psutil


def process_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # it exists; it belongs to someone else
        return True
