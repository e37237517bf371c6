"""User tables: their columns as the database reports them, creation, listing, dropping.

A table write_table creates is recorded in `conveyor_tables` with its partition column, so
load_table knows which column holds the dates and a later write with a different partition
column is refused instead of deleting the wrong rows.

A table's schema is what the database itself says: column types, NOT NULL, the primary key. A
table created from a declaration (`conveyor.Table`) carries all of it, so the catalog is the one
record of a schema, and an `ALTER TABLE` migration changes it where writes will see it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from conveyor.db.columns import DDL, Column, database_kind
from conveyor.db.database import Database, lock_key
from conveyor.db.models import ManagedTable, table_of
from conveyor.db.names import PARTITION_COLUMN, RESERVED_PREFIXES, TableName, text_quote
from conveyor.errors import DatabaseError

PARTITION_KINDS = ("date", "timestamp")


def table_columns(conn: Connection, dialect: str, table: TableName) -> list[Column] | None:
    """The table's columns in order (type, NOT NULL, place in the primary key), or None when
    there is no such table."""
    if dialect == "postgresql":
        rows = conn.execute(
            sa.text(
                "SELECT a.attname, format_type(a.atttypid, NULL), a.attnotnull, "
                # int2vector subscripts start at 0: the key position counted from 1
                "COALESCE(array_position(i.indkey::int2[], a.attnum) "
                "- array_lower(i.indkey::int2[], 1) + 1, 0) FROM pg_attribute a "
                "LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary "
                "WHERE a.attrelid = to_regclass(:name) AND a.attnum > 0 AND NOT a.attisdropped "
                "ORDER BY a.attnum"
            ),
            {"name": table.sql},
        ).all()
    else:
        rows = conn.execute(
            sa.text('SELECT name, type, "notnull", pk FROM pragma_table_info(:name)'),
            {"name": table.name},
        ).all()
    if not rows:
        return None
    return [
        Column(name, database_kind(dialect, declared), declared, not notnull, int(key))
        for name, declared, notnull, key in rows
    ]


def primary_key(columns: list[Column]) -> tuple[str, ...]:
    """The table's primary key columns, in key order (empty: no primary key)."""
    return tuple(c.name for c in sorted((c for c in columns if c.key), key=lambda c: c.key))


def key_constraint(conn: Connection, dialect: str, table: TableName) -> str | None:
    """The name of a PostgreSQL table's primary key constraint (SQLite's have none)."""
    if dialect != "postgresql":
        return None
    return conn.execute(
        sa.text("SELECT conname FROM pg_constraint WHERE conrelid = to_regclass(:name) "
                "AND contype = 'p'"),
        {"name": table.sql},
    ).scalar()  # fmt: skip


def create_table(
    conn: Connection,
    dialect: str,
    table: TableName,
    columns: list[Column],
    partition_col: str | None,
    run_id: str | None,
    key: tuple[str, ...] = (),
) -> None:
    """Create a table for `columns` (missing-only columns become text; NOT NULL where a column
    is not nullable; `key` as its primary key) and record it in conveyor_tables, in the
    caller's transaction. Index its partition column with `create_index` after loading the
    first rows: building an index once is cheaper than maintaining it row by row."""
    body = [column_ddl(dialect, c) for c in columns]
    if key:
        names = ", ".join(text_quote(c) for c in key)
        body.append(f"CONSTRAINT {text_quote(table.key_name)} PRIMARY KEY ({names})")
    conn.execute(sa.text(f"CREATE TABLE {table.sql} ({', '.join(body)})"))
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


def column_ddl(dialect: str, column: Column) -> str:
    """A column's definition in CREATE TABLE, for SQLAlchemy's `text()`."""
    spelled = DDL[dialect]
    kind = spelled[column.kind if column.kind in spelled else "text"]
    return f"{text_quote(column.name)} {kind}{'' if column.nullable else ' NOT NULL'}"


def create_index(conn: Connection, table: TableName, column: str) -> None:
    """Index a table's partition column (deletes and range reads filter on it)."""
    index = text_quote(table.index_name(column))
    conn.execute(sa.text(f"CREATE INDEX {index} ON {table.sql} ({text_quote(column)})"))


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


# ---------------------------------------------------------------------------------------------
# listing and dropping (`conveyor db tables`, `conveyor db drop-table`)


@dataclass(frozen=True, slots=True)
class TableInfo:
    """A user table as found: its columns (types, NOT NULL, key) and what conveyor recorded."""

    name: str
    columns: list[Column]
    partition_col: str | None
    created_by_conveyor: bool
    created_at: datetime | None
    created_by_run: str | None

    @property
    def key(self) -> tuple[str, ...]:
        return primary_key(self.columns)


