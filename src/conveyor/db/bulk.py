"""Bulk inserts on the hot path: PostgreSQL binary COPY, SQLite one executemany.

Both run inside the caller's transaction on the driver connection under SQLAlchemy's, so a
write is all-or-nothing. No ORM, no per-row statements: PostgreSQL receives one COPY stream in
binary format (the server parses no text, measured faster than CSV), SQLite one prepared INSERT
executed for every row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import Connection

from conveyor.db.columns import COPY_TYPES
from conveyor.db.names import TableName, quote


def insert_columns(
    conn: Connection,
    dialect: str,
    table: TableName,
    names: Sequence[str],
    kinds: Sequence[str],
    values: Sequence[list[Any]],
) -> None:
    """Insert rows given column-wise (`values[i]` holds column `names[i]`)."""
    if not values or not len(values[0]):
        return
    driver = conn.connection.driver_connection
    columns = ", ".join(quote(n) for n in names)
    rows = zip(*values, strict=True)
    if dialect == "postgresql":
        with driver.cursor() as cursor:
            statement = f"COPY {table.sql} ({columns}) FROM STDIN (FORMAT BINARY)"
            with cursor.copy(statement) as copy:
                copy.set_types([COPY_TYPES[k] for k in kinds])
                for row in rows:
                    copy.write_row(row)
    else:
        marks = ", ".join("?" for _ in names)
        cursor = driver.cursor()
        try:
            cursor.executemany(f"INSERT INTO {table.sql} ({columns}) VALUES ({marks})", rows)
        finally:
            cursor.close()
