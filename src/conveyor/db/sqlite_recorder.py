"""Recording runs into the embedded SQLite database with the standard library's sqlite3.

The run records are the hot path of every run: a cached re-run does nothing else. Through
SQLAlchemy they cost more to import than the whole rest of the re-run (measured in
benchmarks/hot_path.py), so the embedded database is written here, in plain SQL, with the same
rows and the same values SQLAlchemy writes (a unit test compares them column by column).
SQLAlchemy is imported only to create or upgrade the schema (the first run of a project) and
to explain an error; PostgreSQL is always recorded by `recorder.Recorder`.

Writes are batched: the records of cached and skipped steps (no attempt row) wait for the next
write of the run, a step start, a heartbeat or the run's end, so a fully cached run is two short
transactions, its start and its end. Crash detection, heartbeats and the error a run gets when
its record cannot be written are the same as `recorder.Recorder`'s.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from conveyor._runtime.hashing import compact_value, to_jsonable
from conveyor.db.revision import SCHEMA_REVISION
from conveyor.db.sqlite_file import SQLITE_BUSY_TIMEOUT, explain_sqlite
from conveyor.dsl.artifacts import ArtifactRef
from conveyor.engine.hooks import RunHooks
from conveyor.engine.processes import process_alive
from conveyor.engine.results import RunInfo, RunResult, StepResult
from conveyor.engine.settings import Settings
from conveyor.errors import ConveyorError, DatabaseError

log = logging.getLogger("conveyor.db")

HEARTBEAT_SECONDS = float(os.environ.get("CONVEYOR_HEARTBEAT_SECONDS", "10"))
STALE_AFTER_BEATS = 6
RUNNING, SUCCEEDED, FAILED, CRASHED = "running", "succeeded", "failed", "crashed"


def sqlite_path(settings: Settings) -> Path | None:
    """The file of the project's database when it is a plain SQLite file, else None."""
    url = settings.database_url
    if not url:
        return settings.home / "conveyor.db"
    prefix = "sqlite:///"
    if not url.startswith(prefix) or "?" in url or url[len(prefix) :] in ("", ":memory:"):
        return None
    return Path(url[len(prefix) :])


# ------------------------------------------------------------------------------ values


def sql_time(moment: datetime) -> str:
    """A timestamp as SQLAlchemy stores it in SQLite: naive UTC, microseconds always shown."""
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment!r}: conveyor stores aware (UTC) times")
    return moment.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else sql_time(moment)


def _day(day: date | None) -> str | None:
    return None if day is None else day.isoformat()


def _json(value: Any) -> str:
    return json.dumps(value)  # SQLAlchemy's JSON type: json.dumps, None as 'null'


