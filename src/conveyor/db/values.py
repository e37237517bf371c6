"""Values between frames and the database, through Arrow (vectorized, no row-by-row pandas).

Writing: a frame column becomes an Arrow array of its table column's type (so an integer frame
column going into a double column arrives as floats), then Python values for the driver — ISO
text for SQLite's dates and timestamps. Reading: database values become Arrow arrays, then a
frame with the stable dtypes listed in `conveyor.db.columns`.
"""

from __future__ import annotations

from typing import Any

from conveyor.errors import TableSchemaError


def arrow_type(kind: str) -> Any:
    """The Arrow type values of a conveyor column type travel as."""
    import pyarrow as pa

    return {
        "boolean": pa.bool_(),
        "bigint": pa.int64(),
        "double": pa.float64(),
        "text": pa.string(),
        "date": pa.date32(),
        "timestamp": pa.timestamp("us"),
        "timestamptz": pa.timestamp("us", tz="UTC"),
        "bytes": pa.binary(),
        "null": pa.null(),
    }[kind]


def to_arrow(series: Any, kind: str, column: str) -> Any:
    """A frame column as an Arrow array of `kind` (missing values of any spelling become null)."""
    import pyarrow as pa

    if kind == "null":  # nothing but missing values, whatever the dtype
        return pa.nulls(len(series))
    try:
        array = pa.array(series, from_pandas=True)
        if isinstance(array, pa.ChunkedArray):  # arrow-backed pandas columns
            array = array.combine_chunks()
        if pa.types.is_dictionary(array.type):
            array = array.dictionary_decode()
        if pa.types.is_null(array.type):
            return pa.nulls(len(array), arrow_type(kind))
        return array.cast(arrow_type(kind), safe=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise TableSchemaError(
            f"column {column!r}: cannot convert its values to {kind} ({exc}); make the column "
            f"hold one type"
        ) from exc


def cast(array: Any, kind: str) -> Any:
    """An Arrow array converted to `kind` (a no-op when it already is; ints widen to double)."""
    target = arrow_type(kind)
    return array if array.type == target else array.cast(target, safe=False)


def python_values(array: Any, kind: str, dialect: str) -> list[Any]:
    """Driver-ready Python values of an Arrow array (None for NULL)."""
    import pyarrow as pa

    if dialect == "sqlite" and kind in ("date", "timestamp", "timestamptz"):
        array = array.cast(pa.string())  # ISO text: 2024-01-31, 2024-01-31 09:30:00.000000[Z]
    values: list[Any]  # pyarrow is untyped (pyproject.toml, [tool.mypy])
    if array.null_count == 0 and kind in ("boolean", "bigint", "double"):
        values = array.to_numpy(zero_copy_only=False).tolist()  # far faster than to_pylist
    else:
        values = array.to_pylist()
    return values


def storage_type(kind: str, dialect: str) -> Any:
    """The Arrow type a column arrives as from the driver, before conversion to `kind`."""
    import pyarrow as pa

    if dialect == "sqlite":
        if kind in ("date", "timestamp", "timestamptz"):
            return pa.string()
        if kind == "boolean":
            return pa.int64()
    return arrow_type(kind)


def from_storage(array: Any, kind: str) -> Any:
    """Convert an array as stored (ISO text, 0/1) to the Arrow type of `kind`."""
    import pyarrow as pa
    import pyarrow.compute as pc

    target = arrow_type(kind)
    if array.type == target:
        return array
    if kind == "timestamptz" and pa.types.is_string(array.type):
        naive = pc.replace_substring_regex(array, r"(Z|[+-]00(:?00)?)$", "")
        return naive.cast(pa.timestamp("us")).cast(target)
    return array.cast(target)


def to_frame(columns: dict[str, Any], kinds: dict[str, str]) -> Any:
    """A DataFrame with stable dtypes from Arrow arrays (one per column, already typed)."""
    import pandas as pd
    import pyarrow as pa

    table = pa.table({name: from_storage(columns[name], kinds[name]) for name in kinds})
    mapper = {pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype()}
    frame = table.to_pandas(types_mapper=mapper.get, date_as_object=True)
    return frame.reset_index(drop=True)
