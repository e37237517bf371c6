"""PostgreSQL's binary COPY format, encoded from Arrow arrays with vectorized numpy and Arrow.

Row-by-row `copy.write_row` spends most of its time in Python per value. Here a chunk of rows is
encoded column-wise instead:

- every fixed-width column without NULLs goes into one numpy structured array — per row, the
  field count, then each field's length and its big-endian value — one record per row;
- a fixed-width column with NULLs, and each text or bytes column, becomes an Arrow binary array
  holding per row the field's length and bytes (or the length -1 for NULL);
- `binary_join_element_wise` concatenates the parts row by row, and the joined array's data
  buffer is the COPY stream for the chunk.

Columns are sent in that order (COPY takes an explicit column list), so the record comes first.
Chunks of `CHUNK_ROWS` keep memory flat and let the server parse one chunk while the next is
encoded (measured: faster than psycopg's `write_row` and than the text format, whose float
parsing dominates server time).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"
CHUNK_ROWS = 50_000

PG_EPOCH_DAYS = 10_957  # 2000-01-01, PostgreSQL's epoch, in days since 1970-01-01
PG_EPOCH_MICROS = PG_EPOCH_DAYS * 86_400 * 1_000_000

# Big-endian numpy type of each fixed-width kind's binary value.
FIXED = {
    "boolean": ">u1",
    "bigint": ">i8",
    "double": ">f8",
    "date": ">i4",
    "timestamp": ">i8",
    "timestamptz": ">i8",
}
VARIABLE = ("text", "bytes")


@dataclass(frozen=True, slots=True)
class Layout:
    """The order columns are sent in: the record's columns first, then the rest."""

    record: tuple[int, ...]  # column positions inside the fixed-width record
    rest: tuple[int, ...]  # column positions sent as variable-width parts


def layout(kinds: Sequence[str], nullable: Sequence[bool]) -> Layout:
    """Which columns fit the fixed-width record (fixed width, no NULLs in the whole frame)."""
    record = tuple(i for i, k in enumerate(kinds) if k in FIXED and not nullable[i])
    rest = tuple(i for i in range(len(kinds)) if i not in record)
    return Layout(record, rest)


def _numbers(array: Any, kind: str) -> Any:
    """The values of a fixed-width Arrow array as numpy, in PostgreSQL's units (nulls as 0)."""
    import numpy as np
    import pyarrow as pa

    if kind == "boolean":
        return array.fill_null(False).to_numpy(zero_copy_only=False).astype(np.uint8)
    if kind == "date":
        days = array.cast(pa.int32()).fill_null(0).to_numpy()
        return days - np.int32(PG_EPOCH_DAYS)
    if kind in ("timestamp", "timestamptz"):
        micros = array.cast(pa.int64()).fill_null(0).to_numpy()
        return micros - np.int64(PG_EPOCH_MICROS)
    return array.fill_null(0).to_numpy()


def _length_prefixed(values: Any, width: int, valid: Any) -> Any:
    """A binary Arrow array of `length + value` per row, or just -1 where `valid` is False."""
    import numpy as np
    import pyarrow as pa

    n = len(values)
    fields = np.empty((n, 4 + width), dtype=np.uint8)
    fields[:, :4] = np.frombuffer(np.array([width], ">i4").tobytes(), dtype=np.uint8)
    fields[:, 4:] = values.view(np.uint8).reshape(n, width)
    fields[~valid, :4] = 0xFF  # length -1: NULL, no value bytes follow
    keep = np.ones((n, 4 + width), dtype=bool)
    keep[~valid, 4:] = False
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.where(valid, 4 + width, 4), out=offsets[1:])
    data = fields[keep]  # row-major: each row's kept bytes, in row order
    return pa.Array.from_buffers(
        pa.large_binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )


def _variable(array: Any) -> tuple[Any, Any]:
    """(big-endian int32 lengths, -1 for NULL; the bytes as large_binary) of a text column."""
    import pyarrow as pa
    import pyarrow.compute as pc

    data = array.cast(pa.large_binary())
    lengths = pc.binary_length(data).fill_null(-1).to_numpy().astype(">i4")
    return lengths, data.fill_null(b"")


def encode(arrays: Sequence[Any], kinds: Sequence[str], plan: Layout) -> bytes | memoryview:
    """One chunk of rows in binary COPY format (no header or trailer)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(arrays[0])
    fields: list[tuple[str, str]] = [("count", ">i2")]
    for i in plan.record:
        fields += [(f"l{i}", ">i4"), (f"v{i}", FIXED[kinds[i]])]
    first_variable = next((i for i in plan.rest if kinds[i] in VARIABLE), None)
    if first_variable is not None and plan.rest[0] == first_variable:
        fields.append((f"l{first_variable}", ">i4"))  # its length rides in the record
    record = np.empty(n, dtype=np.dtype(fields))
    record["count"] = len(kinds)
    for i in plan.record:
        record[f"l{i}"] = np.dtype(FIXED[kinds[i]]).itemsize
        record[f"v{i}"] = _numbers(arrays[i], kinds[i])
    rest = []
    for i in plan.rest:
        array, kind = arrays[i], kinds[i]
        if kind in VARIABLE:
            lengths, data = _variable(array)
            if i == first_variable and plan.rest[0] == i:
                record[f"l{i}"] = lengths
            else:
                rest.append(
                    pa.Array.from_buffers(
                        pa.binary(4), n, [None, pa.py_buffer(lengths.view(np.uint8))]
                    ).cast(pa.large_binary())
                )
            rest.append(data)
        else:
            values = _numbers(array, kind).astype(FIXED[kind])
            valid = array.is_valid().to_numpy(zero_copy_only=False)
            rest.append(_length_prefixed(values, values.dtype.itemsize, valid))
    # the record is complete only now: Arrow copies it when casting
    parts = [
        pa.Array.from_buffers(
            pa.binary(record.itemsize), n, [None, pa.py_buffer(record.view(np.uint8))]
        ).cast(pa.large_binary()),
        *rest,
    ]
    if len(parts) == 1:
        return record.tobytes()
    rows = pc.binary_join_element_wise(*parts, pa.scalar(b"", pa.large_binary()))
    offsets = np.frombuffer(rows.buffers()[1], dtype=np.int64)
    start, end = offsets[rows.offset], offsets[rows.offset + len(rows)]
    return memoryview(rows.buffers()[2])[start:end]


def stream(arrays: Sequence[Any], kinds: Sequence[str]) -> tuple[Layout, Iterator[Any]]:
    """The column order to name in COPY, and the binary stream's pieces chunk by chunk."""
    plan = layout(kinds, [a.null_count > 0 for a in arrays])

    def pieces() -> Iterator[Any]:
        yield HEADER
        total = len(arrays[0]) if arrays else 0
        for start in range(0, total, CHUNK_ROWS):
            chunk = [a.slice(start, CHUNK_ROWS) for a in arrays]
            yield encode(chunk, kinds, plan)
        yield TRAILER

    return plan, pieces()
