"""The content-addressed artifact store: a folder of values named by their sha256."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from conveyor._runtime.files import atomic_write
from conveyor.dsl.artifacts import ArtifactRef, Codec, read_value, write_value


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
        except OSError:  # another filesystem: copy under a temporary name, then rename
            import shutil

            with atomic_write(final, "wb") as target, Path(file).open("rb") as source:
                shutil.copyfileobj(source, target)
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
