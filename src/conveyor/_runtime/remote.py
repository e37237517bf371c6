"""Reaching the artifact store from inside a step that runs where the orchestrator is not.

A remote step (a Prefect worker elsewhere, a Kubernetes pod, a bare container) gets nothing but
a task spec, the store's URL and a bundle hash. This module reads and writes the store for the
executor: local paths and `file://` URLs with the standard library, anything else (s3://,
gs://, ...) through fsspec, imported only then, from the step's own environment, with the store
credentials the step was given (for S3: the AWS_* variables).
"""

from __future__ import annotations

import os
import shutil

from conveyor.errors import ArtifactError

TYPE_CHECKING = False  # not `from typing import ...`: step processes should not pay for typing

if TYPE_CHECKING:
    from typing import Any


def is_remote(url: str) -> bool:
    """Whether `url` names an object store rather than a local path."""
    return "://" in url and not url.startswith("file://")


def _local(url: str) -> str:
    return url.removeprefix("file://")


def _fsspec() -> Any:
    try:
        import fsspec
    except ImportError as exc:
        raise ArtifactError(
            "this step reads the artifact store directly, so its environment needs fsspec and "
            "the store's filesystem (s3fs for s3://): add them to @component(packages=[...])"
        ) from exc
    return fsspec


def join(store: str, key: str) -> str:
    """The URL (or path) of `key` in the store."""
    return f"{store.rstrip('/')}/{key}"


def value_key(sha256: str) -> str:
    """Where a value lives in a store: `ab/<sha256>` (as `ArtifactStore.key_for`)."""
    return f"{sha256[:2]}/{sha256}"


def read_bytes(url: str) -> bytes:
    """The bytes at a path or URL."""
    try:
        if not is_remote(url):
            with open(_local(url), "rb") as file:
                return file.read()
        with _fsspec().open(url, "rb") as file:
            data: bytes = file.read()
            return data
    except FileNotFoundError as exc:
        raise ArtifactError(f"{url} does not exist in the artifact store") from exc


def fetch(url: str, destination: str) -> str:
    """Copy `url` to the local file `destination` (complete or not at all); returns it."""
    if os.path.isfile(destination):
        return destination
    os.makedirs(os.path.dirname(destination) or ".", exist_ok=True)
    partial = f"{destination}.part-{os.getpid()}-{os.urandom(4).hex()}"
    try:
        if is_remote(url):
            _fsspec().filesystem(url.split("://", 1)[0]).get_file(url, partial)
        else:
            shutil.copyfile(_local(url), partial)
        os.replace(partial, destination)
    except FileNotFoundError as exc:
        raise ArtifactError(f"{url} does not exist in the artifact store") from exc
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return destination


def publish(path: str, url: str) -> None:
    """Put a local file at `url` unless something is there already (content-addressed keys)."""
    if is_remote(url):
        fs = _fsspec().filesystem(url.split("://", 1)[0])
        if not fs.exists(url):
            fs.put_file(path, url)
        return
    target = _local(url)
    if not os.path.exists(target):
        from conveyor._runtime.files import atomic_write

        with atomic_write(target, "wb") as out, open(path, "rb") as source:
            shutil.copyfileobj(source, out)


def write_text(url: str, text: str) -> None:
    """Write a small document at `url` (replacing it)."""
    if is_remote(url):
        _fsspec().filesystem(url.split("://", 1)[0]).pipe_file(url, text.encode())
        return
    from conveyor._runtime.files import write_text_atomic

    write_text_atomic(_local(url), text)


def cache_dir() -> str:
    """Where a remote step keeps what it fetched: CONVEYOR_CACHE, else the temp folder."""
    import tempfile

    return os.environ.get("CONVEYOR_CACHE") or os.path.join(tempfile.gettempdir(), "conveyor")
