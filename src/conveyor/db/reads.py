"""load_table: rows of a table as a DataFrame whose content hash depends only on the rows.

The range is in calendar days, inclusive at both ends: `start=` and `end=` bound the partition
column. `days=N` reaches N calendar days back, whatever the pipeline's calendar (a weekday
pipeline asking for 30 days gets about 22 dates of data):

- with `end=` alone, the N days ending at `end`: `end - N + 1` to `end` (a training window);
- with `start=`, the N days before `start` as well: `start - N` to `end` (a ranged run's
  lookback, so the trailing windows of its first dates are complete).

The frame is sorted by the partition column, then by every selected column (text in byte order
on both back ends, NULLs last), and its dtypes depend only on the column types (see
`conveyor.db.columns`), so the same rows always give the same frame and the same hash.

PostgreSQL streams the result with `COPY (SELECT ...) TO STDOUT` as CSV parsed by Arrow; SQLite
fetches rows through its driver. Both end in Arrow arrays and one conversion to pandas.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from operator import itemgetter
from typing import Any

from sqlalchemy.engine import Connection

from conveyor._runtime.tables import Table, table_name
from conveyor.db.columns import Column
from conveyor.db.database import Database
from conveyor.db.names import PARTITION_COLUMN, TableName, check_column, quote
from conveyor.db.tables import bounds, partition_column_of, table_columns
from conveyor.db.values import storage_type, to_frame
from conveyor.errors import DatabaseError


@dataclass(frozen=True, slots=True)
class DateRange:
    """Partition dates to read: both ends inclusive, either may be open."""

    start: date | None
    end: date | None

    @classmethod
    def build(cls, start: Any, end: Any, days: Any, where: str) -> DateRange:
        if days is not None:
            if isinstance(days, bool) or not isinstance(days, int) or days < 1:
                raise DatabaseError(f"{where}: days must be a positive integer, got {days!r}")
            if start is not None:
                start = start - timedelta(days=days)  # a lookback before the range
            elif end is not None:
                start = end - timedelta(days=days - 1)  # the window ending at `end`
            else:
                raise DatabaseError(
                    f"{where}: days={days} counts back from end= (or from start=); pass one"
                )
        if start is not None and end is not None and end < start:
            raise DatabaseError(f"{where}: end ({end}) is before start ({start})")
        return cls(start, end)

    @property
    def bounded(self) -> bool:
        return self.start is not None or self.end is not None


def resolve_range(
    start: date | None, end: date | None, days: int | None
) -> tuple[date | None, date | None]:
    """The inclusive (start, end) dates load_table reads for these arguments."""
    span = DateRange.build(start, end, days, "load_table")
    return span.start, span.end


def load_table(
    db: Database,
    table: str | Table,
    start: date | None = None,
    end: date | None = None,
    days: int | None = None,
    columns: Sequence[str] | None = None,
) -> Any:
    """Read `table` (optionally a date range and a subset of columns) as a DataFrame."""
    name = TableName.parse(table_name(table), dialect=db.dialect)
    where = f"load_table({str(name)!r})"
    span = DateRange.build(start, end, days, where)
    try:
        with db.read() as conn:
            existing = table_columns(conn, db.dialect, name)
            if existing is None:
                raise DatabaseError(
                    f"{where}: there is no such table in {db.display_url}; run the pipeline "
                    f"that writes it first (or check the name)"
                )
            chosen = _choose(existing, columns, where)
            partition_col = partition_column_of(conn, name, existing)
            if span.bounded and partition_col is None:
                raise DatabaseError(
                    f"{where}: the table has no partition column (conveyor did not create it and "
                    f"it has no single date column), so start/end/days cannot select rows"
                )
            query, params = _select(db.dialect, name, chosen, partition_col, span)
            if db.dialect == "postgresql":
                arrays = _copy_out(conn, query, params, chosen)
            else:
                arrays = _fetch(conn, query, params, chosen)
    except db.driver_errors as exc:
        raise DatabaseError(f"{where}: {db.explain(exc)}") from exc
    # (_choose refused columns of no kind; `or "text"` as in _fetch and _csv_type)
    return to_frame(arrays, {c.name: c.kind or "text" for c in chosen})


def _choose(existing: list[Column], columns: Sequence[str] | None, where: str) -> list[Column]:
    unreadable = [c for c in existing if c.kind is None]
    if columns is None:  # conveyor's own partition key is bookkeeping, not the user's data
        chosen = [c for c in existing if c.name != PARTITION_COLUMN]
    else:
        if isinstance(columns, str):
            raise DatabaseError(f"{where}: columns must be a list of names, not one string")
        by_name = {c.name: c for c in existing}
        for column in columns:
            check_column(column, f"{where}: column")
        missing = [c for c in columns if c not in by_name]
        if missing:
            raise DatabaseError(
                f"{where}: no column {', '.join(map(repr, missing))}; the table has "
                f"{', '.join(by_name)}"
            )
        chosen = [by_name[c] for c in columns]
    bad = [c for c in chosen if c in unreadable]
    if bad:
        raise DatabaseError(
            f"{where}: column {bad[0].name!r} has type {bad[0].origin}, which conveyor cannot "
            f"read; pass columns=[...] without it"
        )
    return chosen


def _select(
    dialect: str, name: TableName, chosen: list[Column], partition_col: str | None, span: DateRange
) -> tuple[str, dict[str, Any]]:
    """The query and its parameters, for the driver's own cursor (not SQLAlchemy's `text()`)."""
    clauses, params = [], {}
    if partition_col is not None and span.bounded:
        first = span.start or date.min
        last = span.end or date.max - timedelta(days=1)
        params = bounds(first, last, dialect)
    # psycopg binds COPY's values client-side (COPY takes no server-side parameters), reading
    # every `%` as a placeholder: one in a column name is doubled when there are parameters
    percent = "%%" if dialect == "postgresql" and params else "%"

    def ident(column: str) -> str:
        return quote(column).replace("%", percent)

    if params:
        column = ident(str(partition_col))
        lo, hi = (":lo", ":hi") if dialect == "sqlite" else ("%(lo)s", "%(hi)s")
        if span.start is not None:
            clauses.append(f"{column} >= {lo}")
        if span.end is not None:
            clauses.append(f"{column} < {hi}")
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    by = [partition_col] if partition_col else []
    by += [c.name for c in chosen if c.name != partition_col]
    kinds = {c.name: c.kind for c in chosen}
    selected = ", ".join(_select_expr(dialect, c, ident(c.name)) for c in chosen)
    order = ", ".join(_order_expr(dialect, ident(n), kinds.get(n)) for n in by)
    return f"SELECT {selected} FROM {name.sql}{where} ORDER BY {order}", params


def _select_expr(dialect: str, column: Column, name: str) -> str:
    if dialect == "postgresql" and column.kind == "timestamptz":
        return f"({name} AT TIME ZONE 'UTC') AS {name}"  # naive UTC: CSV without zone suffixes
    if dialect == "postgresql" and column.kind == "bytes":
        return f"encode({name}, 'hex') AS {name}"
    return name


def _order_expr(dialect: str, name: str, kind: str | None) -> str:
    collate = ' COLLATE "C"' if dialect == "postgresql" and kind == "text" else ""
    return f"{name}{collate} NULLS LAST"


def _fetch(
    conn: Connection, query: str, params: dict[str, Any], chosen: list[Column]
) -> dict[str, Any]:
    import pyarrow as pa

    driver = conn.connection.driver_connection
    assert driver is not None  # None only once the connection is closed; ours is in use
    cursor = driver.cursor()  # plain tuples, no Row objects
    try:
        rows = cursor.execute(query, params).fetchall()
    finally:
        cursor.close()
    # one C-level pass per column; zip(*rows) over a million rows measured three times slower
    return {
        c.name: pa.array(
            list(map(itemgetter(i), rows)), type=storage_type(c.kind or "text", "sqlite")
        )
        for i, c in enumerate(chosen)
    }


def _copy_out(
    conn: Connection, query: str, params: dict[str, Any], chosen: list[Column]
) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.csv as csv

    driver = conn.connection.driver_connection
    assert driver is not None  # None only once the connection is closed; ours is in use
    buffer = io.BytesIO()
    with driver.cursor() as cursor:
        cursor.execute("SET LOCAL DateStyle = 'ISO, YMD'")
        with cursor.copy(f"COPY ({query}) TO STDOUT (FORMAT CSV)", params or None) as copy:
            for block in copy:
                buffer.write(block)
    types = {c.name: _csv_type(c.kind) for c in chosen}
    if not buffer.getbuffer().nbytes:  # no rows: Arrow refuses an empty CSV
        return {c.name: pa.array([], type=types[c.name]) for c in chosen}
    table = csv.read_csv(
        io.BytesIO(buffer.getvalue()),
        read_options=csv.ReadOptions(column_names=[c.name for c in chosen]),
        parse_options=csv.ParseOptions(newlines_in_values=True),
        convert_options=csv.ConvertOptions(
            column_types=types,
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            true_values=["t"],
            false_values=["f"],
        ),
    )
    arrays = {c.name: table.column(c.name).combine_chunks() for c in chosen}
    for column in chosen:
        if column.kind == "bytes":
            hexes = arrays[column.name].to_pylist()
            arrays[column.name] = pa.array(
                [bytes.fromhex(h) if h is not None else None for h in hexes], pa.binary()
            )
    return arrays


def _csv_type(kind: str | None) -> Any:
    import pyarrow as pa

    from conveyor.db.values import arrow_type

    if kind == "timestamptz":
        return pa.timestamp("us")  # read naive UTC, zone attached when converting
    if kind == "bytes":
        return pa.string()
    return arrow_type(kind or "text")


def data_span(
    db: Database, table: str, start: date | None, end: date | None
) -> tuple[date, date] | None:
    """The first and last partition dates `table` holds in [start, end]: what a read of that
    range actually got (None: no rows, or no partition column)."""
    import sqlalchemy as sa

    name = TableName.parse(table_name(table), dialect=db.dialect)
    try:
        with db.read() as conn:
            existing = table_columns(conn, db.dialect, name)
            column = partition_column_of(conn, name, existing) if existing else None
            if column is None:
                return None
            where, params = [], bounds(start or date.min, end or date.max - timedelta(days=1),
                                       db.dialect)  # fmt: skip
            if start is not None:
                where.append(f"{quote(column)} >= :lo")
            if end is not None:
                where.append(f"{quote(column)} < :hi")
            clause = f" WHERE {' AND '.join(where)}" if where else ""
            query = f"SELECT min({quote(column)}), max({quote(column)}) FROM {name.sql}{clause}"
            first, last = conn.execute(sa.text(query), params).one()
    except db.driver_errors as exc:
        raise DatabaseError(f"reading the date span of {str(name)!r}: {db.explain(exc)}") from exc
    if first is None or last is None:
        return None
    return _as_date(first), _as_date(last)


def _as_date(value: date | datetime | str) -> date:
    if isinstance(value, str):  # SQLite keeps dates and timestamps as ISO text
        return date.fromisoformat(value[:10])
    return value.date() if isinstance(value, datetime) else value
