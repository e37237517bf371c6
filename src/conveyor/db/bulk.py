"""Bulk inserts on the hot path: PostgreSQL binary COPY, SQLite one executemany.

Both run inside the caller's transaction, on the driver connection under SQLAlchemy's, so a
write is all-or-nothing. No ORM, no per-row statements: PostgreSQL receives one COPY stream in
binary format, encoded column-wise (`conveyor.db.copy_format`); SQLite one prepared INSERT
executed for every row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import Connection

from conveyor.db import copy_format
from conveyor.db.names import TableName, quote
from conveyor.db.values import python_values


def insert_columns(
    conn: Connection,
    dialect: str,
    table: TableName,
    names: Sequence[str],
    kinds: Sequence[str],
    arrays: Sequence[Any],
) -> None:
    """Insert rows given column-wise as Arrow arrays already of their columns' kinds."""
    if not arrays or not len(arrays[0]):
        return
    driver = conn.connection.driver_connection
    assert driver is not None  # None only once the connection is closed; ours is in use
    if dialect == "postgresql":
        plan, pieces = copy_format.stream(arrays, kinds)
        order = [names[i] for i in (*plan.record, *plan.rest)]
        statement = (
            f"COPY {table.sql} ({', '.join(quote(n) for n in order)}) FROM STDIN (FORMAT BINARY)"
        )
        with driver.cursor() as cursor, cursor.copy(statement) as copy:
            for piece in pieces:
                copy.write(piece)
        return
    columns = [python_values(a, k, dialect) for a, k in zip(arrays, kinds, strict=True)]
    marks = ", ".join("?" for _ in names)
    cursor = driver.cursor()
    try:
        cursor.executemany(
            f"INSERT INTO {table.sql} ({', '.join(quote(n) for n in names)}) VALUES ({marks})",
            zip(*columns, strict=True),
        )
    finally:
        cursor.close()
