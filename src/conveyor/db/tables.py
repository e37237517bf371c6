"""User tables: their columns as the database reports them, creation, and partition columns.

A table write_table creates is recorded in `conveyor_tables` with its partition column, so
load_table knows which column holds the dates and a later write with a different partition
column is refused instead of deleting the wrong rows.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from conveyor.db.columns import DDL, Column, database_kind
from conveyor.db.models import ManagedTable, table_of
from conveyor.db.names import PARTITION_COLUMN, TableName, quote

PARTITION_KINDS = ("date", "timestamp")


def table_columns(conn: Connection, dialect: str, table: TableName) -> list[Column] | None:
    """The table's columns in order, or None when there is no such table."""
    if dialect == "postgresql":
        rows = conn.execute(
            sa.text(
                "SELECT a.attname, format_type(a.atttypid, NULL) FROM pg_attribute a "
                "WHERE a.attrelid = to_regclass(:name) AND a.attnum > 0 AND NOT a.attisdropped "
                "ORDER BY a.attnum"
            ),
            {"name": table.sql},
        ).all()
    else:
        rows = conn.execute(
            sa.text("SELECT name, type FROM pragma_table_info(:name)"), {"name": table.name}
        ).all()
    if not rows:
        return None
    return [Column(name, database_kind(dialect, declared), declared) for name, declared in rows]


def create_table(
    conn: Connection,
    dialect: str,
    table: TableName,
    columns: list[Column],
    partition_col: str | None,
    run_id: str | None,
) -> None:
    """Create a table for `columns` (missing-only columns become text) and record it in
    conveyor_tables, in the caller's transaction. Index its partition column with
    `create_index` after loading the first rows: building an index once is cheaper than
    maintaining it row by row."""
    spelled = DDL[dialect]
    body = ", ".join(
        f"{quote(c.name)} {spelled[c.kind if c.kind in spelled else 'text']}" for c in columns
    )
    conn.execute(sa.text(f"CREATE TABLE {table.sql} ({body})"))
    managed = table_of(ManagedTable)
    conn.execute(sa.delete(managed).where(managed.c.name == str(table)))
    conn.execute(
        sa.insert(managed).values(
            name=str(table),
            partition_col=partition_col,
            created_at=datetime.now(UTC),
            created_by_run=run_id,
        )
    )


def create_index(conn: Connection, table: TableName, column: str) -> None:
    """Index a table's partition column (deletes and range reads filter on it)."""
    index = quote(table.index_name(column))
    conn.execute(sa.text(f"CREATE INDEX {index} ON {table.sql} ({quote(column)})"))


def recorded_partition_col(conn: Connection, table: TableName) -> tuple[bool, str | None]:
    """(whether conveyor created the table, its partition column)."""
    managed = table_of(ManagedTable)
    row = conn.execute(
        sa.select(managed.c.partition_col).where(managed.c.name == str(table))
    ).first()
    return (row is not None, row[0] if row is not None else None)


def partition_column_of(conn: Connection, table: TableName, columns: list[Column]) -> str | None:
    """The column holding a table's partition dates: recorded, conveyor's own, or the only
    date column of a table conveyor did not create."""
    known, recorded = recorded_partition_col(conn, table)
    if known:
        return recorded
    names = [c.name for c in columns]
    if PARTITION_COLUMN in names:
        return PARTITION_COLUMN
    dated = [c.name for c in columns if c.kind in PARTITION_KINDS]
    return dated[0] if len(dated) == 1 else None


def bounds(start: date, end: date, dialect: str) -> dict[str, object]:
    """Bind values selecting partition dates start..end: `col >= lo AND col < hi`.

    The half-open form covers a timestamp partition column's whole last day too. SQLite
    stores dates and timestamps as ISO text, which compares in date order.
    """
    lo, hi = start, end + timedelta(days=1)
    if dialect == "sqlite":
        return {"lo": lo.isoformat(), "hi": hi.isoformat()}
    return {"lo": lo, "hi": hi}
