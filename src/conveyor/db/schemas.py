"""Declared tables (`conveyor.Table`): a frame checked against its declaration before anything is
written, and a declaration checked against the table the database holds.

Frame checks run before the write's transaction opens: the declared columns and no others, each
of its declared type, no missing value where the declaration does not allow one, no key twice.
Each error names the table, the column, the first offending value and the partition date (or
row) it is on. A table whose columns, types, NOT NULL or primary key differ from the declaration
is an error naming every difference and the migration that resolves it: `ALTER TABLE`
statements where the database can change the table in place, else dropping the table
(`conveyor db drop-table`) and writing its partitions again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from conveyor._runtime.tables import Table, is_declaration
from conveyor.db.columns import DDL, Column, fits, frame_column, label
from conveyor.db.names import PARTITION_COLUMN, TableName, check_columns, quote
from conveyor.errors import TableSchemaError

# How to make a frame column hold each type (the hint after a type error).
CONVERT = {
    "boolean": "df[{c!r}].astype(bool)",
    "bigint": "df[{c!r}].astype('Int64')",
    "double": "pd.to_numeric(df[{c!r}])",
    "text": "df[{c!r}].astype(str)",
    "date": "pd.to_datetime(df[{c!r}]).dt.date",
    "timestamp": "pd.to_datetime(df[{c!r}])",
    "timestamptz": "pd.to_datetime(df[{c!r}], utc=True)",
    "bytes": "bytes values",
}


def declaration(table: object) -> Table | None:
    """The declaration a write_table call got (a Table, or its JSON from a DAG), or None."""
    if isinstance(table, Table):
        return table
    if is_declaration(table):
        assert isinstance(table, Mapping)
        return Table.from_json(table)
    return None


@dataclass(frozen=True, slots=True)
class Rows:
    """Where a frame's rows belong, for messages: the partition date of row i, or row i."""

    frame: Any
    column: str | None  # the frame's partition column (None: conveyor's own, or no partition)
    day: date | None  # the partition date of every row (conveyor's own partition column)

    def at(self, i: int) -> str:
        """`on <date> (row i)`, `on <date>` or `in row i` for row `i` of the frame."""
        if self.column is not None and self.column in self.frame.columns:
            value = self.frame[self.column].iloc[i]
            shown = value.date() if isinstance(value, datetime) else value
            return f"on partition date {shown} (row {i})"
        if self.day is not None:
            return f"on partition date {self.day} (row {i})"
        return f"in row {i}"


def frame_columns(frame: Any, name: TableName, declared: Table, rows: Rows) -> list[Column]:
    """The frame's columns typed as declared; a TableSchemaError for a missing, extra or
    mistyped column (naming its first offending value)."""
    where = f"write_table({str(name)!r})"
    names = [n for n in check_columns(list(frame.columns), name) if n != PARTITION_COLUMN]
    missing = [c for c in declared.names if c not in names]
    extra = [c for c in names if c not in declared.names]
    if missing or extra:
        parts = [f"column {c!r} ({label(declared.type_of(c))}) is declared but missing from "
                 f"the frame" for c in missing]  # fmt: skip
        parts += [f"column {c!r} is in the frame but not declared" for c in extra]
        raise TableSchemaError(
            f"{where}: the frame does not match the table's declaration: {'; '.join(parts)}. "
            f"Nothing was written. Make the frame's columns the declared ones, or change the "
            f"declaration (and migrate the table)."
        )
    columns = []
    for column, kind in declared.columns:
        series = frame[column]
        try:
            found = frame_column(series, column, str(name))
        except TableSchemaError:  # a dtype conveyor cannot store: name the value that says why
            found = Column(column, None, str(series.dtype))
        if found.kind is None or not fits(found.kind, kind):
            raise TableSchemaError(_type_error(where, series, column, kind, found, rows))
        nullable = column in declared.nullable
        columns.append(Column(column, found.kind, found.origin, nullable))
    return columns


