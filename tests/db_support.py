"""Fixtures for database tests: every test runs on SQLite and on the real PostgreSQL.

PostgreSQL comes from CONVEYOR_TEST_POSTGRES_URL (default: the local server at 127.0.0.1:5432,
database `test`). Each test gets a schema of its own (`search_path` in the URL), dropped after,
so tests never see each other's tables. A missing server skips the PostgreSQL variants locally
and fails them under CONVEYOR_CI_STRICT=1 (`need`).

tests/conftest.py loads this module as a plugin, so its fixtures are available everywhere.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

from tests.conftest import need

PG_URL = os.environ.get("CONVEYOR_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@cache
def postgres_problem() -> str | None:
    """Why PostgreSQL cannot be used here (None: it can)."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'conveyor[postgres]')"
    try:
        psycopg.connect(PG_URL, connect_timeout=5).close()
    except psycopg.Error as exc:
        return f"PostgreSQL at {PG_URL} is not reachable: {exc}"
    return None


def pg_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(sql)


def schema_url(schema: str, **extra: str) -> str:
    """PG_URL with `search_path` set to `schema` (and any other connection options)."""
    options = {"options": f"-csearch_path%3D{schema}", **extra}
    joined = "&".join(f"{k}={v}" for k, v in options.items())
    return f"{PG_URL}{'&' if '?' in PG_URL else '?'}{joined}"


@pytest.fixture(autouse=True)
def _forget_shared_databases() -> Iterator[None]:
    """Close the engines runs shared in this test, so connections never pile up."""
    yield
    database = sys.modules.get("conveyor.db.database")
    if database is not None:
        database.dispose_shared()


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A fresh PostgreSQL schema, dropped with everything in it after the test."""
    problem = postgres_problem()
    need(problem is None, problem or "")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    pg_admin(f'CREATE SCHEMA "{schema}"')
    try:
        yield schema
    finally:
        pg_admin(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of an empty database: an SQLite file, or a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'conveyor.db'}"
    schema = request.getfixturevalue("pg_schema")
    return schema_url(schema)


@pytest.fixture
def db(database_url: str) -> Iterator[object]:
    """An open conveyor Database on `database_url`."""
    from conveyor.db.database import Database

    database = Database(database_url)
    yield database
    database.close()
