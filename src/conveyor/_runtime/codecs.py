"""Encoding values to files and back, hashed in the same pass. Kept lean for step processes.

This is what the executor imports in every step, so it uses only light standard modules; heavy
libraries (pandas, numpy, joblib) are imported only by the codec that needs them.
"""

from __future__ import annotations

import json
import os
from datetime import date, datetime

from conveyor._runtime.files import atomic_write
from conveyor._runtime.hashing import HashingWriter, sha256_buffer, to_jsonable
from conveyor.errors import ArtifactError, ArtifactIntegrityError

TYPE_CHECKING = False  # not `from typing import ...`: step processes should not pay for typing

if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

# "file" and "dir": a path's bytes (a directory as a deterministic tar); the step gets a path
FORMATS = ("parquet", "npy", "json", "joblib", "file", "dir")
JSON_TYPES = ("date", "datetime", "metrics")


class Metrics(dict[str, float]):  # a builtin generic: no `typing` in step processes
    """Metrics a step reports: a mapping of names to floats, shown in the CLI and stored."""


_LIBRARIES = {"parquet": ("pandas", "pyarrow.parquet"), "npy": ("numpy",), "joblib": ("joblib",)}


def preload(formats: Iterable[str]) -> None:
    """Import the libraries these formats need (so their import is not counted as I/O)."""
    import importlib

    for fmt in set(formats):
        for module in _LIBRARIES.get(fmt, ()):
            importlib.import_module(module)


def decode_json_value(value: Any, json_type: str | None) -> Any:
    """Turn a JSON value back into the Python type its hint asked for."""
    if value is None:
        return None
    if json_type == "date":
        return date.fromisoformat(value)
    if json_type == "datetime":
        return datetime.fromisoformat(value)
    if json_type == "metrics":
        return Metrics(value)
    return value


def _check_metrics(value: Any) -> None:
    if not isinstance(value, dict):
        raise TypeError(f"Metrics must be a dict of name -> float, got {type(value).__name__}")
    for key, number in value.items():
        if not isinstance(key, str) or isinstance(number, bool):
            raise TypeError(f"Metrics entry {key!r}: {number!r} is not a name -> float pair")
        try:
            float(number)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"Metrics entry {key!r}: {number!r} is not a number") from exc


def _encode(value: Any, fmt: str, json_type: str | None, out: HashingWriter) -> None:
    if fmt == "parquet":
        import pandas as pd

        if not isinstance(value, pd.DataFrame):
            raise TypeError(f"expected a pandas DataFrame (hint), got {type(value).__name__}")
        # pandas-stubs' WriteBuffer also asks for seek(), which a write-only stream lacks;
        # pyarrow writes it sequentially (HashingWriter.seekable() is False)
        value.to_parquet(out, engine="pyarrow")  # type: ignore[call-overload]
    elif fmt == "npy":
        import numpy as np

        if not isinstance(value, np.ndarray):
            raise TypeError(f"expected a numpy ndarray (hint), got {type(value).__name__}")
        np.save(out, value, allow_pickle=False)
    elif fmt == "json":
        if json_type == "metrics":
            _check_metrics(value)
            value = {k: float(v) for k, v in value.items()}
        elif json_type == "date" and not isinstance(value, date):
            raise TypeError(f"expected a date (hint), got {type(value).__name__}")
        out.write(json.dumps(to_jsonable(value), allow_nan=False).encode())
    elif fmt == "joblib":
        import joblib

        joblib.dump(value, out)
    elif fmt == "file":
        if not isinstance(value, str | os.PathLike) or not os.path.isfile(value):
            raise TypeError(f"expected the path of a file (hint Path), got {value!r}")
        with open(value, "rb") as source:
            while chunk := source.read(1 << 20):
                out.write(chunk)
    else:
        raise ValueError(f"unknown artifact format {fmt!r}; expected one of {FORMATS}")


def write_file(value: Any, fmt: str, json_type: str | None, path: str) -> tuple[str, int]:
    """Write `value` to `path` atomically, hashing in the same pass; return (sha256, size).

    The file appears under its final name only once complete (temp file + rename). There is no
    fsync: a torn file after a power loss is caught by the hash check on load.
    """
    with atomic_write(path, "wb") as raw:
        writer = HashingWriter(raw)
        _encode(value, fmt, json_type, writer)
    return writer.hexdigest(), writer.size


def read_file(path: str, fmt: str, json_type: str | None, sha256: str | None = None) -> Any:
    """Load a value from `path`, refusing it if its bytes do not hash to `sha256`.

    Parquet is read through pyarrow's own memory map: the DataFrame may keep pointing into the
    mapped file, and pyarrow's reference counting keeps the map alive exactly as long as that.
    """
    path = os.fspath(path)
    if fmt in ("file", "dir"):
        return _path_value(path, fmt, sha256)
    try:
        if fmt == "parquet":
            import pyarrow as pa

            buffer: Any = pa.memory_map(path, "r").read_buffer()
        else:
            with open(path, "rb") as f:
                buffer = f.read()
    except FileNotFoundError as exc:
        raise ArtifactError(
            f"artifact {path} is missing; re-run the step that produced it (`--force-step STEP`)"
        ) from exc
    if sha256 is not None:
        actual = sha256_buffer(buffer)
        if actual != sha256:
            raise ArtifactIntegrityError(
                f"artifact {path} does not match its content hash: expected sha256 {sha256}, "
                f"found {actual}. The file was changed or truncated after it was written; "
                f"delete it and re-run the step that produced it (`--force-step STEP`)."
            )
    return _decode(buffer, fmt, json_type)


def _path_value(path: str, fmt: str, sha256: str | None) -> Any:
    """A file input as a path (verified); a directory input unpacked into a private folder."""
    import pathlib

    from conveyor._runtime.hashing import sha256_path

    try:
        actual = sha256_path(path)
    except FileNotFoundError as exc:
        raise ArtifactError(f"input file {path} is missing") from exc
    if sha256 is not None and actual != sha256:
        raise ArtifactIntegrityError(
            f"input file {path} does not match its content hash: expected sha256 {sha256}, "
            f"found {actual}; it changed after conveyor hashed it. Run again."
        )
    if fmt == "file":
        return pathlib.Path(path)
    import tempfile

    from conveyor._runtime.bundles import unpack

    folder = os.path.join(tempfile.mkdtemp(prefix="conveyor-dir-"), "input")
    return pathlib.Path(unpack(path, folder))


def _decode(buffer: Any, fmt: str, json_type: str | None) -> Any:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(buffer).to_pandas()
    if fmt == "json":
        return decode_json_value(json.loads(bytes(buffer)), json_type)
    import io

    if fmt == "npy":
        import numpy as np

        return np.load(io.BytesIO(buffer), allow_pickle=False)
    if fmt == "joblib":
        import joblib

        return joblib.load(io.BytesIO(buffer))
    raise ValueError(f"unknown artifact format {fmt!r}; expected one of {FORMATS}")
