"""Column types: from a frame's dtypes to SQL, back from the database, and values in between.

conveyor maps columns through a small vocabulary of its own, the same on both back ends:

| type        | from pandas                          | PostgreSQL       | loaded as            |
|-------------|--------------------------------------|------------------|----------------------|
| boolean     | bool, boolean                        | boolean          | boolean (nullable)   |
| bigint      | int8..int64, uint8..uint32, Int64    | bigint           | Int64 (nullable)     |
| double      | float32, float64, Float64            | double precision | float64 (NaN = NULL) |
| text        | str, string, category, object of str | text             | str                  |
| date        | object of datetime.date, date32      | date             | object of date       |
| timestamp   | datetime64 without a time zone       | timestamp        | datetime64[us]       |
| timestamptz | datetime64 with a time zone          | timestamptz      | datetime64[us, UTC]  |
| bytes       | object of bytes                      | bytea            | object of bytes      |

SQLite declares the same names (BLOB for bytes) and stores dates and timestamps as ISO text
(timestamptz in UTC with a `Z`), which sorts and compares in time order.

Loaded dtypes do not depend on the data (an integer column with no NULLs is still Int64), so a
table's content hash is stable. NaN, None, NaT and pd.NA are all written as NULL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from conveyor._runtime.tables import TYPES
from conveyor.errors import TableSchemaError

__all__ = ["DDL", "LABEL", "NULL", "TYPES", "WIDENS", "Column", "database_kind", "fits",
           "frame_column", "label"]  # fmt: skip
NULL = "null"  # a column of nothing but missing values: fits any type

# How each type is spelled in DDL, per dialect.
DDL = {
    "postgresql": {
        "boolean": "BOOLEAN",
        "bigint": "BIGINT",
        "double": "DOUBLE PRECISION",
        "text": "TEXT",
        "date": "DATE",
        "timestamp": "TIMESTAMP",
        "timestamptz": "TIMESTAMPTZ",
        "bytes": "BYTEA",
    },
    "sqlite": {
        "boolean": "BOOLEAN",
        "bigint": "BIGINT",
        "double": "DOUBLE PRECISION",
        "text": "TEXT",
        "date": "DATE",
        "timestamp": "TIMESTAMP",
        "timestamptz": "TIMESTAMPTZ",
        "bytes": "BLOB",
    },
}

# How errors spell each type (what a user reading a schema would recognize).
LABEL = {
    "boolean": "boolean",
    "bigint": "bigint",
    "double": "double precision",
    "text": "text",
    "date": "date",
    "timestamp": "timestamp",
    "timestamptz": "timestamp with time zone",
    "bytes": "bytes",
    NULL: "all-missing",
}

# A frame value of the left type may go into a column of the right type.
WIDENS = {("bigint", "double")}


def label(kind: str | None) -> str:
    if kind is None:
        return "an unsupported type"
    return LABEL.get(kind, kind)


@dataclass(frozen=True, slots=True)
class Column:
    """A column of a table or frame: its name, conveyor type, and how it shows in its origin."""

    name: str
    kind: str | None  # one of TYPES, NULL, or None for a database type conveyor cannot map
    origin: str  # the pandas dtype, or the database's own type name
    nullable: bool = True  # False: NOT NULL in the table (or declared so)
    key: int = 0  # its position in the table's primary key, from 1 (0: not in the key)


def fits(frame_kind: str, table_kind: str | None) -> bool:
    """Whether frame values of `frame_kind` can be written into a `table_kind` column."""
    if table_kind is None:
        return False
    return frame_kind in (NULL, table_kind) or (frame_kind, table_kind) in WIDENS


# ---------------------------------------------------------------------------------------------
# frames -> types


def frame_column(series: Any, name: str, table: str) -> Column:
    """The conveyor type of a frame column, or a TableSchemaError naming what is unsupported."""
    import pandas as pd

    dtype = series.dtype
    origin = str(dtype)
    if isinstance(dtype, pd.ArrowDtype):
        kind = _arrow_kind(dtype.pyarrow_dtype)
    elif isinstance(dtype, pd.CategoricalDtype):
        inner = frame_column(pd.Series(dtype.categories), name, table)
        kind = inner.kind
    elif pd.api.types.is_bool_dtype(dtype):
        kind = "boolean"
    elif pd.api.types.is_integer_dtype(dtype):
        kind = None if str(dtype).lower() == "uint64" else "bigint"
    elif pd.api.types.is_float_dtype(dtype):
        kind = "double"
    elif isinstance(dtype, pd.DatetimeTZDtype):
        kind = "timestamptz"
    elif pd.api.types.is_datetime64_dtype(dtype):
        kind = "timestamp"
    elif isinstance(dtype, pd.StringDtype):
        kind = "text"
    elif pd.api.types.is_object_dtype(dtype):
        kind = _object_kind(series)
        origin = f"object of {_inferred(series)}"
    else:
        kind = None
    if kind is None:
        raise TableSchemaError(
            f"table {table!r}: column {name!r} has dtype {origin}, which conveyor cannot store; "
            f"convert it to one of: bool, integer (up to int64), float, str, datetime.date, "
            f"datetime64, bytes"
        )
    return Column(name, kind, origin)


def _inferred(series: Any) -> str:
    import pandas as pd

    return pd.api.types.infer_dtype(series, skipna=True)


def _object_kind(series: Any) -> str | None:
    inferred = _inferred(series)
    if inferred == "empty":
        return NULL
    if inferred == "datetime":
        zones = {getattr(v, "tzinfo", None) is not None for v in series.dropna()}
        return "timestamptz" if zones == {True} else "timestamp" if zones == {False} else None
    return {
        "string": "text",
        "date": "date",
        "integer": "bigint",
        "floating": "double",
        "mixed-integer-float": "double",
        "boolean": "boolean",
        "bytes": "bytes",
    }.get(inferred)


def _arrow_kind(arrow_type: Any) -> str | None:
    import pyarrow as pa

    if pa.types.is_boolean(arrow_type):
        return "boolean"
    if pa.types.is_integer(arrow_type):
        return None if arrow_type == pa.uint64() else "bigint"
    if pa.types.is_floating(arrow_type):
        return "double"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "text"
    if pa.types.is_date(arrow_type):
        return "date"
    if pa.types.is_timestamp(arrow_type):
        return "timestamptz" if arrow_type.tz else "timestamp"
    if pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type):
        return "bytes"
    return None


# ---------------------------------------------------------------------------------------------
# database types -> conveyor types


def database_kind(dialect: str, declared: str) -> str | None:
    """Map a column type the database reports to conveyor's vocabulary (None: not mappable)."""
    text = declared.strip().lower()
    if dialect == "postgresql":
        return {
            "boolean": "boolean",
            "bigint": "bigint",
            "integer": "bigint",
            "smallint": "bigint",
            "double precision": "double",
            "real": "double",
            "numeric": "double",
            "text": "text",
            "character varying": "text",
            "character": "text",
            "date": "date",
            "timestamp without time zone": "timestamp",
            "timestamp with time zone": "timestamptz",
            "bytea": "bytes",
        }.get(text)
    # SQLite: declared types are free text; follow its affinity rules, then the usual names.
    if text.startswith("bool"):
        return "boolean"
    if "int" in text:
        return "bigint"
    if any(k in text for k in ("real", "floa", "doub", "numeric", "decimal")):
        return "double"
    if any(k in text for k in ("char", "clob", "text")):
        return "text"
    if text in ("timestamptz", "timestamp with time zone"):
        return "timestamptz"
    if text.startswith(("timestamp", "datetime")):
        return "timestamp"
    if text == "date":
        return "date"
    if text in ("blob", "bytea"):
        return "bytes"
    return None
