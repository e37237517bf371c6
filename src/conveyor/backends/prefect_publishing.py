"""A run's tables published to Prefect after the run returned, by one thread per process.

Each table artifact is one API write, 20-25 ms on this machine and more on a busy server; awaited
before `run_with_prefect` returns, it is paid by every run, and by every partition of a backfill
before the next one starts. Here a thread publishes the tables, naming the flow run explicitly
(the run's context is gone by then), while the caller goes on. What is queued is published
before the interpreter exits: the thread is drained at the start of the interpreter's shutdown,
before Prefect's own event worker is (publishing an artifact emits an event). A failure is
logged; the run's outcome stands.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from uuid import UUID

log = logging.getLogger("conveyor.prefect")

DRAIN_SECONDS = 60  # at exit, the longest wait for tables still queued
_executor: ThreadPoolExecutor | None = None
_pending: set[Future[None]] = set()
_lock = threading.Lock()


@dataclass(frozen=True)
class Table:
    """A table artifact: its key (versions of one key are the artifact's history) and rows."""

    key: str
    rows: list[dict[str, Any]]
    description: str


def publish_tables(flow_run_id: str, tables: list[Table]) -> Future[None]:
    """Queue `tables` for publishing as table artifacts of flow run `flow_run_id`."""
    # the submitter's context: Prefect's settings (API URL, key) live in context variables
    context = contextvars.copy_context()
    future = _executor_for_process().submit(context.run, _publish, flow_run_id, tables)
    with _lock:
        _pending.add(future)
    future.add_done_callback(_finished)
    return future


def wait_for_publishing(timeout: float | None = None) -> None:
    """Block until every queued table is published (or its failure logged)."""
    with _lock:
        pending = list(_pending)
    for future in pending:
        future.exception(timeout)


def _executor_for_process() -> ThreadPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="conveyor-tables")
            # Exit hooks of this kind run newest first, as the interpreter starts shutting down.
            # Prefect's event worker registered its own when the first run emitted an event,
            # so this drain runs before that worker stops. (concurrent.futures joins the
            # thread too, but from a hook registered at import: after Prefect's.)
            threading._register_atexit(_drain)  # type: ignore[attr-defined]
        return _executor


def _drain() -> None:
    try:
        wait_for_publishing(DRAIN_SECONDS)
    except TimeoutError:
        log.warning("gave up waiting for run tables to reach Prefect after %s s", DRAIN_SECONDS)


def _finished(future: Future[None]) -> None:
    with _lock:
        _pending.discard(future)


def _publish(flow_run_id: str, tables: list[Table]) -> None:
    from prefect.artifacts import TableArtifact
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import ArtifactCreate

    from conveyor.backends.prefect_clients import client_settings

    try:
        # explicit httpx settings: a client of its own, never the run's (closed by now) that the
        # copied context holds
        with get_client(sync_client=True, httpx_settings=client_settings()) as client:
            for table in tables:
                client.create_artifact(
                    ArtifactCreate(
                        key=table.key,
                        type="table",
                        description=table.description,
                        # _sync: the copied context is an async one, Prefect's dispatch would
                        # otherwise hand back a coroutine
                        data=TableArtifact(table=table.rows).format(_sync=True),  # type: ignore[call-arg]
                        flow_run_id=UUID(flow_run_id),
                    )
                )
    except Exception as exc:  # the run ended as it ended; its tables are a report of it
        log.warning("could not publish the tables of flow run %s to Prefect: %s", flow_run_id, exc)
