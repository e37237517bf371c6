"""Recording runs into conveyor's database through the engine's run hooks, with SQLAlchemy
(PostgreSQL, and any SQLite URL `sqlite_recorder` does not take: it writes the embedded file).

Each hook is one short write transaction (an SQLite WAL commit is well under a millisecond;
PostgreSQL one round trip per statement). While runs are active a heartbeat thread stamps them
every `CONVEYOR_HEARTBEAT_SECONDS` (default 10). When a run starts, runs still marked `running`
whose process is gone (same host, pid no longer alive) or whose heartbeat is older than
`STALE_AFTER_BEATS` beats are marked `crashed` — "detected at the next start" — with their
running steps and attempts, and their partitions marked failed.

If the database cannot be opened, the recorder logs one warning and stops recording: a run
never fails because its record could not be written.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from conveyor._runtime.hashing import compact_value, to_jsonable
from conveyor.db.database import Database, shared_database
from conveyor.db.models import (
    CRASHED,
    FAILED,
    RUNNING,
    SUCCEEDED,
    ArtifactRefRow,
    PartitionStatus,
    PipelineRun,
    StepAttempt,
    StepRun,
    table_of,
)
from conveyor.db.sqlite_recorder import (
    HEARTBEAT_SECONDS as HEARTBEAT_SECONDS,
)
from conveyor.db.sqlite_recorder import (
    STALE_AFTER_BEATS as STALE_AFTER_BEATS,
)
from conveyor.db.sqlite_recorder import (
    artifact_inputs,
    crash_error,
)
from conveyor.db.sqlite_recorder import (
    crash_reason as crash_reason,
)
from conveyor.dsl.artifacts import ArtifactRef
from conveyor.engine.hooks import RunHooks
from conveyor.engine.results import RunInfo, RunResult, StepResult
from conveyor.engine.settings import Settings
from conveyor.errors import ConveyorError, DatabaseError

if TYPE_CHECKING:
    from sqlalchemy.dialects import postgresql, sqlite

log = logging.getLogger("conveyor.db")

RUNS = table_of(PipelineRun)
STEPS = table_of(StepRun)
ATTEMPTS = table_of(StepAttempt)
PARTITIONS = table_of(PartitionStatus)
REFS = table_of(ArtifactRefRow)


def _now() -> datetime:
    return datetime.now(UTC)


class Recorder(RunHooks):
    """Writes runs, steps, attempts, artifact references and partition status.

    Required: when the run's own record cannot be written (the database is unreachable), the
    run fails before its first step, so no data is ever written by an unrecorded run and every
    step and attempt row refers to a run that exists.
    """

    required = True

    def __init__(
        self,
        settings: Settings,
        *,
        database: Database | None = None,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
    ) -> None:
        self.settings = settings
        self.heartbeat_seconds = heartbeat_seconds
        self.hostname = socket.gethostname()
        self._database = database
        self._disabled = False
        self._lock = threading.Lock()
        self._active: set[str] = set()
        self._known: dict[str, dict[str, ArtifactRef]] = {}  # run -> sha -> ref seen so far
        self._started: set[tuple[str, str]] = set()  # (run, step) with an attempt row
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    # -------------------------------------------------------------------------- plumbing

    def _db(self, strict: bool = False) -> Database | None:
        """The database; None once it failed (`strict`: raise instead, and try again later)."""
        with self._lock:
            if self._disabled and not strict:
                return None
            if self._database is None:
                try:
                    database = shared_database(self.settings)
                    database.ensure_schema()
                except (ConveyorError, sa.exc.SQLAlchemyError) as exc:
                    if strict:
                        raise
                    log.warning("not recording runs: %s", exc)
                    self._disabled = True
                    return None
                self._database = database
                self._disabled = False
            return self._database

    def _write(self, action: Any, *args: Any) -> None:
        db = self._db()
        if db is None:
            return
        with db.write() as conn:
            action(conn, *args)

    # -------------------------------------------------------------------------- hooks

    def run_started(self, *, run: RunInfo, **extra: Any) -> None:
        try:
            db = self._db(strict=True)
            assert db is not None  # strict: raises instead
            with db.write() as conn:
                self._run_started(conn, run)
        except (ConveyorError, sa.exc.SQLAlchemyError) as exc:
            database = self._database
            shown = getattr(database, "display_url", None) or self.settings.database_url
            explain = isinstance(exc, sa.exc.SQLAlchemyError) and database is not None
            cause = database.explain(exc) if explain and database is not None else str(exc)
            with self._lock:
                self._database = None  # connect again at the next run
            raise DatabaseError(
                f"cannot record run {run.run_id} of {run.pipeline!r} in the database "
                f"({shown or 'the embedded SQLite'}): {cause.rstrip('.')}. Nothing ran. Bring "
                f"the database back and run again, or set CONVEYOR_DATABASE_URL=none to run "
                f"without records"
            ) from exc
        with self._lock:
            if self._disabled:
                return
            self._active.add(run.run_id)
            self._known[run.run_id] = {}
            if self._beat is None or not self._beat.is_alive():
                self._stop.clear()
                self._beat = threading.Thread(
                    target=self._heartbeat, name="conveyor-heartbeat", daemon=True
                )
                self._beat.start()

    def _run_started(self, conn: Connection, run: RunInfo) -> None:
        now = _now()
        mark_crashed(conn, now, self.hostname, self.heartbeat_seconds * STALE_AFTER_BEATS)
        start, end = run.partition or (None, None)
        conn.execute(
            sa.insert(RUNS).values(
                run_id=run.run_id,
                pipeline=run.pipeline,
                status=RUNNING,
                params=to_jsonable(run.params),
                partition_start=start,
                partition_end=end,
                engine=run.engine,
                runner=run.runner,
                project_root=run.project_root,
                tags=list(run.tags),
                code_version=to_jsonable(run.code_version),
                hostname=self.hostname,
                pid=os.getpid(),
                started_at=run.started_at,
                heartbeat_at=now,
            )
        )
        _set_partitions(conn, run, RUNNING, now)

    def step_started(
        self, *, run: RunInfo, step: str, attempt: int, reason: str, **extra: Any
    ) -> None:
        with self._lock:
            self._started.add((run.run_id, step))
        self._write(self._step_started, run, step, attempt, reason)

    def _step_started(
        self, conn: Connection, run: RunInfo, step: str, attempt: int, reason: str
    ) -> None:
        now = _now()
        mine = (ATTEMPTS.c.run_id == run.run_id) & (ATTEMPTS.c.step == step)
        conn.execute(  # an earlier attempt still open was retried: it failed
            sa.update(ATTEMPTS)
            .where(mine, ATTEMPTS.c.status == RUNNING)
            .values(status=FAILED, finished_at=now)
        )
        conn.execute(
            sa.insert(ATTEMPTS).values(
                run_id=run.run_id, step=step, attempt=attempt, status=RUNNING, reason=reason,
                started_at=now, heartbeat_at=now,
            )
        )  # fmt: skip
        _upsert_step(
            conn,
            run.run_id,
            step,
            {"status": RUNNING, "reason": reason, "attempts": attempt, "started_at": now},
        )

    def attempt_failed(
        self, *, run: RunInfo, step: str, attempt: int, error: str, **extra: Any
    ) -> None:
        self._write(self._attempt_failed, run, step, attempt, error)

    def _attempt_failed(
        self, conn: Connection, run: RunInfo, step: str, attempt: int, error: str
    ) -> None:
        conn.execute(
            sa.update(ATTEMPTS)
            .where(
                ATTEMPTS.c.run_id == run.run_id,
                ATTEMPTS.c.step == step,
                ATTEMPTS.c.attempt == attempt,
            )
            .values(status=FAILED, finished_at=_now(), error=error)
        )

    def step_finished(self, *, run: RunInfo, result: StepResult, **extra: Any) -> None:
        with self._lock:
            inputs = artifact_inputs(self._known.setdefault(run.run_id, {}), result)
            attempted = (run.run_id, result.name) in self._started
            self._started.discard((run.run_id, result.name))
        self._write(self._step_finished, run, result, inputs, attempted)

    def _step_finished(
        self,
        conn: Connection,
        run: RunInfo,
        result: StepResult,
        inputs: dict[str, ArtifactRef],
        attempted: bool,
    ) -> None:
        now = _now()
        fields = {
            "kind": result.kind,
            "status": result.status,
            "reason": result.reason,
            "attempts": result.attempts,
            "cache_key": result.cache_key,
            "environment": result.environment,
            # a large literal input is the run's parameter: recorded there once, here by hash
            "inputs": {name: compact_value(value) for name, value in result.inputs.items()},
            "outputs": {name: ref.to_dict() for name, ref in result.artifacts.items()},
            "metrics": result.metrics,
            "timings": to_jsonable(result.timings),
            "started_at": result.started_at,
            "finished_at": now,
            "duration": result.duration,
            "error": result.error,
            "log_path": result.log_path,
        }
        _upsert_step(conn, run.run_id, result.name, fields)
        if attempted:  # cached and skipped steps never started an attempt
            conn.execute(
                sa.update(ATTEMPTS)
                .where(
                    ATTEMPTS.c.run_id == run.run_id,
                    ATTEMPTS.c.step == result.name,
                    ATTEMPTS.c.status == RUNNING,
                )
                .values(status=result.status, finished_at=now, error=result.error)
            )
        refs = [("output", n, r) for n, r in result.artifacts.items()]
        refs += [("input", n, r) for n, r in inputs.items()]
        if refs:
            conn.execute(
                sa.insert(REFS),
                [
                    {
                        "sha256": ref.sha256, "format": ref.codec.format,
                        "json_type": ref.codec.json_type, "size": ref.size, "run_id": run.run_id,
                        "step": result.name, "role": role, "name": name, "created_at": now,
                    }
                    for role, name, ref in refs
                ],
            )  # fmt: skip

    def run_finished(self, *, run: RunInfo, result: RunResult, **extra: Any) -> None:
        try:
            self._write(self._run_finished, run, result)
        finally:
            with self._lock:
                self._active.discard(run.run_id)
                self._known.pop(run.run_id, None)
                self._started = {k for k in self._started if k[0] != run.run_id}
                if not self._active:
                    self._stop.set()

    def _run_finished(self, conn: Connection, run: RunInfo, result: RunResult) -> None:
        now = _now()
        conn.execute(
            sa.update(RUNS)
            .where(RUNS.c.run_id == run.run_id)
            .values(
                status=result.status, finished_at=now, heartbeat_at=now,
                duration=result.duration, plan_seconds=result.plan_seconds, error=result.error,
            )
        )  # fmt: skip
        _set_partitions(conn, run, SUCCEEDED if result.status == SUCCEEDED else FAILED, now)

    # -------------------------------------------------------------------------- heartbeat

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_seconds):
            with self._lock:
                active = sorted(self._active)
            if active:
                try:
                    self._write(_beat, active)
                except Exception:  # never let the heartbeat thread die on a hiccup
                    log.warning("heartbeat failed", exc_info=True)

    def close(self) -> None:
        """Stop the heartbeat thread (the database is shared; it stays open)."""
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)


def _beat(conn: Connection, run_ids: list[str]) -> None:
    now = _now()
    conn.execute(
        sa.update(RUNS)
        .where(RUNS.c.run_id.in_(run_ids), RUNS.c.status == RUNNING)
        .values(heartbeat_at=now)
    )
    conn.execute(
        sa.update(ATTEMPTS)
        .where(ATTEMPTS.c.run_id.in_(run_ids), ATTEMPTS.c.status == RUNNING)
        .values(heartbeat_at=now)
    )


def _upsert_step(conn: Connection, run_id: str, step: str, fields: dict[str, Any]) -> None:
    """Insert the step's row, or update the one its start created: one statement either way."""
    # each dialect has its own upsert; both take the arguments used below
    insert: Callable[[sa.Table], postgresql.Insert | sqlite.Insert]
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    defaults = {
        "kind": "", "status": RUNNING, "reason": "", "attempts": 0, "inputs": {},
        "outputs": {}, "timings": {},
    }  # fmt: skip
    statement = insert(STEPS).values(**{**defaults, **fields}, run_id=run_id, step=step)
    conn.execute(statement.on_conflict_do_update(index_elements=["run_id", "step"], set_=fields))


