"""Content hashes and canonical JSON: the identities the cache and the artifact store rest on."""

from __future__ import annotations

import json
import math
import os
from datetime import date, datetime

TYPE_CHECKING = False  # not `from typing import ...`: step processes should not pay for typing

if TYPE_CHECKING:  # `typing` and `pathlib` cost a step process milliseconds it should not pay
    from typing import IO, Any

CHUNK = 1 << 20


def to_jsonable(value: Any) -> Any:
    """Return `value` as plain JSON types; dates become ISO strings, tuples lists."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value!r} is not representable in JSON; use None or a finite number")
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"{type(value).__name__} value {value!r} is not JSON-able")


def canonical_json(value: Any) -> str:
    """Serialize `value` deterministically (sorted keys, no spaces, ISO dates)."""
    return json.dumps(to_jsonable(value), sort_keys=True, separators=(",", ":"), allow_nan=False)


# A value whose canonical JSON is longer than this is kept once, in the run's parameters; cache
# records and step records hold its hash (a 50 MB parameter was stored three times per run).
INLINE_LIMIT = 64 * 1024


def compact_json(text: str) -> str:
    """`text` (canonical JSON) as it is, or a short stand-in naming its hash and size."""
    if len(text) <= INLINE_LIMIT:
        return text
    return canonical_json({"sha256": sha256_text(text), "bytes": len(text.encode())})


def compact_value(value: Any) -> Any:
    """`value` as JSON types, or `{"sha256": ..., "bytes": ...}` when its JSON is large."""
    return json.loads(compact_json(canonical_json(value)))


def sha256_text(text: str) -> str:
    """Hex sha256 of a UTF-8 string."""
    import hashlib  # imported where used: OpenSSL costs a step that hashes nothing

    return hashlib.sha256(text.encode()).hexdigest()


def sha256_json(value: Any) -> str:
    """Hex sha256 of the canonical JSON of `value`."""
    return sha256_text(canonical_json(value))


def sha256_buffer(buffer: Any) -> str:
    """Hex sha256 of anything exposing the buffer protocol (bytes, mmap, memoryview)."""
    import hashlib

    return hashlib.sha256(memoryview(buffer)).hexdigest()


def sha256_path(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    import hashlib

    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


class HashingWriter:
    """A binary file wrapper that hashes bytes as they are written (one pass, no re-read)."""

    def __init__(self, raw: IO[bytes]) -> None:
        import hashlib

        self._raw = raw
        self._digest = hashlib.sha256()
        self.size = 0

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self._digest.update(view)
        self.size += view.nbytes
        return self._raw.write(view)

    def flush(self) -> None:
        self._raw.flush()

    def hexdigest(self) -> str:
        return self._digest.hexdigest()

    # pyarrow and numpy probe these to decide how to treat a Python file object
    @property
    def closed(self) -> bool:
        return self._raw.closed

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return self.size

    def close(self) -> None:
        """Flushing only; the owner closes the underlying file."""
        self._raw.flush()
