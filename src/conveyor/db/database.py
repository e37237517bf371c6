"""Connections to conveyor's database: URLs, SQLite and PostgreSQL set-up, schema upgrades.

The default is an SQLite file, `<home>/conveyor.db`, that creates and upgrades its own schema on
first use. `CONVEYOR_DATABASE_URL` (or `database_url` under `[tool.conveyor]`) selects
PostgreSQL through psycopg 3; `postgresql://` URLs are rewritten to `postgresql+psycopg://`.

Opening a database costs one query when the schema is current: the stored Alembic revision is
compared with `SCHEMA_REVISION`, and Alembic itself is imported only when they differ. An empty
database (no conveyor tables yet) is created on first use on both back ends; an existing
PostgreSQL database at an older revision is left for `conveyor db upgrade`, because upgrading a
shared production database should be deliberate.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, make_url

from conveyor.db.revision import SCHEMA_REVISION
from conveyor.db.sqlite_file import SQLITE_BUSY_TIMEOUT, explain_sqlite
from conveyor.engine.settings import Settings
from conveyor.errors import DatabaseError

MIGRATIONS = Path(__file__).parent / "migrations"


def default_url(settings: Settings) -> str:
    """The embedded SQLite database of a project: `<home>/conveyor.db`."""
    return sa.URL.create("sqlite", database=str(settings.home / "conveyor.db")).render_as_string()


def normalize_url(url: str) -> str:
    """Accept SQLite and PostgreSQL URLs; PostgreSQL always goes through psycopg 3."""
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError as exc:
        raise DatabaseError(f"database URL {url!r} is not a URL ({exc})") from exc
    backend, _, driver = parsed.drivername.partition("+")
    if backend in ("postgresql", "postgres"):
        if driver not in ("", "psycopg"):
            raise DatabaseError(
                f"database URL uses the {driver!r} driver; conveyor talks to PostgreSQL through "
                f"psycopg 3: write postgresql://... or postgresql+psycopg://..."
            )
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif backend != "sqlite":
        raise DatabaseError(
            f"database URL {parsed.render_as_string(hide_password=True)!r}: conveyor supports "
            f"SQLite (sqlite:///path) and PostgreSQL (postgresql://...)"
        )
    return parsed.render_as_string(hide_password=False)


def lock_key(*parts: object) -> int:
    """A signed 64-bit key for PostgreSQL advisory locks, stable across processes."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


# One engine per database and process, as SQLAlchemy intends: its pool and its cache of compiled
# statements then outlive a single run, which is most of what recording a cached run costs
# (measured: ~20 ms per run with a fresh engine, ~5 ms with a warm one). Keyed by pid too, so a
# forked child never reuses its parent's connections.
_SHARED: dict[tuple[int, str], Database] = {}
_SHARED_LOCK = threading.Lock()


def shared_database(settings: Settings) -> Database:
    """The process-wide Database of a project (created, and its schema checked, once)."""
    url = normalize_url(settings.database_url or default_url(settings))
    key = (os.getpid(), url)
    with _SHARED_LOCK:
        database = _SHARED.get(key)
        if database is None:
            database = _SHARED[key] = Database(url)
        return database


def dispose_shared() -> None:
    """Close every shared Database's connections and forget them (tests, long-lived hosts)."""
    with _SHARED_LOCK:
        databases = list(_SHARED.values())
        _SHARED.clear()
    for database in databases:
        database.close()


@contextmanager
def using(target: Settings | Database) -> Iterator[Database]:
    """`target` itself, or the shared Database of a project's settings."""
    yield target if isinstance(target, Database) else shared_database(target)