def _type_error(where: str, series: Any, column: str, kind: str, found: Column, rows: Rows) -> str:
    first = next(
        (i for i, value in enumerate(series) if not _missing(value) and not _fits(value, kind)),
        None,
    )
    holds = label(found.kind) if found.kind is not None else "values of several types"
    example = ""
    if first is not None:
        value = series.iloc[first]
        plain = value.item() if hasattr(value, "item") else value  # numpy scalars as Python's
        example = (
            f"; the first value that is not {label(kind)}: {plain!r} ({type(value).__name__}) "
            f"{rows.at(first)}"
        )
    return (
        f"{where}: column {column!r} is declared {label(kind)}, but the frame holds {holds} "
        f"(dtype {found.origin}){example}. Nothing was written. Convert the column, e.g. "
        f"{CONVERT[kind].format(c=column)}, or fix the rows."
    )


def _missing(value: Any) -> bool:
    import pandas as pd

    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # a list or an array: a value, not a missing one
        return False


def _fits(value: Any, kind: str) -> bool:
    """Whether one value belongs in a column of `kind`."""
    import numpy as np

    if isinstance(value, bool | np.bool_):
        return kind == "boolean"
    if kind == "bigint":
        return isinstance(value, int | np.integer)
    if kind == "double":
        return isinstance(value, int | float | np.integer | np.floating)
    if kind == "text":
        return isinstance(value, str)
    if kind == "date":
        return isinstance(value, date) and not isinstance(value, datetime)
    if kind in ("timestamp", "timestamptz"):
        if isinstance(value, np.datetime64):
            return kind == "timestamp"
        aware = isinstance(value, datetime) and value.tzinfo is not None
        return isinstance(value, datetime) and aware == (kind == "timestamptz")
    if kind == "bytes":
        return isinstance(value, bytes)
    return False


def check_values(
    arrays: Mapping[str, Any],
    not_null: Sequence[str],
    key: Sequence[str],
    rows: Rows,
    where: str,
) -> None:
    """No missing value in `not_null` columns, no `key` twice in the frame; else an error
    naming the column (or key), the first offending row's partition date and value."""
    import pyarrow.compute as pc

    for column in not_null:
        array = arrays.get(column)
        if array is None or not array.null_count:
            continue
        first = pc.index(array.is_null(), True).as_py()
        raise TableSchemaError(
            f"{where}: column {column!r} may not hold missing values (it is NOT NULL), but "
            f"{array.null_count} row(s) do, the first {rows.at(first)}. Nothing was written. "
            f"Fill or drop those rows, or declare the column in nullable=(...) (and migrate the "
            f"table)."
        )
    key = [c for c in key if c in rows.frame.columns]
    if not key or len(rows.frame) < 2:
        return
    repeated = rows.frame.duplicated(subset=key, keep=False)
    if not repeated.any():
        return
    first = int(repeated.to_numpy().argmax())
    values = tuple(rows.frame[c].iloc[first] for c in key)
    same = (rows.frame[key] == rows.frame[key].iloc[first]).all(axis=1)
    shown = ", ".join(f"{c}={_shown(v)}" for c, v in zip(key, values, strict=True))
    raise TableSchemaError(
        f"{where}: key ({', '.join(key)}) is not unique: {shown} appears {int(same.sum())} "
        f"times, first {rows.at(first)}. Nothing was written. Drop the duplicates, or declare "
        f"a key that identifies a row."
    )


def _shown(value: Any) -> str:
    if isinstance(value, datetime) and value == datetime.combine(value.date(), datetime.min.time()):
        return str(value.date())
    return repr(value) if isinstance(value, str) else str(value)


# ---------------------------------------------------------------------------------------------
# a declaration against the table the database holds


@dataclass(frozen=True, slots=True)
class Difference:
    """How a table differs from its declaration, and the SQL that migrates it (None: the
    database cannot make this change in place)."""

    problem: str
    sql: str | None


def stored_columns(declared: Table, managed: bool) -> tuple[list[Column], tuple[str, ...]]:
    """The columns and primary key a declared table is created with.

    A write without partition_col keeps its date in conveyor's own column, which leads the
    key: rows then need to be unique within a partition date, the only key a user who never
    sees that column can mean.
    """
    columns = [Column(c, k, k, nullable=c in declared.nullable, key=0) for c, k in declared.columns]
    key = declared.key
    if managed:
        columns.append(Column(PARTITION_COLUMN, "date", "date", nullable=False))
        key = (PARTITION_COLUMN, *key) if key else ()
    return columns, key