def read_time(value: str | datetime) -> datetime:
    """A stored timestamp back as an aware UTC datetime."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _now() -> datetime:
    return datetime.now(UTC)


# ------------------------------------------------------------------------------ crashes


def crash_reason(
    host: str,
    pid: int,
    heartbeat: datetime,
    started: datetime,
    now: datetime,
    hostname: str,
    stale_seconds: float,
) -> str | None:
    """Why a run recorded as running is not (None: it may well be running).

    On this host the process decides: alive (and not a later process reusing its pid) means
    running, however long its heartbeat has been quiet (a database outage silences it). On
    another host only the heartbeat can tell.
    """
    if host == hostname:
        if pid == os.getpid() or process_alive(pid, since=read_time(started)):
            return None
        return f"its process (pid {pid} on {host}) is gone"
    if read_time(heartbeat) < now - timedelta(seconds=stale_seconds):
        return f"no heartbeat from pid {pid} on {host} since {heartbeat:%Y-%m-%d %H:%M:%S} UTC"
    return None


def crash_error(why: str, now: datetime) -> str:
    """The error a crashed run, its running steps and attempts are marked with."""
    return f"crashed: {why}; detected at the next start ({now:%Y-%m-%d %H:%M:%S} UTC)"


# ------------------------------------------------------------------------------ the recorder


class SqliteRecorder(RunHooks):
    """Writes runs, steps, attempts, artifact references and partition status to an SQLite
    file through sqlite3; the same records as `recorder.Recorder`.

    Required, like the SQLAlchemy recorder: a run whose own record cannot be written fails
    before its first step.
    """

    required = True

    def __init__(
        self, settings: Settings, path: Path, *, heartbeat_seconds: float = HEARTBEAT_SECONDS
    ) -> None:
        self.settings = settings
        self.path = path
        self.heartbeat_seconds = heartbeat_seconds
        self.hostname = socket.gethostname()
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # the recorder's state
        self._io = threading.Lock()  # the connection: one transaction at a time
        self._active: set[str] = set()
        self._known: dict[str, dict[str, ArtifactRef]] = {}  # run -> sha -> ref seen so far
        self._started: set[tuple[str, str]] = set()  # (run, step) with an attempt row
        self._pending: list[tuple[RunInfo, StepResult, dict[str, ArtifactRef]]] = []
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    # -------------------------------------------------------------------------- plumbing

    def _connect(self) -> sqlite3.Connection:
        """The open connection, the schema checked (created or upgraded through SQLAlchemy
        when it is not at this conveyor's revision: the first run of a project)."""
        if self._conn is not None:
            return self._conn
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path, timeout=SQLITE_BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
        )
        try:
            # the pragmas database.py sets on SQLAlchemy's connections, for the same reasons
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT * 1000)}")
            try:
                row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            except sqlite3.OperationalError as exc:
                if "no such table" not in str(exc):
                    raise
                row = None
            if row is None or row[0] != SCHEMA_REVISION:
                from conveyor.db.database import shared_database

                shared_database(self.settings).ensure_schema()  # creates or upgrades, or says why
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        with self._io:
            cursor = self._connect().cursor()
            cursor.execute("BEGIN IMMEDIATE")  # the write lock up front: writers queue up
            try:
                yield cursor
                self._flush(cursor)
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            cursor.execute("COMMIT")

    def _write(self, action: Any, *args: Any) -> None:
        """One write transaction (errors reach the hook chain, which logs them)."""
        with self._transaction() as cursor:
            action(cursor, *args)

    # -------------------------------------------------------------------------- hooks

    def run_started(self, *, run: RunInfo, **extra: Any) -> None:
        try:
            with self._transaction() as cursor:
                self._run_started(cursor, run)
        except (ConveyorError, sqlite3.Error, OSError) as exc:
            self._close()  # connect again at the next run
            cause = exc if isinstance(exc, ConveyorError) else explain_sqlite(str(self.path), exc)
            raise DatabaseError(
                f"cannot record run {run.run_id} of {run.pipeline!r} in the database "
                f"({self.settings.database_url or 'the embedded SQLite'}): "
                f"{str(cause).rstrip('.')}. Nothing ran. Bring the database back and run "
                f"again, or set CONVEYOR_DATABASE_URL=none to run without records"
            ) from exc
        with self._lock:
            self._active.add(run.run_id)
            self._known[run.run_id] = {}
            if self._beat is None or not self._beat.is_alive():
                self._stop.clear()
                self._beat = threading.Thread(
                    target=self._heartbeat, name="conveyor-heartbeat", daemon=True
                )
                self._beat.start()

    def _run_started(self, cursor: sqlite3.Cursor, run: RunInfo) -> None:
        now = _now()
        mark_crashed(cursor, now, self.hostname, self.heartbeat_seconds * STALE_AFTER_BEATS)
        start, end = run.partition or (None, None)
        cursor.execute(
            "INSERT INTO conveyor_runs (run_id, pipeline, status, params, partition_start, "
            "partition_end, engine, runner, project_root, tags, code_version, hostname, pid, "
            "started_at, heartbeat_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run.run_id, run.pipeline, RUNNING, _json(to_jsonable(run.params)), _day(start),
                _day(end), run.engine, run.runner, run.project_root, _json(list(run.tags)),
                _json(to_jsonable(run.code_version)), self.hostname, os.getpid(),
                sql_time(run.started_at), sql_time(now),
            ),
        )  # fmt: skip
        _set_partitions(cursor, run, RUNNING, now)

    def step_started(
        self, *, run: RunInfo, step: str, attempt: int, reason: str, **extra: Any
    ) -> None:
        with self._lock:
            self._started.add((run.run_id, step))
        self._write(_step_started, run, step, attempt, reason)

    def attempt_failed(
        self, *, run: RunInfo, step: str, attempt: int, error: str, **extra: Any
    ) -> None:
        self._write(_attempt_failed, run, step, attempt, error)

    def step_finished(self, *, run: RunInfo, result: StepResult, **extra: Any) -> None:
        with self._lock:
            inputs = artifact_inputs(self._known.setdefault(run.run_id, {}), result)
            attempted = (run.run_id, result.name) in self._started
            self._started.discard((run.run_id, result.name))
            if not attempted:  # cached or skipped: written with the run's next write
                self._pending.append((run, result, inputs))
                return
        self._write(_step_finished, run, result, inputs, True)

    def run_finished(self, *, run: RunInfo, result: RunResult, **extra: Any) -> None:
        try:
            self._write(_run_finished, run, result)
        finally:
            with self._lock:
                self._active.discard(run.run_id)
                self._known.pop(run.run_id, None)
                self._started = {k for k in self._started if k[0] != run.run_id}
                self._pending = [p for p in self._pending if p[0].run_id != run.run_id]
                idle = not self._active
                if idle:
                    self._stop.set()
            if idle:  # no connection held between runs: the next run sees the file as it is
                self._close()

    def _flush(self, cursor: sqlite3.Cursor) -> None:
        """Write the step records waiting for a transaction (called inside one)."""
        with self._lock:
            pending, self._pending = self._pending, []
        for run, result, inputs in pending:
            _step_finished(cursor, run, result, inputs, False)

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

    def _close(self) -> None:
        with self._io:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def close(self) -> None:
        """Stop the heartbeat thread and close the connection."""
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
        self._close()


# ------------------------------------------------------------------------------ statements


def _step_started(
    cursor: sqlite3.Cursor, run: RunInfo, step: str, attempt: int, reason: str
) -> None:
    now = sql_time(_now())
    cursor.execute(  # an earlier attempt still open was retried: it failed
        "UPDATE conveyor_step_attempts SET status = ?, finished_at = ? "
        "WHERE run_id = ? AND step = ? AND status = ?",
        (FAILED, now, run.run_id, step, RUNNING),
    )
    cursor.execute(
        "INSERT INTO conveyor_step_attempts (run_id, step, attempt, status, reason, started_at, "
        "heartbeat_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (run.run_id, step, attempt, RUNNING, reason, now, now),
    )
    _upsert_step(
        cursor,
        run.run_id,
        step,
        {"status": RUNNING, "reason": reason, "attempts": attempt, "started_at": now},
    )


def _attempt_failed(
    cursor: sqlite3.Cursor, run: RunInfo, step: str, attempt: int, error: str
) -> None:
    cursor.execute(
        "UPDATE conveyor_step_attempts SET status = ?, finished_at = ?, error = ? "
        "WHERE run_id = ? AND step = ? AND attempt = ?",
        (FAILED, sql_time(_now()), error, run.run_id, step, attempt),
    )


def artifact_inputs(known: dict[str, ArtifactRef], result: StepResult) -> dict[str, ArtifactRef]:
    """The step's inputs that are artifacts of this run (`known`: by content hash); adds the
    step's own outputs to `known` for the steps after it."""
    inputs = {
        name: known[value]
        for name, value in result.inputs.items()
        if isinstance(value, str) and value in known
    }
    known.update({ref.sha256: ref for ref in result.artifacts.values()})
    return inputs


def _step_finished(
    cursor: sqlite3.Cursor,
    run: RunInfo,
    result: StepResult,
    inputs: dict[str, ArtifactRef],
    attempted: bool,
) -> None:
    now = sql_time(_now())
    fields = {
        "kind": result.kind,
        "status": result.status,
        "reason": result.reason,
        "attempts": result.attempts,
        "cache_key": result.cache_key,
        "environment": result.environment,
        # a large literal input is the run's parameter: recorded there once, here by hash
        "inputs": _json({name: compact_value(value) for name, value in result.inputs.items()}),
        "outputs": _json({name: ref.to_dict() for name, ref in result.artifacts.items()}),
        "metrics": _json(result.metrics),
        "timings": _json(to_jsonable(result.timings)),
        "started_at": _time(result.started_at),
        "finished_at": now,
        "duration": result.duration,
        "error": result.error,
        "log_path": result.log_path,
    }
    _upsert_step(cursor, run.run_id, result.name, fields)
    if attempted:  # cached and skipped steps never started an attempt
        cursor.execute(
            "UPDATE conveyor_step_attempts SET status = ?, finished_at = ?, error = ? "
            "WHERE run_id = ? AND step = ? AND status = ?",
            (result.status, now, result.error, run.run_id, result.name, RUNNING),
        )
    refs = [("output", n, r) for n, r in result.artifacts.items()]
    refs += [("input", n, r) for n, r in inputs.items()]
    if refs:
        cursor.executemany(
            "INSERT INTO conveyor_artifact_refs (sha256, format, json_type, size, run_id, step, "
            "role, name, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (ref.sha256, ref.codec.format, ref.codec.json_type, ref.size, run.run_id,
                 result.name, role, name, now)
                for role, name, ref in refs
            ],
        )  # fmt: skip


