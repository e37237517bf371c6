"""The artifact store on a real S3-compatible server (moto on loopback) and on a local folder.

The same behaviour both ways: values by content hash, verified on load; documents replaced at
once; a remote store's values copied into a local cache, checked before use. And a pipeline whose
artifacts live in the bucket: its outputs, its code bundle and its cache index are there, so a
second machine (or this one with `.conveyor/` deleted) finds every step cached.
"""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

import conveyor
from conveyor.dsl.artifacts import Codec
from conveyor.engine.store import ArtifactStore
from conveyor.errors import ArtifactError, ArtifactIntegrityError
from tests.integration.s3_support import bucket_keys


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> ArtifactStore:
    if request.param == "local":
        return ArtifactStore(tmp_path / "store")
    bucket = request.getfixturevalue("s3_bucket")
    return ArtifactStore(f"{bucket}/prefix", cache_dir=tmp_path / "cache")


def test_values_round_trip_and_are_verified(store, tmp_path):
    frame = pd.DataFrame({"x": [1.5, 2.5], "y": ["a", "b"]})
    ref = store.put(frame, Codec("parquet"))
    assert store.exists(ref)
    pd.testing.assert_frame_equal(store.load(ref), frame)
    if store.remote:  # a second machine: an empty cache fetches it again
        other = ArtifactStore(store.url, cache_dir=tmp_path / "other-cache")
        pd.testing.assert_frame_equal(other.load(ref), frame)
        assert other.path_for(ref.sha256).is_file()


def test_a_changed_object_is_refused(store, tmp_path):
    ref = store.put({"a": 1}, Codec("json"))
    if store.remote:
        store.filesystem.pipe_file(store.uri_for(ref.sha256), b'{"a": 2}')
        fresh = ArtifactStore(store.url, cache_dir=tmp_path / "fresh")
        with pytest.raises(ArtifactIntegrityError, match="does not match its content hash"):
            fresh.load(ref)
        assert not fresh.path_for(ref.sha256).exists()  # nothing unverified is kept
    else:
        store.path_for(ref.sha256).write_text('{"a": 2}')
        with pytest.raises(ArtifactIntegrityError):
            store.load(ref)


def test_documents_and_files(store, tmp_path):
    assert store.read_document("cache/x.json") is None
    store.write_document("cache/x.json", "one")
    store.write_document("cache/x.json", "two")
    assert store.read_document("cache/x.json") == "two"
    source = tmp_path / "bundle.tar"
    source.write_bytes(b"code")
    store.put_file("bundles/abc.tar", source)
    source.write_bytes(b"changed")
    store.put_file("bundles/abc.tar", source)  # content-named: the first write stands
    assert store.get_file("bundles/abc.tar").read_bytes() == b"code"
    with pytest.raises(ArtifactError, match="not in the artifact store"):
        store.get_file("bundles/missing.tar")


STEPS = """
from conveyor import component

@component
def make(rows: int) -> "pd.DataFrame":
    import pandas as pd

    return pd.DataFrame({"x": range(rows)})

@component
def total(df: "pd.DataFrame") -> int:
    return int(df["x"].sum())
"""

FLOW = """
from conveyor import pipeline
from steps.s3steps import make, total

@pipeline
def bucketed(rows: int = 10):
    return total(make(rows))
"""


@pytest.mark.docker
@pytest.mark.slow
def test_a_pipeline_with_its_artifacts_in_a_bucket_is_cached_from_the_bucket(
    project, s3_bucket, monkeypatch
):
    """Docker steps, a 0700 project, artifacts on S3: outputs, bundle and cache index are in the
    bucket; a second run is cached; with `.conveyor/` and the local cache gone, still cached."""
    from tests.integration.test_docker_runner import _engine

    client, reason = _engine()
    if client is None:
        pytest.skip(reason)
    project.write("steps/s3steps.py", STEPS)
    project.write("flows/s3.py", FLOW)
    url = f"{s3_bucket}/artifacts"
    monkeypatch.setenv("CONVEYOR_ARTIFACTS", url)
    monkeypatch.setenv("CONVEYOR_DATABASE_URL", "none")
    project.root.chmod(0o700)
    try:
        first = conveyor.run("bucketed", runner="docker")
        assert first.ok, first.error
        assert first.output == 45
        keys = bucket_keys(url)
        for step in first.steps.values():
            for ref in step.artifacts.values():
                assert f"{ref.sha256[:2]}/{ref.sha256}" in keys
        assert any(k.startswith("bundles/") and k.endswith(".tar") for k in keys)
        assert sum(k.startswith("cache/entries/") for k in keys) == 2

        again = conveyor.run("bucketed", runner="docker")
        assert [s.status for s in again.steps.values()] == ["cached", "cached"]

        shutil.rmtree(project.root / ".conveyor")
        shutil.rmtree(project.settings.artifact_cache, ignore_errors=True)
        fresh = conveyor.run("bucketed", runner="docker")
        assert [s.status for s in fresh.steps.values()] == ["cached", "cached"]
        assert fresh.output == 45  # loaded from the bucket into an empty cache
    finally:
        project.root.chmod(0o755)