def differences(
    dialect: str,
    name: TableName,
    declared: Table,
    managed: bool,
    existing: list[Column],
    found_key: tuple[str, ...],
    constraint: str | None,
) -> list[Difference]:
    """Every way the table differs from the declaration, each with its migration."""
    wanted, key = stored_columns(declared, managed)
    table = {c.name: c for c in existing}
    spelled = DDL[dialect]
    pg = dialect == "postgresql"
    alter = f"ALTER TABLE {name.sql}"
    found: list[Difference] = []
    for column in wanted:
        other = table.get(column.name)
        quoted = quote(column.name)
        kind = spelled[column.kind or "text"]
        if other is None:
            if column.nullable:
                sql = f"{alter} ADD COLUMN {quoted} {kind}"
            elif pg:  # a NOT NULL column needs values for the rows already there
                sql = (f"{alter} ADD COLUMN {quoted} {kind}; UPDATE {name.sql} SET {quoted} = "
                       f"<value>; {alter} ALTER COLUMN {quoted} SET NOT NULL")  # fmt: skip
            else:
                sql = None
            found.append(
                Difference(
                    f"column {column.name!r} ({label(column.kind)}) is declared but not in the "
                    f"table",
                    sql,
                )
            )
            continue
        if column.name == PARTITION_COLUMN:
            continue  # conveyor's own: always written, whatever the table says
        if other.kind != column.kind:
            shown = label(other.kind) if other.kind else other.origin
            found.append(
                Difference(
                    f"column {column.name!r} is {shown} in the table but declared "
                    f"{label(column.kind)}",
                    f"{alter} ALTER COLUMN {quoted} TYPE {kind} USING {quoted}::{kind}"
                    if pg
                    else None,
                )
            )
        if other.nullable != column.nullable:
            problem = (
                f"column {column.name!r} allows missing values in the table but is declared NOT "
                f"NULL"
                if not column.nullable
                else f"column {column.name!r} is NOT NULL in the table but declared nullable"
            )
            change = "SET NOT NULL" if not column.nullable else "DROP NOT NULL"
            found.append(
                Difference(problem, f"{alter} ALTER COLUMN {quoted} {change}" if pg else None)
            )
    for column in existing:
        if column.name not in {c.name for c in wanted}:
            found.append(
                Difference(
                    f"column {column.name!r} is in the table but not declared",
                    f"{alter} DROP COLUMN {quote(column.name)}",
                )
            )
    if tuple(found_key) != tuple(key):
        steps = []
        if found_key and constraint:
            steps.append(f"{alter} DROP CONSTRAINT {quote(constraint)}")
        if key:
            steps.append(
                f"{alter} ADD CONSTRAINT {quote(name.key_name)} PRIMARY KEY "
                f"({', '.join(quote(c) for c in key)})"
            )
        had = f"({', '.join(found_key)})" if found_key else "none"
        wants = f"({', '.join(key)})" if key else "none"
        found.append(
            Difference(
                f"the table's key is {had} but the declared key is {wants}",
                "; ".join(steps) if pg else None,
            )
        )
    return found


def migration_error(dialect: str, name: TableName, problems: list[Difference]) -> TableSchemaError:
    """The error for a table that differs from its declaration, with the migrations to run."""
    where = f"write_table({str(name)!r})"
    drop = (
        f"`conveyor db drop-table {name} --yes`, then write its partitions again with `conveyor "
        f"backfill PIPELINE --start FIRST --end LAST --reprocess all` (cached steps are reused)"
    )
    listed = "; ".join(p.problem for p in problems)
    if all(p.sql is not None for p in problems):
        statements = "; ".join(p.sql for p in problems if p.sql)
        fix = f"Migrate it with: {statements}; or drop it: {drop}"
    elif dialect == "sqlite":
        fix = (
            f"SQLite cannot change a column's type or NOT NULL, add a NOT NULL column or change "
            f"a key in place, so drop the table and write it again: {drop}"
        )
    else:
        fix = f"Drop the table and write it again: {drop}"
    return TableSchemaError(
        f"{where}: the table differs from its declaration: {listed}. Nothing was written. {fix}."
    )
