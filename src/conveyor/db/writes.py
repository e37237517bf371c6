"""write_table: replace exactly one partition of a table, in one transaction, idempotently.

A write names its partition: one date, or a range (start, end). Everything about the frame is
checked before the transaction opens (names, types, that partition values lie in the range);
then, inside one transaction, conveyor takes the partition's lock, creates the table if it is
missing (partition column indexed), checks the frame against the table's columns, deletes the
partition's rows and bulk-inserts the frame. Any failure rolls all of it back, and a killed
writer leaves the old partition in place: the transaction never committed.

Rows are inserted in partition-date order (stable within a date), so a date's rows sit together
on disk; a new table gets its partition-column index after the first rows are in (building an
index once is cheaper than growing it row by row). A declared table (`conveyor.Table`) is created
from its declaration — types, NOT NULL, the key as primary key — and every write to it is
checked against the declaration first (`conveyor.db.schemas`). An undeclared table takes its
column types from the first frame; a column of nothing but missing values has no type, so an
empty frame creates nothing and a non-empty one is refused until the column gets a dtype. A
write by name to a table with NOT NULL columns or a primary key is checked against those too.

Partition keys:

- `partition_col=None`: conveyor keeps the date in a column of its own, `conveyor_partition`.
  Only single-date partitions: a range says nothing about which rows belong to which date.
- `partition_col="day"`: the frame's own date (or timestamp) column. A ranged write deletes the
  rows whose `day` lies in [start, end] and every frame row's `day` must lie in that range, so
  writing a range in one run gives exactly the rows of writing its dates one by one.
- no partition at all (an unpartitioned pipeline): the whole table is replaced.
- `key={"model": "qda"}`: only the rows whose `model` holds "qda", alone (a table partitioned
  by model name) or within the dates above (date x key). The frame gets the column when it
  lacks it; when it has it, every row must hold the key's value.

Tables are dropped only by `conveyor db drop-table`, under the table's exclusive lock; a
PostgreSQL write reads the table's columns again once it holds its lock, so a drop that went
first is an error, never a write into a missing table.

Locks: PostgreSQL takes transaction-scoped advisory locks — a shared lock on the table plus an
exclusive lock per date of the partition, so writes of different dates run in parallel and
overlapping ranges serialize; creating the table, a whole-table write, or a range longer than
`MAX_DATE_LOCKS` dates takes the table lock exclusively. SQLite's `BEGIN IMMEDIATE` serializes
all writers of the file, with a long busy timeout so they queue instead of failing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from conveyor._runtime.tables import Table
from conveyor.db import schemas
from conveyor.db.bulk import insert_columns
from conveyor.db.columns import NULL, Column, fits, frame_column, label
from conveyor.db.database import Database, lock_key
from conveyor.db.names import PARTITION_COLUMN, TableName, check_column, check_columns, text_quote
from conveyor.db.tables import (
    PARTITION_KINDS,
    bounds,
    create_index,
    create_table,
    key_constraint,
    lock_table,
    primary_key,
    qualified_name,
    recorded_partition_col,
    table_columns,
)
from conveyor.db.values import cast, to_arrow
from conveyor.errors import DatabaseError, TableSchemaError

MAX_DATE_LOCKS = 366


@dataclass(frozen=True, slots=True)
class Partition:
    """The rows a write replaces: dates start..end of `column`, or the whole table."""

    start: date | None
    end: date | None
    column: str | None
    managed: bool  # the column is conveyor's own `conveyor_partition`
    key: tuple[str, str | int] | None = None  # (column, value): only the rows holding it

    @classmethod
    def build(
        cls,
        table: TableName,
        start: Any,
        end: Any,
        partition_col: str | None,
        key: Mapping[str, Any] | None = None,
    ) -> Partition:
        where = f"write_table({str(table)!r})"
        dated = cls._dates(table, start, end, partition_col)
        if not key:
            return dated
        if len(key) != 1:
            raise DatabaseError(f"{where}: a key partition is one column, got {dict(key)!r}")
        ((column, value),) = key.items()
        check_column(column, f"{where}: key column")
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise DatabaseError(
                f"{where}: key {column}={value!r} is {type(value).__name__}; a key value is a "
                f"string or an integer"
            )
        if column in (dated.column, PARTITION_COLUMN):
            raise DatabaseError(f"{where}: key column {column!r} is the date partition's column")
        return cls(dated.start, dated.end, dated.column, dated.managed, (column, value))

    @classmethod
    def _dates(cls, table: TableName, start: Any, end: Any, partition_col: str | None) -> Partition:
        where = f"write_table({str(table)!r})"
        start, end = _as_date(start, where), _as_date(end, where)
        if start is None and end is not None:
            raise DatabaseError(f"{where}: partition has an end but no start")
        if end is None:
            end = start
        if start is None:
            if partition_col is not None:
                raise DatabaseError(
                    f"{where}: partition_col={partition_col!r} needs a partition: pass "
                    f"partition=day or partition=(start, end)"
                )
            return cls(None, None, None, False)
        assert end is not None
        if end < start:
            raise DatabaseError(f"{where}: partition ends ({end}) before it starts ({start})")
        if partition_col is None:
            if end != start:
                raise DatabaseError(
                    f"{where}: a ranged partition ({start} to {end}) needs partition_col, the "
                    f"frame's date column, to say which rows belong to which date; pass "
                    f"partition_col='<date column>' (or write one date at a time)"
                )
            return cls(start, end, PARTITION_COLUMN, True)
        check_column(partition_col, f"{where}: partition_col")
        return cls(start, end, partition_col, False)

    @property
    def whole_table(self) -> bool:
        return self.start is None and self.key is None

    @property
    def dated(self) -> bool:
        return self.start is not None

    def dates(self) -> list[date]:
        if self.start is None or self.end is None:
            return []
        return [self.start + timedelta(n) for n in range((self.end - self.start).days + 1)]

    def describe(self) -> str:
        key = f"{self.key[0]}={self.key[1]!r}" if self.key else ""
        if self.start is None:
            return key or "the whole table"
        days = str(self.start) if self.start == self.end else f"{self.start} to {self.end}"
        return f"{days}, {key}" if key else days


def _as_date(value: Any, where: str) -> date | None:
    if value is None or (isinstance(value, date) and not isinstance(value, datetime)):
        return value
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise DatabaseError(f"{where}: partition {value!r} is not a date")


def write_table(
    db: Database,
    frame: Any,
    table: str | Table | Mapping[str, Any],
    partition_start: date | None = None,
    partition_end: date | None = None,
    partition_col: str | None = None,
    *,
    key: Mapping[str, Any] | None = None,
    run_id: str | None = None,
) -> int:
    """Replace one partition of `table` with `frame`'s rows; return the number of rows written.

    `table` is a name, or a declaration (`conveyor.Table`, or its JSON) the frame and the table
    are checked against. See the module docstring for partitions, locks and what is checked.
    Raises TableSchemaError when names, types, missing values or keys do not fit (nothing is
    written), DatabaseError when the database refuses the write (nothing is written).
    """
    import pandas as pd

    declared = schemas.declaration(table)
    name = TableName.parse(declared.name if declared else table, dialect=db.dialect)
    where = f"write_table({str(name)!r})"
    if not isinstance(frame, pd.DataFrame):
        raise TableSchemaError(f"{where}: expected a pandas DataFrame, got {type(frame).__name__}")
    partition = Partition.build(name, partition_start, partition_end, partition_col, key)
    if partition.key is not None:
        frame = _with_key(frame, partition.key, where)
    rows = schemas.Rows(
        frame,
        None if partition.managed else partition.column,
        partition.start if partition.managed else None,
    )
    frame_cols = _frame_columns(frame, name, partition, declared, rows)
    # Convert every column before the transaction: bad values fail here, and locks are held
    # only for the database work.
    arrays = {c.name: to_arrow(frame[c.name], c.kind or NULL, c.name) for c in frame_cols}
    if declared is not None:
        not_null = [c for c in declared.names if c not in declared.nullable]
        schemas.check_values(arrays, not_null, declared.key, rows, where)
    if partition.managed and PARTITION_COLUMN not in frame.columns:
        frame_cols.append(
            Column(PARTITION_COLUMN, "date", "conveyor's partition column", nullable=False)
        )
        assert partition.start is not None  # a managed partition is one date (Partition.build)
        arrays[PARTITION_COLUMN] = _repeat(partition.start, len(frame))
    try:
        with db.write() as conn:
            existing = table_columns(conn, db.dialect, name)
            if existing is None:
                lock_table(conn, db.dialect, name, exclusive=True)
                existing = table_columns(conn, db.dialect, name)  # created while we waited?
            else:
                _lock(conn, db.dialect, name, partition)
                if db.dialect == "postgresql":  # dropped (`conveyor db drop-table`) meanwhile?
                    existing = table_columns(conn, db.dialect, name)
                    if existing is None:
                        raise DatabaseError(
                            f"{where}: the table was dropped while this write waited for it; "
                            f"nothing was written. Run again to create it anew."
                        )
            created = existing is None
            primary: tuple[str, ...] = ()
            if existing is None:
                if declared is not None:
                    stored, primary = schemas.stored_columns(declared, partition.managed)
                    kinds = {c.name: c.kind or "text" for c in stored}
                    create_table(conn, db.dialect, name, stored, partition.column, run_id, primary)
                else:
                    unknown = [c.name for c in frame_cols if c.kind == NULL]
                    if unknown and not len(frame):
                        return 0  # nothing to write, and no types to create the table from
                    if unknown:
                        raise TableSchemaError(
                            f"{where}: column {unknown[0]!r} holds only missing values, so the "
                            f"new table's column type is unknown; give it a dtype first, e.g. "
                            f"df[{unknown[0]!r}] = df[{unknown[0]!r}].astype('float64') (or "
                            f"'str'), or declare the table (conveyor.Table)"
                        )
                    create_table(conn, db.dialect, name, frame_cols, partition.column, run_id)
                    kinds = {c.name: c.kind or "text" for c in frame_cols}
            else:
                _check_partition_col(conn, name, partition)
                if declared is not None:
                    _check_declared_table(conn, db.dialect, name, declared, partition, existing)
                kinds = _check_fit(name, frame_cols, existing)
                if declared is None:  # the table's own NOT NULL and key, checked as declared
                    not_null = [c.name for c in existing if not c.nullable]
                    schemas.check_values(arrays, not_null, primary_key(existing), rows, where)
                _delete(conn, db.dialect, name, partition)
            if partition.column is not None and len(frame) > 1:
                arrays = _clustered(arrays, partition.column)
            names = list(kinds)
            insert_columns(
                conn, db.dialect, name, names, [kinds[n] for n in names],
                [cast(arrays[n], kinds[n]) for n in names],
            )  # fmt: skip
            if created and partition.column is not None and primary[:1] != (partition.column,):
                create_index(conn, name, partition.column)  # (a key led by it is indexed)
    except db.driver_errors as exc:
        raise DatabaseError(
            f"{where}, partition {partition.describe()}: {db.explain(exc)}{_hint(exc)}"
        ) from exc
    return len(frame)


def _hint(exc: BaseException) -> str:
    """What to do about a constraint the database enforced that the frame checks could not see
    (a key already used by a row of another partition)."""
    text = str(getattr(exc, "orig", None) or exc).lower()
    if "unique" in text or "duplicate key" in text:
        return (
            ". Nothing was written: a row of another partition has the same key. A key must be "
            "unique across the table; include the partition column in it if it is unique per "
            "date only"
        )
    return ""


def _clustered(arrays: dict[str, Any], column: str) -> dict[str, Any]:
    """Rows in partition-date order (stable: within a date, the frame's order).

    Rows of a date land next to each other on disk, so range reads and partition deletes touch
    few pages, and the partition column's index is built or extended from sorted keys (building
    it measured about twice as fast).
    """
    import pyarrow.compute as pc

    keys = arrays[column]
    if keys.null_count == 0 and pc.all(pc.greater_equal(keys[1:], keys[:-1])).as_py():
        return arrays  # already in order
    order = pc.sort_indices(keys)
    return {name: array.take(order) for name, array in arrays.items()}


def _repeat(day: date, n: int) -> Any:
    import numpy as np
    import pyarrow as pa

    return pa.array(np.full(n, np.datetime64(day, "D")))


def _frame_columns(
    frame: Any, name: TableName, partition: Partition, declared: Table | None, rows: schemas.Rows
) -> list[Column]:
    names = check_columns(list(frame.columns), name)
    where = f"write_table({str(name)!r})"
    if len(frame.columns) == 0 and len(frame):
        raise TableSchemaError(f"{where}: the frame has rows but no columns")
    if declared is not None:
        columns = schemas.frame_columns(frame, name, declared, rows)
        if PARTITION_COLUMN in names:
            columns.append(frame_column(frame[PARTITION_COLUMN], PARTITION_COLUMN, str(name)))
    else:
        columns = [frame_column(frame[n], n, str(name)) for n in names]
    if not partition.dated:
        return columns
    assert partition.start is not None and partition.end is not None
    if partition.managed:
        if PARTITION_COLUMN in names:
            _check_dates(frame, PARTITION_COLUMN, partition, where, own=True)
        return columns
    if partition.column not in names:
        raise TableSchemaError(
            f"{where}: partition_col {partition.column!r} is not a column of the frame "
            f"(columns: {', '.join(names) or 'none'})"
        )
    kind = next(c.kind for c in columns if c.name == partition.column)
    if kind not in (*PARTITION_KINDS, NULL):
        raise TableSchemaError(
            f"{where}: partition_col {partition.column!r} holds {label(kind)}; it must hold "
            f"dates (datetime.date) or timestamps"
        )
    _check_dates(frame, partition.column, partition, where, own=False)
    return columns


def _with_key(frame: Any, key: tuple[str, str | int], where: str) -> Any:
    """`frame` with the key column holding the key's value, checked when the frame has it."""
    column, value = key
    if column not in frame.columns:
        return frame.assign(**{column: value})
    held = frame[column]
    wrong = held[held.isna() | (held != value)]
    if len(wrong):
        shown = ", ".join(repr(v) for v in wrong.drop_duplicates().head(5).tolist())
        raise TableSchemaError(
            f"{where}: the partition is {column}={value!r}, but {len(wrong)} row(s) of column "
            f"{column!r} hold other values ({shown}); nothing was written. Filter the frame to "
            f"the key, or drop the column (conveyor fills it in)"
        )
    return frame


