"""Table declarations: a table's columns, their types, which may be missing, and its key, once.

    FEATURES = Table(
        "features",
        columns={"date": "timestamp", "symbol": str, "close": float, "volume": "bigint"},
        key=("date", "symbol"),
        nullable=("volume",),
    )
    write_table(rows, FEATURES, partition=(start, end), partition_col="date")

A declaration travels through a pipeline's DAG as JSON (`to_json`), so it lives here, on the
standard library alone: a component module may declare or read one inside a step too. What a
write does with it is `conveyor.db.writes`' business.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime

from conveyor.errors import TableSchemaError

TYPE_CHECKING = False  # not `from typing import ...`: step processes should not pay for typing

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from typing import Any

# conveyor's column types, the same on SQLite and PostgreSQL (see conveyor.db.columns).
TYPES = ("boolean", "bigint", "double", "text", "date", "timestamp", "timestamptz", "bytes")
# Python types a declaration may name instead (a naive datetime is a `timestamp`; write
# "timestamptz" for aware ones).
PYTHON_TYPES: dict[type, str] = {
    bool: "boolean",
    int: "bigint",
    float: "double",
    str: "text",
    date: "date",
    datetime: "timestamp",
    bytes: "bytes",
}
# The column conveyor adds to hold the partition date when a write has no partition_col.
PARTITION_COLUMN = "conveyor_partition"
MAX_NAME_BYTES = 63  # PostgreSQL truncates longer names, so two could silently become one
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
JSON_MARKER = "conveyor_table"  # the key that tells a declaration's JSON from any other dict


def column_name_problem(name: object) -> str | None:
    """Why `name` cannot name a column (None: it can). Any text works: names are quoted."""
    if not isinstance(name, str):
        return f"must be a string, got {type(name).__name__} ({name!r})"
    if not name or not name.strip():
        return "is empty"
    if "\x00" in name:
        return "contains a NUL character"
    if len(name.encode()) > MAX_NAME_BYTES:
        return f"is longer than {MAX_NAME_BYTES} bytes; shorten it"
    return None


@dataclass(frozen=True, slots=True, init=False)
class Table:
    """A declared table: its columns' types, the columns that may hold missing values, its key.

    Columns are NOT NULL unless listed in `nullable`; `key` columns are unique together (the
    table's primary key) and never nullable. Types are conveyor's (`boolean`, `bigint`, `double`,
    `text`, `date`, `timestamp`, `timestamptz`, `bytes`) or the Python types `bool`, `int`,
    `float`, `str`, `date`, `datetime`, `bytes`.
    """

    name: str
    columns: tuple[tuple[str, str], ...]  # (column, conveyor type) in table order
    key: tuple[str, ...]
    nullable: tuple[str, ...]

    def __init__(
        self,
        name: str,
        columns: Mapping[str, str | type],
        *,
        key: str | Iterable[str] = (),
        nullable: str | Iterable[str] = (),
    ) -> None:
        where = f"Table({name!r})"
        if not isinstance(name, str) or not all(_IDENTIFIER.match(p) for p in name.split(".")):
            raise TableSchemaError(
                f"{where}: the table name must be `table` or `schema.table`, each part letters, "
                f"digits and underscores, starting with a letter or underscore"
            )
        if name.count(".") > 1:
            raise TableSchemaError(f"{where}: write `table` or `schema.table` (one dot at most)")
        if not hasattr(columns, "items") or not columns:
            raise TableSchemaError(
                f"{where}: columns must be a non-empty mapping of column name -> type, e.g. "
                f'columns={{"date": "date", "close": float}}'
            )
        typed: list[tuple[str, str]] = []
        seen: dict[str, str] = {}
        for column, kind in columns.items():
            problem = column_name_problem(column)
            if problem:
                raise TableSchemaError(f"{where}: column name {column!r} {problem}")
            if column == PARTITION_COLUMN:
                raise TableSchemaError(
                    f"{where}: column {PARTITION_COLUMN!r} is conveyor's own (it holds the "
                    f"partition date of a write without partition_col); leave it out"
                )
            other = seen.setdefault(column.lower(), column)
            if other != column:
                raise TableSchemaError(
                    f"{where}: columns {other!r} and {column!r} differ only in case; SQLite "
                    f"cannot tell them apart, so rename one"
                )
            typed.append((column, _type_name(kind, f"{where}, column {column!r}")))
        names = [c for c, _ in typed]
        keys = _names(key, "key", names, where)
        nulls = _names(nullable, "nullable", names, where)
        both = [c for c in keys if c in nulls]
        if both:
            raise TableSchemaError(
                f"{where}: column {both[0]!r} is in the key and in nullable; a key column always "
                f"has a value, so take it out of one"
            )
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "columns", tuple(typed))
        object.__setattr__(self, "key", keys)
        object.__setattr__(self, "nullable", nulls)

    @property
    def names(self) -> tuple[str, ...]:
        """The declared column names, in table order."""
        return tuple(c for c, _ in self.columns)

    def type_of(self, column: str) -> str:
        """The declared type of `column` (KeyError if it is not declared)."""
        for name, kind in self.columns:
            if name == column:
                return kind
        raise KeyError(column)

    def to_json(self) -> dict[str, Any]:
        """The declaration as JSON values (how a pipeline's DAG carries it)."""
        return {
            JSON_MARKER: self.name,
            "columns": [[c, k] for c, k in self.columns],
            "key": list(self.key),
            "nullable": list(self.nullable),
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Table:
        """The declaration `to_json` wrote."""
        try:
            return cls(
                value[JSON_MARKER],
                {c: k for c, k in value["columns"]},
                key=value.get("key") or (),
                nullable=value.get("nullable") or (),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise TableSchemaError(f"not a table declaration: {value!r} ({exc})") from exc

    def __repr__(self) -> str:
        columns = ", ".join(f"{c!r}: {k!r}" for c, k in self.columns)
        extra = "".join(
            f", {field}={values!r}"
            for field, values in (("key", self.key), ("nullable", self.nullable))
            if values
        )
        return f"Table({self.name!r}, columns={{{columns}}}{extra})"


def is_declaration(value: object) -> bool:
    """Whether `value` is a declaration's JSON (as a write_table step's `table` input holds)."""
    return isinstance(value, dict) and JSON_MARKER in value


def table_name(value: object) -> str:
    """The table name of a name, a Table or a declaration's JSON (for messages and records)."""
    if isinstance(value, Table):
        return value.name
    if is_declaration(value):
        assert isinstance(value, dict)
        return str(value[JSON_MARKER])
    return str(value)


# How errors spell two of the types, accepted too.
_SPELLED = {"double precision": "double", "timestamp with time zone": "timestamptz"}


def _type_name(kind: object, where: str) -> str:
    if isinstance(kind, type) and kind in PYTHON_TYPES:
        return PYTHON_TYPES[kind]
    if isinstance(kind, str):
        text = " ".join(kind.lower().split())
        if text in TYPES or text in _SPELLED:
            return _SPELLED.get(text, text)
    shown = kind.__name__ if isinstance(kind, type) else repr(kind)
    raise TableSchemaError(
        f"{where}: type {shown} is not one conveyor stores; use one of {', '.join(TYPES)} (or "
        f"the Python types bool, int, float, str, date, datetime, bytes)"
    )


def _names(
    value: str | Iterable[str], what: str, declared: list[str], where: str
) -> tuple[str, ...]:
    names = (value,) if isinstance(value, str) else tuple(value)
    for name in names:
        if name not in declared:
            raise TableSchemaError(
                f"{where}: {what} names {name!r}, which is not a declared column; the columns "
                f"are {', '.join(declared)}"
            )
    if len(set(names)) != len(names):
        raise TableSchemaError(f"{where}: {what} names a column twice ({', '.join(names)})")
    return names
