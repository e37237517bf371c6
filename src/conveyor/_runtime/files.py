"""Writing a file all at once: readers see the old file or the whole new one, never a part.

Every file conveyor publishes for another reader (an artifact, a result document, a lock, a
cache entry, a state file) goes through `atomic_write`: a unique temporary name in the same
folder, renamed into place only when complete, removed when the write fails. There is no fsync:
a torn file after a power loss is caught by the hash check (artifacts) or re-resolved (locks).
"""

from __future__ import annotations

import contextlib
import os

TYPE_CHECKING = False  # not `from typing import ...`: step processes should not pay for typing

if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import IO, Any


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file beside `path` for writing; on success it replaces `path`."""
    directory, name = os.path.split(os.fspath(path))
    os.makedirs(directory or ".", exist_ok=True)
    tmp = os.path.join(directory, f".{name}.tmp-{os.getpid()}-{os.urandom(4).hex()}")
    try:
        with open(tmp, mode) as file:
            yield file
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Replace `path` with `text` in one step (see `atomic_write`)."""
    with atomic_write(path) as file:
        file.write(text)