def _check_dates(frame: Any, column: str, partition: Partition, where: str, own: bool) -> None:
    """Every row's partition date must lie in the partition (else it would outlive a rewrite)."""
    import pyarrow.compute as pc

    if not len(frame):
        return
    days = to_arrow(frame[column], "date", column)  # timestamps truncate to their day
    if days.null_count:
        raise TableSchemaError(f"{where}: partition column {column!r} has missing values")
    low, high = pc.min(days).as_py(), pc.max(days).as_py()
    assert partition.start is not None and partition.end is not None
    if low < partition.start or high > partition.end:
        hint = (
            f"conveyor sets {PARTITION_COLUMN} itself; drop the column from the frame"
            if own
            else "filter the frame to the partition, or widen the partition"
        )
        raise TableSchemaError(
            f"{where}: rows of {column!r} run from {low} to {high}, outside the partition "
            f"{partition.describe()}; {hint}"
        )


def _check_partition_col(conn: Connection, name: TableName, partition: Partition) -> None:
    """A write must name the partition column the table was created with."""
    where = f"write_table({str(name)!r})"
    known, recorded = recorded_partition_col(conn, name)
    if known and not partition.whole_table and recorded != partition.column:
        wanted = f"partition_col={None if partition.managed else partition.column!r}"
        had = (
            "conveyor's own partition column (partition_col=None)"
            if recorded == PARTITION_COLUMN
            else f"partition_col={recorded!r}"
            if recorded
            else "no partition (whole-table writes)"
        )
        raise TableSchemaError(
            f"{where}: the table was created with {had}; this write uses {wanted}. Write it "
            f"the way it was created, or use a new table."
        )


