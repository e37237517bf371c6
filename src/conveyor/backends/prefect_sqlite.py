"""`prefect server start` whose SQLite write transactions wait for the lock instead of failing.

Prefect's server on SQLite (its default, and the database of `conveyor ui`'s server) begins its
write transactions DEFERRED. One that reads before it writes cannot take the write lock once
another writer has committed since its read, and SQLite fails it at once instead of waiting out
the busy timeout. The server answers 503 and the client retries two seconds later, then four
(prefect#18934). Just after a run the server records that run's task runs from its events, so
the next run's creation met this nearly every time: an in-process 30-partition backfill took
86.7 s with 20 such retries. With every write transaction begun IMMEDIATE (it takes the write
lock first, waiting for it up to the busy timeout) the same backfill took 3.1 s with none.
Readers are not affected: Prefect begins no transaction for a plain read.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

log = logging.getLogger("conveyor.prefect")


def immediate_sqlite_writes() -> bool:
    """Begin Prefect's SQLite write transactions IMMEDIATE; False if Prefect changed shape."""
    try:
        from prefect.server.database.configurations import AioSqliteConfiguration
    except ImportError:
        return False
    original = AioSqliteConfiguration.begin_transaction
    if getattr(original, "conveyor_immediate", False):
        return True
    if "with_for_update" not in inspect.signature(original).parameters:
        return False

    @asynccontextmanager
    async def begin_transaction(
        self: Any, session: Any, with_for_update: bool = False
    ) -> AsyncIterator[Any]:
        async with original(self, session, with_for_update=True) as transaction:
            yield transaction

    begin_transaction.conveyor_immediate = True  # type: ignore[attr-defined]
    AioSqliteConfiguration.begin_transaction = begin_transaction  # type: ignore[method-assign]
    return True


def main() -> None:
    """Prefect's CLI (`server start ...`) with SQLite write transactions begun IMMEDIATE."""
    if not immediate_sqlite_writes():
        log.warning(
            "this Prefect version's SQLite configuration has no begin_transaction(with_for_update)"
            "; the server may answer 503 while it records runs (prefect#18934)"
        )
    from prefect.cli import app

    app()


if __name__ == "__main__":
    main()