def _set_partitions(conn: Connection, run: RunInfo, status: str, now: datetime) -> None:
    if not run.partition_dates:
        return
    where = (PARTITIONS.c.pipeline == run.pipeline) & PARTITIONS.c.partition_date.in_(
        run.partition_dates
    )
    conn.execute(sa.delete(PARTITIONS).where(where))
    conn.execute(
        sa.insert(PARTITIONS),
        [
            {"pipeline": run.pipeline, "partition_date": day, "status": status,
             "run_id": run.run_id, "updated_at": now}
            for day in run.partition_dates
        ],
    )  # fmt: skip


def mark_crashed(conn: Connection, now: datetime, hostname: str, stale_seconds: float) -> list[str]:
    """Mark runs left `running` by a process that is gone as `crashed`; return their ids."""
    rows = conn.execute(
        sa.select(
            RUNS.c.run_id, RUNS.c.hostname, RUNS.c.pid, RUNS.c.heartbeat_at, RUNS.c.started_at
        ).where(RUNS.c.status == RUNNING)
    ).all()
    crashed: dict[str, str] = {}
    for run_id, host, pid, heartbeat, started in rows:
        why = crash_reason(host, pid, heartbeat, started, now, hostname, stale_seconds)
        if why is not None:
            crashed[run_id] = why
    for run_id, why in crashed.items():
        error = crash_error(why, now)
        conn.execute(
            sa.update(RUNS)
            .where(RUNS.c.run_id == run_id)
            .values(status=CRASHED, finished_at=now, error=error)
        )
        for table in (STEPS, ATTEMPTS):
            conn.execute(
                sa.update(table)
                .where(table.c.run_id == run_id, table.c.status == RUNNING)
                .values(status=CRASHED, finished_at=now, error=error)
            )
        conn.execute(
            sa.update(PARTITIONS)
            .where(PARTITIONS.c.run_id == run_id, PARTITIONS.c.status == RUNNING)
            .values(status=FAILED, updated_at=now)
        )
        log.warning("run %s %s", run_id, error)
    return list(crashed)
