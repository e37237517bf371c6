"""Files as step inputs: a `Path` parameter is its content, hashed and shipped like any value.

A component parameter hinted `pathlib.Path` receives a file (or a directory) named by a pipeline
parameter or a literal. Its content, not its name, is what the step depends on: the cache key
holds its sha256 (a directory's: of a deterministic tar of every file under it), so editing a
CSV in place re-runs the step ("input file data/x.csv changed"). At run time the bytes go into
the artifact store like an output would, so a container or a machine that never sees the
project gets the file; the step receives a path to a verified, read-only copy.
"""

from __future__ import annotations

import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor._runtime.hashing import sha256_path
from conveyor.dsl.artifacts import ArtifactRef, Codec
from conveyor.engine.bundles import Bundle, pack
from conveyor.engine.store import ArtifactStore
from conveyor.errors import ParameterError


@dataclass(frozen=True, slots=True)
class FileInput:
    """A path argument resolved: what it names, and the reference of its content."""

    shown: str  # as the user wrote it (reasons, errors)
    path: Path  # resolved against the project root
    ref: ArtifactRef


class FileHasher:
    """Hashes path arguments, memoized by (path, size, mtime): planning hashes each file once."""

    def __init__(self, project_root: str | Path) -> None:
        self.root = Path(project_root)
        self._lock = threading.Lock()
        self._known: dict[tuple[str, int, int], ArtifactRef] = {}

    def resolve(self, value: Any, where: str) -> FileInput:
        """The content reference of the file or directory `value` names."""
        if not isinstance(value, str | Path):
            raise ParameterError(f"{where}: expected a path (str or Path), got {value!r}")
        path = Path(value).expanduser()
        if not path.is_absolute():
            path = self.root / path
        if not path.exists():
            raise ParameterError(f"{where}: {value} does not exist (looked at {path})")
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            ref = self._known.get(key) if path.is_file() else None
        if ref is None:
            if path.is_file():
                ref = ArtifactRef(sha256_path(path), Codec("file"), stat.st_size)
                with self._lock:
                    self._known[key] = ref
            else:
                bundle = directory_bundle(path)
                ref = ArtifactRef(bundle.sha256, Codec("dir"), len(bundle.data))
        return FileInput(str(value), path, ref)


def directory_bundle(path: Path) -> Bundle:
    """Every file under `path` as a deterministic tar (names relative to it)."""
    files = [p for p in path.rglob("*") if p.is_file()]
    return pack((p.relative_to(path).as_posix(), p) for p in files)


def publish(store: ArtifactStore, file: FileInput) -> ArtifactRef:
    """Put a path argument's content into the store (once), as its reference names it."""
    if not store.exists(file.ref):
        staging = store.root / ".staging" / f"path-{file.ref.sha256[:16]}-{os.getpid()}"
        staging.parent.mkdir(parents=True, exist_ok=True)
        if file.ref.codec.format == "dir":
            staging.write_bytes(directory_bundle(file.path).data)
        else:
            shutil.copyfile(file.path, staging)
        if sha256_path(staging) != file.ref.sha256:
            staging.unlink(missing_ok=True)
            raise ParameterError(f"{file.shown} changed while the run was starting; run again")
        store.ingest(staging, file.ref)
    return file.ref