class Database:
    """An SQLAlchemy engine on conveyor's database, with its schema checked on first use."""

    def __init__(self, url: str, *, upgrade: bool = True) -> None:
        self.url = normalize_url(url)
        parsed = make_url(self.url)
        self.dialect = "sqlite" if parsed.drivername.startswith("sqlite") else "postgresql"
        self.display_url = parsed.render_as_string(hide_password=True)
        if self.dialect == "sqlite":
            self.engine = _sqlite_engine(parsed)
        else:
            self.engine = sa.create_engine(self.url, pool_pre_ping=True)
        self._checked = False
        self._upgrade = upgrade

    @classmethod
    def from_settings(cls, settings: Settings, *, upgrade: bool = True) -> Database:
        """The project's database: `settings.database_url`, else the embedded SQLite file."""
        return cls(settings.database_url or default_url(settings), upgrade=upgrade)

    def __repr__(self) -> str:
        return f"<Database {self.display_url}>"

    # -------------------------------------------------------------------------- transactions

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction: `BEGIN IMMEDIATE` on SQLite (writers queue up, never deadlock)."""
        self.ensure_schema()
        with self._connect() as conn:
            conn = conn.execution_options(conveyor_begin="IMMEDIATE")
            with conn.begin():
                yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction (a consistent snapshot)."""
        self.ensure_schema()
        with self._connect() as conn, conn.begin():
            yield conn

    def _connect(self) -> Connection:
        try:
            return self.engine.connect()
        except sa.exc.OperationalError as exc:
            if self.dialect == "sqlite":  # a file, not a server: say what is wrong with it
                raise DatabaseError(f"cannot open {self.display_url}: {self.explain(exc)}") from exc
            raise DatabaseError(
                f"cannot connect to {self.display_url}: {exc.orig}. Check CONVEYOR_DATABASE_URL "
                f"and that the server is running."
            ) from exc

    @property
    def driver_errors(self) -> tuple[type[BaseException], ...]:
        """What a statement can raise: SQLAlchemy's wrapper, and the driver's own errors (bulk
        inserts and COPY talk to the driver directly)."""
        return (sa.exc.DBAPIError, self.engine.dialect.loaded_dbapi.Error)

    def explain(self, exc: BaseException) -> str:
        """The driver's message for `exc`, or, for an SQLite file this process may not write,
        which file or folder that is and what to do."""
        if self.dialect != "sqlite":
            return str(getattr(exc, "orig", None) or exc)
        return explain_sqlite(make_url(self.url).database, exc)

    def close(self) -> None:
        self.engine.dispose()

    # -------------------------------------------------------------------------- schema

    def stored_revision(self) -> str | None:
        """The Alembic revision the database is at (None: conveyor's tables are not there)."""
        with self._connect() as conn, conn.begin():
            if not sa.inspect(conn).has_table("alembic_version"):
                return None
            return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()

    def ensure_schema(self) -> None:
        """Create or upgrade conveyor's tables if needed (once per Database object)."""
        if self._checked:
            return
        try:
            current = self._quick_revision()
        except sa.exc.OperationalError as exc:
            raise DatabaseError(f"cannot use {self.display_url}: {self.explain(exc)}") from exc
        if current != SCHEMA_REVISION:
            if not self._upgrade:
                raise DatabaseError(
                    f"{self.display_url} is at schema revision {current or '(none)'}, "
                    f"not {SCHEMA_REVISION}; run `conveyor db upgrade`"
                )
            if self.dialect == "postgresql" and current is not None:
                raise DatabaseError(
                    f"{self.display_url} is at schema revision {current}; this conveyor needs "
                    f"{SCHEMA_REVISION}. Run `conveyor db upgrade` (PostgreSQL databases are "
                    f"never upgraded implicitly)."
                )
            self.upgrade()
        self._checked = True

    def _quick_revision(self) -> str | None:
        # One query, no inspector: a missing table is an error we catch.
        with self._connect() as conn:
            try:
                with conn.begin():
                    return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
            except sa.exc.ProgrammingError:  # PostgreSQL: relation does not exist
                return None
            except sa.exc.OperationalError as exc:  # SQLite: no such table
                if "no such table" in str(exc.orig):
                    return None
                raise

    def upgrade(self, revision: str = "head") -> str | None:
        """Run Alembic migrations up to `revision`; return the revision reached.

        Serialized across processes: SQLite by `BEGIN IMMEDIATE`, PostgreSQL by an advisory lock,
        so two first runs at once do not both create the schema.
        """
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self._connect() as conn:
            conn = conn.execution_options(conveyor_begin="IMMEDIATE")
            with conn.begin():
                if self.dialect == "postgresql":
                    conn.execute(
                        sa.text("SELECT pg_advisory_xact_lock(:key)"),
                        {"key": lock_key("conveyor", "migrate")},
                    )
                config.attributes["connection"] = conn
                try:
                    command.upgrade(config, revision)
                except Exception as exc:
                    if type(exc).__module__.startswith("alembic"):
                        raise DatabaseError(
                            f"cannot upgrade {self.display_url}: {exc}. If the database was "
                            f"upgraded by a newer conveyor, upgrade conveyor."
                        ) from exc
                    raise
                reached = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
        self._checked = reached == SCHEMA_REVISION
        return reached


def _sqlite_engine(url: sa.URL) -> Engine:
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(
        url,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT, "check_same_thread": False},
    )

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transactions out of the sqlite3 module's hands: conveyor emits BEGIN itself, so a
        # writer can ask for BEGIN IMMEDIATE (the write lock up front, no upgrade deadlocks).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
        cursor.execute("PRAGMA synchronous=NORMAL")  # durable against a killed process
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT * 1000)}")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("conveyor_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine
