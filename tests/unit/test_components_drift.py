"""components.drift: PSI against a reference profile over a trailing window of trading rows."""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import pandas as pd
import pytest

from components.design import LAG_COLUMNS
from components.drift import COLUMNS, drift, profile
from components.features import build_features
from components.nyse import DEFAULT_SOURCE, ingest, validate

PSI = [f"psi_{c}" for c in COLUMNS]


def synthetic(rows: int, seed: int, start: str = "1990-01-01", shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({c: rng.normal(size=rows) for c in LAG_COLUMNS})
    frame.insert(0, "date", pd.bdate_range(start, periods=rows).astype("datetime64[ns]"))
    frame["log_volatility_lag1"] += shift
    return frame


def fake_predictions(features: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"date": features["date"], "prediction": features["DJ_return_lag2"]})


@pytest.fixture(scope="module")
def real() -> tuple[pd.DataFrame, pd.DataFrame]:
    start, end = date(1962, 12, 3), date(1986, 12, 31)
    raw = validate(ingest(DEFAULT_SOURCE, start, end).rows, DEFAULT_SOURCE)
    features = build_features(raw, start, end, [])
    predictions = pd.DataFrame(
        {"date": features["date"], "prediction": features["log_volume_lag1"] * 0.5}
    )
    return features, predictions


def test_the_profile_is_json_with_deciles() -> None:
    features = synthetic(1000, seed=1)
    reference = profile(features, fake_predictions(features))
    assert json.loads(json.dumps(reference, allow_nan=False)) == reference
    assert set(reference["columns"]) == set(COLUMNS) and reference["rows"] == 1000
    for entry in reference["columns"].values():
        assert len(entry["edges"]) == 9 and len(entry["proportions"]) == 10
        assert entry["proportions"] == pytest.approx([0.1] * 10)


def test_the_same_distribution_gives_psi_near_zero_and_no_flag() -> None:
    features = synthetic(1000, seed=1)
    predictions = fake_predictions(features)
    reference = profile(features, predictions)
    last = features["date"].iloc[-1].date()
    same = drift(features, predictions, reference, last, last, window=1000)
    assert len(same) == 1 and float(same["psi_max"].iloc[0]) == pytest.approx(0.0, abs=1e-12)
    assert not same["drift_flag"].any()
    other = synthetic(1500, seed=2)  # another sample of the same distribution
    first = other["date"].iloc[249].date()  # the first date with 250 rows up to it
    result = drift(other, fake_predictions(other), reference, first, date(1996, 1, 1))
    assert len(result) == 1500 - 249 and result["psi_max"].max() < 0.2
    assert not result["drift_flag"].any()


def test_a_shifted_feature_is_flagged() -> None:
    reference_rows = synthetic(1000, seed=1)
    reference = profile(reference_rows, fake_predictions(reference_rows))
    shifted = synthetic(600, seed=3, shift=1.0)
    first = shifted["date"].iloc[249].date()
    result = drift(shifted, fake_predictions(shifted), reference, first, date(1999, 1, 1))
    assert len(result) == 600 - 249
    assert result["drift_flag"].all()
    assert (result["psi_max"] == result["psi_log_volatility_lag1"]).all()
    assert (result["psi_DJ_return_lag1"] < 0.2).all()
    assert list(result.columns) == ["date", *PSI, "psi_max", "drift_flag"]
    # flagging on the predictions only: the shifted input alone does not flag
    on_predictions = drift(shifted, fake_predictions(shifted), reference, first,
                           date(1999, 1, 1), flag_on="prediction")  # fmt: skip
    expected = on_predictions["psi_prediction"] > 0.2
    assert (on_predictions["drift_flag"] == expected).all()
    with pytest.raises(ValueError, match="flag_on must be"):
        drift(shifted, fake_predictions(shifted), reference, first, date(1999, 1, 1), flag_on="x")


def test_one_range_or_several_give_the_same_rows(real: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    features, predictions = real
    train = features["date"] <= "1979-12-31"
    reference = profile(features[train], predictions[train])
    whole = drift(features, predictions, reference, date(1980, 1, 1), date(1980, 12, 31))
    assert len(whole) == 253 and whole["date"].iloc[0] == pd.Timestamp("1980-01-02")
    parts = []
    for first, last in [("1980-01-01", "1980-03-31"), ("1980-04-01", "1980-04-01"),
                        ("1980-04-02", "1980-12-31")]:  # fmt: skip
        # each run gets only the rows it needs: `window - 1` trading days before its start on
        at = int(np.searchsorted(features["date"], pd.Timestamp(first)))
        rows = slice(at - 249, int(np.searchsorted(features["date"], pd.Timestamp(last), "right")))
        span = date.fromisoformat(first), date.fromisoformat(last)
        parts.append(drift(features.iloc[rows], predictions.iloc[rows], reference, *span))
    pd.testing.assert_frame_equal(pd.concat(parts, ignore_index=True), whole)


def test_the_1980s_drift_from_the_training_window(real: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    features, predictions = real
    train = features["date"] <= "1979-12-31"
    reference = profile(features[train], predictions[train])
    result = drift(features, predictions, reference, date(1980, 1, 1), date(1986, 12, 31))
    assert len(result) == 1770
    assert result[PSI].notna().all().all() and (result[PSI] >= 0).all().all()


def test_a_window_longer_than_the_history_raises() -> None:
    features = synthetic(300, seed=1)
    reference = profile(features, fake_predictions(features))
    with pytest.raises(ValueError) as error:
        drift(features, fake_predictions(features), reference, date(1990, 9, 1), date(1990, 12, 31))
    assert "the trailing window needs 250" in str(error.value)
    assert "249 trading days before 1990-09-01" in str(error.value)


def test_missing_predictions_in_the_window_raise() -> None:
    features = synthetic(300, seed=1)
    predictions = fake_predictions(features)
    reference = profile(features, predictions)
    with pytest.raises(ValueError, match="have no prediction, first 1990-01-01"):
        drift(features, predictions.iloc[5:], reference, date(1990, 12, 1), date(1990, 12, 31))


def test_no_reference_gives_an_empty_frame() -> None:
    features = synthetic(300, seed=1)
    empty = drift(features, fake_predictions(features).iloc[:0], None, date(1990, 1, 1),
                  date(1991, 1, 1))  # fmt: skip
    assert empty.empty and list(empty.columns) == ["date", *PSI, "psi_max", "drift_flag"]
