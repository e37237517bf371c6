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

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor._runtime.codecs import (
    FORMATS,
    JSON_TYPES,
    Metrics,
    decode_json_value,
    read_file,
    write_file,
)

__all__ = ["FORMATS", "JSON_TYPES", "ArtifactRef", "Codec", "Metrics",
           "decode_json_value", "read_value", "write_value"]  # fmt: skip

# What a step environment needs to read and write each format.
FORMAT_REQUIREMENTS: dict[str, tuple[str, ...]] = {
    "parquet": ("pandas", "pyarrow"),
    "npy": ("numpy",),
    "json": (),
    "joblib": ("joblib",),
    "file": (),
    "dir": (),
}


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


def write_value(value: Any, codec: Codec, path: str | Path) -> ArtifactRef:
    """Write `value` to `path` atomically, hashing in the same pass; return its reference."""
    sha256, size = write_file(value, codec.format, codec.json_type, os.fspath(path))
    return ArtifactRef(sha256, codec, size)


def read_value(path: str | Path, codec: Codec, sha256: str | None = None) -> Any:
    """Load a value from `path`, refusing it if its bytes do not hash to `sha256`."""
    return read_file(os.fspath(path), codec.format, codec.json_type, sha256)
