"""The embedded SQLite file's conventions shared by SQLAlchemy's engine and the standard-library
recorder: how long a writer waits, and what an error on the file means (standard library only).
"""

from __future__ import annotations

import os
from pathlib import Path

SQLITE_BUSY_TIMEOUT = 600.0  # seconds a writer waits for another writer's transaction


def explain_sqlite(path: str | None, exc: BaseException) -> str:
    """The driver's message for `exc`, or, for an SQLite file this process may not write,
    which file or folder that is and what to do."""
    message = str(getattr(exc, "orig", None) or exc)
    if not path or path == ":memory:" or path.startswith("file:"):
        return message
    file = Path(path).resolve()
    fix = (
        "conveyor writes run records and tables to it on every run. Give this user write "
        "permission, or set CONVEYOR_DATABASE_URL to a database it can write"
    )
    if file.exists() and not os.access(file, os.W_OK):
        return f"the SQLite database file {file} is read-only ({message}); {fix}"
    if file.parent.exists() and not os.access(file.parent, os.W_OK | os.X_OK):
        return (
            f"the folder of the SQLite database, {file.parent}, is read-only ({message}): "
            f"SQLite creates {file.name}-wal and {file.name}-shm beside the file; {fix}"
        )
    if "readonly" in message or "read-only" in message:
        return f"the SQLite database file {file} is read-only ({message}); {fix}"
    return message