def user_tables(conn: Connection, dialect: str) -> list[str]:
    """Names of the user tables: those of the default schema (PostgreSQL) or file (SQLite),
    and any other schema's tables conveyor created; conveyor's own tables left out."""
    if dialect == "postgresql":
        found = conn.execute(
            sa.text("SELECT table_name FROM information_schema.tables WHERE table_schema = "
                    "current_schema() AND table_type = 'BASE TABLE'")
        ).scalars().all()  # fmt: skip
    else:
        found = conn.execute(
            sa.text("SELECT name FROM sqlite_master WHERE type = 'table' "
                    "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'")
        ).scalars().all()  # fmt: skip
    managed = table_of(ManagedTable)
    recorded = conn.execute(sa.select(managed.c.name)).scalars().all()
    names = {n for n in found if not n.lower().startswith(RESERVED_PREFIXES)} | set(recorded)
    return sorted(names)


def table_info(conn: Connection, dialect: str, table: TableName) -> TableInfo | None:
    """One user table as found, or None when there is no such table."""
    columns = table_columns(conn, dialect, table)
    if columns is None:
        return None
    managed = table_of(ManagedTable)
    row = conn.execute(
        sa.select(managed.c.created_at, managed.c.created_by_run).where(
            managed.c.name == str(table)
        )
    ).first()
    return TableInfo(
        name=str(table),
        columns=columns,
        partition_col=partition_column_of(conn, table, columns),
        created_by_conveyor=row is not None,
        created_at=row[0] if row is not None else None,
        created_by_run=row[1] if row is not None else None,
    )


def drop_table(conn: Connection, table: TableName) -> None:
    """Drop a user table and conveyor's record of it, in the caller's transaction."""
    conn.execute(sa.text(f"DROP TABLE {table.sql}"))
    managed = table_of(ManagedTable)
    conn.execute(sa.delete(managed).where(managed.c.name == str(table)))


def describe_tables(db: Database, only: str | None = None) -> list[TableInfo]:
    """Every user table of the database as found (or table `only`; an error if it is missing)."""
    try:
        with db.read() as conn:
            if only is not None:
                name = TableName.parse(only, dialect=db.dialect)
                info = table_info(conn, db.dialect, name)
                if info is None:
                    raise DatabaseError(f"there is no table {only!r} in {db.display_url}")
                return [info]
            names = [TableName.parse(n, dialect=db.dialect) for n in user_tables(conn, db.dialect)]
            found = (table_info(conn, db.dialect, n) for n in names)
            return [info for info in found if info is not None]
    except db.driver_errors as exc:
        raise DatabaseError(
            f"cannot list the tables of {db.display_url}: {db.explain(exc)}"
        ) from exc


def lock_table(
    conn: Connection, dialect: str, name: TableName, *, exclusive: bool, qualified: str = ""
) -> None:
    """Take a table's PostgreSQL advisory lock for this transaction (SQLite: nothing to do,
    `BEGIN IMMEDIATE` holds its one write lock)."""
    if dialect != "postgresql":
        return
    qualified = qualified or qualified_name(conn, name)
    function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
    conn.execute(sa.text(f"SELECT {function}(:key)"), {"key": lock_key("table", qualified)})


def qualified_name(conn: Connection, name: TableName) -> str:
    """`schema.table`, the schema resolved: the same lock key however the name was written."""
    if name.schema:
        return f"{name.schema}.{name.name}"
    schema = conn.execute(sa.text("SELECT current_schema()")).scalar()
    return f"{schema}.{name.name}"


def drop_user_table(db: Database, table: str) -> int:
    """Drop a user table (and conveyor's record of it) in one transaction; the rows it held.

    On PostgreSQL the table's advisory lock is taken exclusively first, as a write creating the
    table takes it, so no write of it is half-way through while it goes.
    """
    name = TableName.parse(table, dialect=db.dialect)
    try:
        with db.write() as conn:
            lock_table(conn, db.dialect, name, exclusive=True)
            if table_columns(conn, db.dialect, name) is None:
                raise DatabaseError(f"there is no table {table!r} in {db.display_url}")
            rows = int(conn.execute(sa.text(f"SELECT count(*) FROM {name.sql}")).scalar() or 0)
            drop_table(conn, name)
    except db.driver_errors as exc:
        raise DatabaseError(f"cannot drop table {table!r}: {db.explain(exc)}") from exc
    return rows
