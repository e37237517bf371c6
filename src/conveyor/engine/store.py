"""The artifact store: content-addressed values and small documents, local or at any fsspec URL.

    <store>/ab/<sha256>          a value, named by the hash of its bytes
    <store>/<key>                a document: a cache entry, a code bundle, an image record

The store is a local folder by default (`<home>/artifacts`) and any fsspec URL when steps run on
other machines (`CONVEYOR_ARTIFACTS=s3://bucket/prefix`, also `gs://`, `file://`). Writes are
atomic from a reader's view: a local file appears by rename, an object store publishes an object
only when its upload completes, and a cache entry is written after the values it names. Every
load is verified against the sha256 in its reference.

A remote store keeps a verified copy of every value this machine read or wrote in a local,
content-addressed cache (`~/.cache/conveyor/artifacts`), so runners hand steps plain files and
nothing is downloaded twice. It also mirrors the documents it read or wrote (per store), so a
fully cached re-run on the same machine needs no request at all: a value with a verified local
copy counts as present, an immutable document (a cache entry, named by its key) is read from its
mirror, and a document rewritten with the text it already has is not sent again.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path
from typing import Any

from conveyor._runtime.files import atomic_write, write_text_atomic
from conveyor._runtime.hashing import sha256_path
from conveyor.dsl.artifacts import ArtifactRef, Codec, read_value, write_value
from conveyor.errors import ArtifactError, ArtifactIntegrityError


def is_remote(url: str | Path) -> bool:
    """Whether `url` names an object store (s3://, gs://, ...) rather than a local folder."""
    text = str(url)
    return "://" in text and not text.startswith("file://")


def local_folder(url: str | Path) -> Path:
    """The folder a local store URL (a path or file://...) names."""
    text = str(url)
    return Path(text.removeprefix("file://")).expanduser()


class ArtifactStore:
    """Values named by their sha256, and documents named by key, in a folder or at a URL.

    Args:
        url: a local folder, `file://...`, or an fsspec URL such as `s3://bucket/prefix`.
        cache_dir: where a remote store keeps local copies (required for a remote URL).
    """

    def __init__(self, url: str | Path, *, cache_dir: str | Path | None = None) -> None:
        self.remote = is_remote(url)
        if self.remote:
            if cache_dir is None:
                raise ValueError(f"a remote artifact store ({url}) needs a local cache_dir")
            self.url = str(url).rstrip("/")
            self.root = Path(cache_dir)
            self._fs: Any = None
        else:
            self.root = local_folder(url)
            self.url = str(self.root)

    def __repr__(self) -> str:
        return f"ArtifactStore({self.url!r})"

    # ------------------------------------------------------------------------------ addresses

    @staticmethod
    def key_for(sha256: str) -> str:
        """The key of a value in the store: `ab/<sha256>`."""
        return f"{sha256[:2]}/{sha256}"

    def uri_for(self, sha256: str) -> str:
        """Where a value lives: a path for a local store, a URL for a remote one."""
        return self._uri(self.key_for(sha256))

    def _uri(self, key: str) -> str:
        return f"{self.url}/{key}" if self.remote else str(self.root / key)

    def path_for(self, sha256: str) -> Path:
        """The value's local file: in the store, or its cached copy (which may not exist yet)."""
        return self.root / self.key_for(sha256)

    @property
    def filesystem(self) -> Any:
        """The fsspec filesystem of a remote store (credentials from the environment)."""
        if self._fs is None:
            try:
                import fsspec
            except ImportError as exc:  # pragma: no cover - fsspec is a dependency
                raise ArtifactError("a remote artifact store needs fsspec installed") from exc
            try:
                self._fs, _ = fsspec.core.url_to_fs(self.url)
            except (ImportError, ValueError) as exc:
                raise ArtifactError(
                    f"cannot open the artifact store {self.url}: {exc}. For s3:// install "
                    f"s3fs (pip install 'conveyor[s3]'); for gs:// install gcsfs"
                ) from exc
        return self._fs

    # ------------------------------------------------------------------------------ values

    def exists(self, ref: ArtifactRef) -> bool:
        """Whether the store holds the value, at its recorded size (a remote store's verified
        local copy counts: this machine can use the value either way)."""
        try:
            if self.path_for(ref.sha256).stat().st_size == ref.size:
                return True
        except FileNotFoundError:
            pass
        return self.remote and self._in_remote(ref)

    def _in_remote(self, ref: ArtifactRef) -> bool:
        try:
            return int(self.filesystem.size(self.uri_for(ref.sha256))) == ref.size
        except FileNotFoundError:
            return False

    def verify(self, ref: ArtifactRef) -> bool:
        """Whether the local copy of a value still hashes to its sha256 (False: missing or
        changed). Remembered per file state, so a file is hashed again only after it changed:
        a cache hit pays a stat, not a read."""
        path = self.path_for(ref.sha256)
        try:
            stat = path.stat()
        except FileNotFoundError:
            return False
        state = f"{stat.st_ino}-{stat.st_size}-{stat.st_mtime_ns}"
        seen = self.root / ".verified" / self.key_for(ref.sha256)
        try:
            if seen.read_text() == state:
                return True
        except FileNotFoundError:
            pass
        if stat.st_size != ref.size or sha256_path(path) != ref.sha256:
            return False
        write_text_atomic(seen, state)
        return True

    def ingest(self, file: str | Path, ref: ArtifactRef) -> Path:
        """Publish a finished file under its hash; returns its local path (the file moves).

        A local copy that no longer matches its hash is replaced (a corrupt artifact repairs
        itself the next time its step runs)."""
        final = self.path_for(ref.sha256)
        if self.remote and not self._in_remote(ref):  # a local copy alone is not published
            self.filesystem.put_file(str(file), self.uri_for(ref.sha256))
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists() and self.verify(ref):
            Path(file).unlink(missing_ok=True)
            return final
        try:
            os.replace(file, final)
        except OSError:  # another filesystem: copy under a temporary name, then rename
            with atomic_write(final, "wb") as target, Path(file).open("rb") as source:
                shutil.copyfileobj(source, target)
            Path(file).unlink(missing_ok=True)
        return final

    def local_path(self, ref: ArtifactRef) -> Path:
        """A local file holding the value, verified: fetched into the cache for a remote store."""
        path = self.path_for(ref.sha256)
        if not self.remote or (path.is_file() and path.stat().st_size == ref.size):
            return path
        staging = self._staging(f"fetch-{ref.sha256[:12]}")
        try:
            self.filesystem.get_file(self.uri_for(ref.sha256), str(staging))
        except FileNotFoundError as exc:
            raise ArtifactError(
                f"artifact {ref.sha256[:12]} is not in the store {self.url}; it was deleted, or "
                f"this machine points at another store (CONVEYOR_ARTIFACTS)"
            ) from exc
        if sha256_path(staging) != ref.sha256:
            staging.unlink(missing_ok=True)
            raise ArtifactIntegrityError(
                f"artifact {self.uri_for(ref.sha256)} does not match its content hash; the "
                f"object was changed in the store. Re-run with --force-step on its producer"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, path)
        return path

    def put(self, value: Any, codec: Codec) -> ArtifactRef:
        """Write a value straight into the store."""
        staging = self._staging("value")
        ref = write_value(value, codec, staging)
        self.ingest(staging, ref)
        return ref

    def load(self, ref: ArtifactRef) -> Any:
        """Read and verify a value."""
        return read_value(self.local_path(ref), ref.codec, ref.sha256)

    def _staging(self, what: str) -> Path:
        folder = self.root / ".staging"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{what}-{os.getpid()}-{secrets.token_hex(6)}"

    # ------------------------------------------------------------------------------ documents

    def read_document(self, key: str, *, immutable: bool = False) -> str | None:
        """The text stored under `key`, or None. `immutable`: any copy of it is current (a key
        that always names the same content), so a remote store's local mirror answers."""
        if not self.remote:
            try:
                return (self.root / key).read_text()
            except FileNotFoundError:
                return None
        mirror = self._mirror(key)
        if immutable and mirror.is_file():
            return mirror.read_text()
        try:
            data: bytes = self.filesystem.cat_file(self._uri(key))
        except FileNotFoundError:
            return None
        text = data.decode()
        write_text_atomic(mirror, text)
        return text

    def write_document(self, key: str, text: str) -> None:
        """Store `text` under `key`, replacing what was there (readers see old or new)."""
        if not self.remote:
            write_text_atomic(self.root / key, text)
            return
        mirror = self._mirror(key)
        try:
            if mirror.read_text() == text:  # this machine wrote (or read) exactly this last
                return
        except FileNotFoundError:
            pass
        self.filesystem.pipe_file(self._uri(key), text.encode())
        write_text_atomic(mirror, text)

    def _mirror(self, key: str) -> Path:
        # documents are named by key, not content: one mirror folder per store URL
        from conveyor._runtime.hashing import sha256_text

        return self.root / "documents" / sha256_text(self.url)[:16] / key

    def put_file(self, key: str, file: str | Path) -> None:
        """Store a file's bytes under `key` unless something is there already (content keys)."""
        if not self.remote:
            target = self.root / key
            if not target.exists():
                with atomic_write(target, "wb") as out, Path(file).open("rb") as source:
                    shutil.copyfileobj(source, out)
            return
        known = self._mirror(key + ".present")  # this machine put or saw it there before
        if known.is_file():
            return
        if not self.filesystem.exists(self._uri(key)):
            self.filesystem.put_file(str(file), self._uri(key))
        write_text_atomic(known, "")

    def get_file(self, key: str) -> Path:
        """A local file with the bytes stored under `key` (cached for a remote store)."""
        path = self.root / key
        if path.is_file():
            return path
        if not self.remote:
            raise ArtifactError(f"{path} is not in the artifact store")
        staging = self._staging("file")
        try:
            self.filesystem.get_file(self._uri(key), str(staging))
        except FileNotFoundError as exc:
            raise ArtifactError(f"{self._uri(key)} is not in the artifact store") from exc
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, path)
        return path