def _check_declared_table(
    conn: Connection,
    dialect: str,
    name: TableName,
    declared: Table,
    partition: Partition,
    existing: list[Column],
) -> None:
    """The table must be what its declaration says, or the error names the migration."""
    key = primary_key(existing)
    problems = schemas.differences(
        dialect, name, declared, partition.managed, existing, key,
        key_constraint(conn, dialect, name) if key else None,
    )  # fmt: skip
    if problems:
        raise schemas.migration_error(dialect, name, problems)


def _check_fit(name: TableName, frame_cols: list[Column], existing: list[Column]) -> dict[str, str]:
    """The table's column types by name, or a TableSchemaError listing every mismatch."""
    where = f"write_table({str(name)!r})"
    table = {c.name: c for c in existing}
    frame = {c.name: c for c in frame_cols}
    problems = []
    for column in existing:
        if column.name not in frame:
            problems.append(
                f"column {column.name!r} ({label(column.kind) if column.kind else column.origin})"
                f" is in the table but missing from the frame"
            )
    for column in frame_cols:
        other = table.get(column.name)
        if other is None:
            problems.append(
                f"column {column.name!r} ({label(column.kind)}) is in the frame but not in the "
                f"table"
            )
        elif not fits(column.kind or "", other.kind):
            problems.append(
                f"column {column.name!r} is {label(column.kind)} in the frame (dtype "
                f"{column.origin}) but {label(other.kind) if other.kind else other.origin} in "
                f"the table"
            )
    if problems:
        raise TableSchemaError(
            f"{where}: the frame does not match the table: {'; '.join(problems)}. Nothing was "
            f"written. Make the frame match, or write to a new table."
        )
    return {c.name: table[c.name].kind or "text" for c in existing}


