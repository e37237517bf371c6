"""A real S3-compatible server on loopback (moto's standalone server) for the object-store tests."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import need
from tests.integration.prefect_support import free_port, stop_process

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "conveyor-test",
    "AWS_SECRET_ACCESS_KEY": "conveyor-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def moto_server() -> str | None:
    found = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    return found if Path(found).is_file() else None


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[str]:
    """moto's S3 server on a free loopback port; yields its endpoint URL."""
    binary = moto_server()
    need(binary is not None, "moto's server is not installed (pip install 'moto[server]')")
    port = free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    proc = subprocess.Popen(
        [binary, "-H", "127.0.0.1", "-p", str(port)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/moto-api/", timeout=2):
                break
        except OSError:
            time.sleep(0.2)
    else:
        stop_process(proc)
        raise RuntimeError("moto's S3 server did not start")
    try:
        yield url
    finally:
        stop_process(proc)


@pytest.fixture
def s3_bucket(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket on the loopback server, with this process's AWS variables pointed at it;
    yields `s3://<bucket>`."""
    import fsspec

    need(_has_s3fs(), "s3fs is not installed (pip install 'conveyor[s3]')")
    for key, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": s3_server}.items():
        monkeypatch.setenv(key, value)
    bucket = f"conveyor-{secrets.token_hex(4)}"
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.mkdir(bucket)
    fsspec.filesystem("s3").invalidate_cache()
    return f"s3://{bucket}"


def _has_s3fs() -> bool:
    import importlib.util

    return importlib.util.find_spec("s3fs") is not None


def bucket_keys(url: str) -> list[str]:
    """Every object key under an s3:// URL, relative to it."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    fs.invalidate_cache()
    return sorted(p[len(root) + 1 :] for p in fs.find(root))


__all__ = ["CREDENTIALS", "bucket_keys", "s3_bucket", "s3_server"]
