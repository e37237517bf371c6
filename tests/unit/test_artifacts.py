"""Artifacts: codecs round-trip, writes are atomic, content hashes are verified on load."""

from __future__ import annotations

import hashlib
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conveyor.dsl.artifacts import Codec, Metrics, read_value, write_value
from conveyor.engine.store import ArtifactStore
from conveyor.errors import ArtifactError, ArtifactIntegrityError


@pytest.mark.parametrize(
    ("value", "codec"),
    [
        (pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}), Codec("parquet")),
        (np.arange(12.0).reshape(3, 4), Codec("npy")),
        ({"k": [1, 2.5, "s", None]}, Codec("json")),
        (date(2024, 2, 29), Codec("json", "date")),
        (datetime(2024, 2, 29, 12, 30), Codec("json", "datetime")),
        (Metrics(r2=0.5, mae=1.25), Codec("json", "metrics")),
        ({"model": (1, 2), "set": {3}}, Codec("joblib")),
    ],
)
def test_round_trip(tmp_path: Path, value, codec):
    ref = write_value(value, codec, tmp_path / "value")
    assert ref.sha256 == hashlib.sha256((tmp_path / "value").read_bytes()).hexdigest()
    assert ref.size == (tmp_path / "value").stat().st_size
    loaded = read_value(tmp_path / "value", codec, ref.sha256)
    if isinstance(value, pd.DataFrame):
        pd.testing.assert_frame_equal(loaded, value)
    elif isinstance(value, np.ndarray):
        np.testing.assert_array_equal(loaded, value)
    else:
        assert loaded == value
        assert type(loaded) is type(value)


def test_tampered_artifact_is_refused(tmp_path: Path):
    ref = write_value(pd.DataFrame({"a": [1.0, 2.0]}), Codec("parquet"), tmp_path / "df")
    data = bytearray((tmp_path / "df").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "df").write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError) as info:
        read_value(tmp_path / "df", Codec("parquet"), ref.sha256)
    message = str(info.value)
    assert "does not match its content hash" in message and ref.sha256 in message
    assert "--force-step" in message


def test_missing_artifact_says_what_to_do(tmp_path: Path):
    with pytest.raises(ArtifactError, match="is missing; re-run the step"):
        read_value(tmp_path / "nope", Codec("json"), "0" * 64)


def test_failed_write_leaves_no_file(tmp_path: Path):
    with pytest.raises(TypeError, match="expected a pandas DataFrame"):
        write_value([1, 2], Codec("parquet"), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_metrics_must_be_numbers(tmp_path: Path):
    with pytest.raises(TypeError, match="Metrics entry 'r2'"):
        write_value({"r2": "high"}, Codec("json", "metrics"), tmp_path / "m")


def test_store_is_content_addressed(tmp_path: Path):
    store = ArtifactStore(tmp_path / "store")
    first = store.put({"a": 1}, Codec("json"))
    second = store.put({"a": 1}, Codec("json"))
    assert first == second
    assert store.path_for(first.sha256).parent.name == first.sha256[:2]
    assert store.load(first) == {"a": 1}
    assert store.exists(first)
    assert not list((tmp_path / "store" / ".staging").iterdir())
