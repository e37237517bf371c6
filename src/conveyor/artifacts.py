"""Values as files: one codec per type hint, atomic writes, content addresses verified on load.

| hint                               | format    | file                       |
|------------------------------------|-----------|----------------------------|
| pandas.DataFrame                   | `parquet` | Parquet written by pyarrow |
| numpy.ndarray                      | `npy`     | NumPy `.npy`, no pickle    |
| int float str bool dict list date  | `json`    | JSON; dates as ISO strings |
| conveyor.Metrics                   | `json`    | JSON object of floats      |
| anything else (a fitted model)     | `joblib`  | joblib                     |

Heavy libraries are imported inside the functions that need them, so this module stays
importable in a step environment that has only what the step declared.
"""

from __future__ import annotations

import json
import mmap
import os
import secrets
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from conveyor._hashing import HashingWriter, sha256_buffer, to_jsonable
from conveyor.errors import ArtifactError, ArtifactIntegrityError

FORMATS = ("parquet", "npy", "json", "joblib")
JSON_TYPES = ("date", "datetime", "metrics")

# What a step environment needs to read and write each format.
FORMAT_REQUIREMENTS: dict[str, tuple[str, ...]] = {
    "parquet": ("pandas", "pyarrow"),
    "npy": ("numpy",),
    "json": (),
    "joblib": ("joblib",),
}


class Metrics(dict[str, float]):
    """Metrics a step reports: a mapping of names to floats, shown in the CLI and stored."""


@dataclass(frozen=True, slots=True)
class Codec:
    """How a value crosses a step boundary: the file format, and for JSON the value's type."""

    format: str
    json_type: str | None = None

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"unknown artifact format {self.format!r}; expected one of {FORMATS}")
        if self.json_type is not None and (
            self.format != "json" or self.json_type not in JSON_TYPES
        ):
            raise ValueError(f"json_type {self.json_type!r} is not valid for {self.format!r}")

    def to_dict(self) -> dict[str, str]:
        out = {"format": self.format}
        if self.json_type:
            out["type"] = self.json_type
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Codec:
        return cls(data["format"], data.get("type"))

    def describe(self) -> str:
        return f"{self.format}:{self.json_type}" if self.json_type else self.format


@dataclass(frozen=True, slots=True)
class ArtifactRef:
    """A reference to an artifact in the store: its content hash, codec and size in bytes."""

    sha256: str
    codec: Codec
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "size": self.size, **self.codec.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArtifactRef:
        return cls(data["sha256"], Codec.from_dict(data), int(data["size"]))


# ---------------------------------------------------------------------------------------------
# encoding and decoding values


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


def _encode(value: Any, codec: Codec, out: HashingWriter) -> None:
    fmt = codec.format
    if fmt == "parquet":
        import pandas as pd

        if not isinstance(value, pd.DataFrame):
            raise TypeError(f"expected a pandas DataFrame (hint), got {type(value).__name__}")
        value.to_parquet(out, engine="pyarrow")
    elif fmt == "npy":
        import numpy as np

        if not isinstance(value, np.ndarray):
            raise TypeError(f"expected a numpy ndarray (hint), got {type(value).__name__}")
        np.save(out, value, allow_pickle=False)
    elif fmt == "json":
        if codec.json_type == "metrics":
            _check_metrics(value)
            value = {k: float(v) for k, v in value.items()}
        elif codec.json_type == "date" and not isinstance(value, date):
            raise TypeError(f"expected a date (hint), got {type(value).__name__}")
        out.write(json.dumps(to_jsonable(value), allow_nan=False).encode())
    else:
        import joblib

        joblib.dump(value, out)


def write_value(value: Any, codec: Codec, path: str | Path) -> ArtifactRef:
    """Write `value` to `path` atomically, hashing in the same pass; return its reference.

    The file appears under its final name only once complete (temp file + rename). There is no
    fsync: a torn file after a power loss is caught by the hash check on load.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with tmp.open("wb") as raw:
            writer = HashingWriter(raw)
            _encode(value, codec, writer)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return ArtifactRef(writer.hexdigest(), codec, writer.size)


def _integrity_error(path: Path, expected: str, actual: str) -> ArtifactIntegrityError:
    return ArtifactIntegrityError(
        f"artifact {path} does not match its content hash: expected sha256 {expected}, "
        f"found {actual}. The file was changed or truncated after it was written; delete it "
        f"and re-run the step that produced it (`--force-step STEP`)."
    )


def read_value(path: str | Path, codec: Codec, sha256: str | None = None) -> Any:
    """Load a value from `path`, refusing it if its bytes do not hash to `sha256`."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            buffer: Any = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
    except FileNotFoundError as exc:
        raise ArtifactError(
            f"artifact {path} is missing; re-run the step that produced it (`--force-step STEP`)"
        ) from exc
    try:
        if sha256 is not None:
            actual = sha256_buffer(buffer)
            if actual != sha256:
                raise _integrity_error(path, sha256, actual)
        return _decode(buffer, codec)
    finally:
        if isinstance(buffer, mmap.mmap):
            buffer.close()


def _decode(buffer: Any, codec: Codec) -> Any:
    fmt = codec.format
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        # to_pandas copies out of the mapped buffer, so closing the map afterwards is safe
        return pq.read_table(pa.py_buffer(buffer)).to_pandas()
    if fmt == "npy":
        import io

        import numpy as np

        return np.load(io.BytesIO(buffer), allow_pickle=False)
    if fmt == "json":
        return decode_json_value(json.loads(bytes(buffer)), codec.json_type)
    import io

    import joblib

    return joblib.load(io.BytesIO(buffer))


# ---------------------------------------------------------------------------------------------
# the content-addressed store


class ArtifactStore:
    """A folder of artifacts named by their sha256 (`<root>/ab/abcdef...`)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path_for(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def exists(self, ref: ArtifactRef) -> bool:
        path = self.path_for(ref.sha256)
        try:
            return path.stat().st_size == ref.size
        except FileNotFoundError:
            return False

    def ingest(self, file: str | Path, ref: ArtifactRef) -> Path:
        """Move a finished file into the store under its hash (rename when on one filesystem)."""
        final = self.path_for(ref.sha256)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            Path(file).unlink(missing_ok=True)
            return final
        try:
            os.replace(file, final)
        except OSError:  # another filesystem: copy to a temp name, then rename
            import shutil

            tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
            shutil.copyfile(file, tmp)
            os.replace(tmp, final)
            Path(file).unlink(missing_ok=True)
        return final

    def put(self, value: Any, codec: Codec) -> ArtifactRef:
        """Write a value straight into the store."""
        staging = self.root / ".staging" / f"value-{os.getpid()}-{secrets.token_hex(6)}"
        ref = write_value(value, codec, staging)
        self.ingest(staging, ref)
        return ref

    def load(self, ref: ArtifactRef) -> Any:
        """Read and verify a value."""
        return read_value(self.path_for(ref.sha256), ref.codec, ref.sha256)