def _run_finished(cursor: sqlite3.Cursor, run: RunInfo, result: RunResult) -> None:
    now = _now()
    cursor.execute(
        "UPDATE conveyor_runs SET status = ?, finished_at = ?, heartbeat_at = ?, duration = ?, "
        "plan_seconds = ?, error = ? WHERE run_id = ?",
        (result.status, sql_time(now), sql_time(now), result.duration, result.plan_seconds,
         result.error, run.run_id),
    )  # fmt: skip
    _set_partitions(cursor, run, SUCCEEDED if result.status == SUCCEEDED else FAILED, now)


def _beat(cursor: sqlite3.Cursor, run_ids: list[str]) -> None:
    now = sql_time(_now())
    marks = ", ".join("?" * len(run_ids))
    for table in ("conveyor_runs", "conveyor_step_attempts"):
        cursor.execute(
            f"UPDATE {table} SET heartbeat_at = ? WHERE run_id IN ({marks}) AND status = ?",
            (now, *run_ids, RUNNING),
        )


STEP_DEFAULTS = {
    "kind": "", "status": RUNNING, "reason": "", "attempts": 0, "inputs": "{}", "outputs": "{}",
    "timings": "{}",
}  # fmt: skip


def _upsert_step(cursor: sqlite3.Cursor, run_id: str, step: str, fields: dict[str, Any]) -> None:
    """Insert the step's row, or update the one its start created: one statement either way."""
    values = {**STEP_DEFAULTS, **fields, "run_id": run_id, "step": step}
    columns = ", ".join(values)
    marks = ", ".join("?" * len(values))
    updates = ", ".join(f"{name} = excluded.{name}" for name in fields)
    cursor.execute(
        f"INSERT INTO conveyor_step_runs ({columns}) VALUES ({marks}) "
        f"ON CONFLICT (run_id, step) DO UPDATE SET {updates}",
        tuple(values.values()),
    )


def _set_partitions(cursor: sqlite3.Cursor, run: RunInfo, status: str, now: datetime) -> None:
    if not run.partition_dates:
        return
    days = [day.isoformat() for day in run.partition_dates]
    for at in range(0, len(days), 500):  # SQLite's limit on bound parameters
        chunk = days[at : at + 500]
        cursor.execute(
            f"DELETE FROM conveyor_partitions WHERE pipeline = ? AND partition_date IN "
            f"({', '.join('?' * len(chunk))})",
            (run.pipeline, *chunk),
        )
    cursor.executemany(
        "INSERT INTO conveyor_partitions (pipeline, partition_date, status, run_id, updated_at) "
        "VALUES (?, ?, ?, ?, ?)",
        [(run.pipeline, day, status, run.run_id, sql_time(now)) for day in days],
    )


def mark_crashed(
    cursor: sqlite3.Cursor, now: datetime, hostname: str, stale_seconds: float
) -> list[str]:
    """Mark runs left `running` by a process that is gone as `crashed`; return their ids."""
    rows = cursor.execute(
        "SELECT run_id, hostname, pid, heartbeat_at, started_at FROM conveyor_runs "
        "WHERE status = ?",
        (RUNNING,),
    ).fetchall()
    crashed: dict[str, str] = {}
    for run_id, host, pid, heartbeat, started in rows:
        why = crash_reason(host, pid, read_time(heartbeat), read_time(started), now, hostname,
                           stale_seconds)  # fmt: skip
        if why is not None:
            crashed[run_id] = why
    stamp = sql_time(now)
    for run_id, why in crashed.items():
        error = crash_error(why, now)
        cursor.execute(
            "UPDATE conveyor_runs SET status = ?, finished_at = ?, error = ? WHERE run_id = ?",
            (CRASHED, stamp, error, run_id),
        )
        for table in ("conveyor_step_runs", "conveyor_step_attempts"):
            cursor.execute(
                f"UPDATE {table} SET status = ?, finished_at = ?, error = ? "
                f"WHERE run_id = ? AND status = ?",
                (CRASHED, stamp, error, run_id, RUNNING),
            )
        cursor.execute(
            "UPDATE conveyor_partitions SET status = ?, updated_at = ? "
            "WHERE run_id = ? AND status = ?",
            (FAILED, stamp, run_id, RUNNING),
        )
        log.warning("run %s %s", run_id, error)
    return list(crashed)