def _lock(conn: Connection, dialect: str, name: TableName, partition: Partition) -> None:
    if dialect != "postgresql":
        return  # BEGIN IMMEDIATE already holds SQLite's single write lock
    qualified = qualified_name(conn, name)
    days = partition.dates()
    if partition.whole_table or len(days) > MAX_DATE_LOCKS:
        lock_table(conn, dialect, name, exclusive=True, qualified=qualified)
        return
    lock_table(conn, dialect, name, exclusive=False, qualified=qualified)
    key = () if partition.key is None else (partition.key[0], repr(partition.key[1]))
    # One round trip; unnest yields the keys in array order, which is date order for every
    # writer, so two overlapping ranges cannot deadlock. A key-only partition is one lock.
    locks = [lock_key("table", qualified, day.isoformat(), *key) for day in days] or [
        lock_key("table", qualified, *key)
    ]
    conn.execute(
        sa.text("SELECT count(pg_advisory_xact_lock(k)) FROM unnest(CAST(:keys AS bigint[])) k"),
        {"keys": locks},
    )


def _delete(conn: Connection, dialect: str, name: TableName, partition: Partition) -> None:
    if partition.whole_table:
        conn.execute(sa.text(f"DELETE FROM {name.sql}"))
        return
    where, values = [], {}
    if partition.dated:
        assert partition.start is not None and partition.end is not None and partition.column
        column = text_quote(partition.column)
        where.append(f"{column} >= :lo AND {column} < :hi")
        values.update(bounds(partition.start, partition.end, dialect))
    if partition.key is not None:
        where.append(f"{text_quote(partition.key[0])} = :key")
        values["key"] = partition.key[1]
    conn.execute(sa.text(f"DELETE FROM {name.sql} WHERE {' AND '.join(where)}"), values)
