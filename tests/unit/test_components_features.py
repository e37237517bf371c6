"""components.features on the real data: 6,046 point-in-time rows, however the dates are batched."""

from __future__ import annotations

import itertools
from datetime import date

import numpy as np
import pandas as pd
import pytest

from components.design import DOW_COLUMNS, LAG_COLUMNS, LAGS, SERIES, design_matrix
from components.features import FEATURE_COLUMNS, build_features, split_window
from components.nyse import DEFAULT_SOURCE, ingest, validate

FIRST, LAST = date(1962, 12, 3), date(1986, 12, 31)


@pytest.fixture(scope="module")
def raw() -> pd.DataFrame:
    return validate(ingest(DEFAULT_SOURCE, FIRST, LAST).rows, DEFAULT_SOURCE)


@pytest.fixture(scope="module")
def features(raw: pd.DataFrame) -> pd.DataFrame:
    return build_features(raw, FIRST, LAST, [])


def test_the_whole_data_gives_6046_rows_from_1962_12_10(features: pd.DataFrame) -> None:
    assert len(features) == 6046
    assert features["date"].iloc[0] == pd.Timestamp("1962-12-10")
    assert features["date"].iloc[-1] == pd.Timestamp("1986-12-31")
    assert tuple(features.columns) == FEATURE_COLUMNS
    assert str(features["date"].dtype) == "datetime64[ns]" and features["date"].is_unique
    assert list(features.index) == list(range(6046))
    assert features.drop(columns=["date", "day_of_week"]).notna().all().all()


def test_every_lag_is_the_source_value_k_trading_rows_earlier(
    raw: pd.DataFrame, features: pd.DataFrame
) -> None:
    position = raw.reset_index().set_index("date")["index"].loc[features["date"]].to_numpy()
    for series in SERIES:
        source = raw[series].to_numpy()
        for k in LAGS:
            np.testing.assert_array_equal(features[f"{series}_lag{k}"], source[position - k])
    np.testing.assert_array_equal(features["log_volume"], raw["log_volume"].to_numpy()[position])


def test_nothing_from_the_day_or_later_but_the_target(raw: pd.DataFrame) -> None:
    # change every value from d on: the features of d keep everything but the target
    d = pd.Timestamp("1975-06-16")
    changed = raw.copy()
    later = changed["date"] >= d
    changed.loc[later, list(SERIES)] = changed.loc[later, list(SERIES)] + 0.01
    lookback = [x.date().isoformat() for x in raw[raw["date"] < d]["date"].tail(5)]
    before = build_features(raw, d.date(), d.date(), lookback)
    after = build_features(changed, d.date(), d.date(), lookback)
    pd.testing.assert_frame_equal(
        before.drop(columns="log_volume"), after.drop(columns="log_volume")
    )
    assert after["log_volume"][0] == pytest.approx(before["log_volume"][0] + 0.01)


def test_month_batches_give_the_same_rows_as_one_batch(
    raw: pd.DataFrame, features: pd.DataFrame
) -> None:
    months = pd.date_range("1962-12-01", "1987-01-01", freq="MS")
    batches = []
    for first, following in itertools.pairwise(months):
        start, end = first.date(), (following - pd.Timedelta(days=1)).date()
        before = raw[raw["date"] < first].tail(5)  # what load_table gives: 5 trading days more
        history = pd.concat([before, raw[raw["date"].between(first, pd.Timestamp(end))]])
        lookback = [d.date().isoformat() for d in before["date"]]
        batches.append(build_features(history, start, end, lookback))
    pd.testing.assert_frame_equal(pd.concat(batches, ignore_index=True), features)
    # the look-back used above is the one ingest reports
    assert ingest(DEFAULT_SOURCE, date(1975, 3, 1), date(1975, 3, 31)).lookback == [
        d.date().isoformat() for d in raw[raw["date"] < "1975-03-01"]["date"].tail(5)
    ]


def test_a_missing_look_back_date_raises(raw: pd.DataFrame) -> None:
    start, end = date(1970, 1, 5), date(1970, 1, 9)
    ingested = ingest(DEFAULT_SOURCE, start, end)
    window = raw[raw["date"].between("1969-12-20", "1970-01-09")]
    history = window[window["date"] != pd.Timestamp("1969-12-30")]
    with pytest.raises(ValueError) as error:
        build_features(history, start, end, ingested.lookback)
    assert "the raw table lacks the look-back date(s) 1969-12-30" in str(error.value)
    assert "backfill those earlier dates first" in str(error.value)
    assert len(build_features(window, start, end, ingested.lookback)) == 5


def test_dates_may_arrive_as_strings_and_unsorted(raw: pd.DataFrame) -> None:
    window = raw[raw["date"].between("1969-12-20", "1970-01-09")]
    shuffled = window.iloc[::-1].assign(date=window["date"].dt.strftime("%Y-%m-%d").iloc[::-1])
    expected = build_features(window, date(1970, 1, 5), date(1970, 1, 9), [])
    got = build_features(shuffled, date(1970, 1, 5), date(1970, 1, 9), [])
    pd.testing.assert_frame_equal(got, expected)


def test_a_weekend_range_gives_an_empty_frame(raw: pd.DataFrame) -> None:
    empty = build_features(raw, date(1970, 1, 3), date(1970, 1, 4), [])
    assert empty.empty and tuple(empty.columns) == FEATURE_COLUMNS


def test_the_validation_window_is_the_last_two_years(features: pd.DataFrame) -> None:
    training = features[features["date"] <= "1979-12-31"]
    fit, validation = split_window(training, validation_days=730)
    assert (len(training), len(fit), len(validation)) == (4276, 3771, 505)
    assert fit["date"].max() == pd.Timestamp("1977-12-30")
    assert validation["date"].min() == pd.Timestamp("1978-01-03")  # first trading day of 1978
    assert validation["date"].max() == pd.Timestamp("1979-12-31")
    with pytest.raises(ValueError, match="no rows before the validation window"):
        split_window(training, validation_days=10_000)


def test_the_design_matrix_has_fixed_columns(features: pd.DataFrame) -> None:
    assert tuple(design_matrix(features, day_of_week=False).columns) == LAG_COLUMNS
    with_days = design_matrix(features.head(7), day_of_week=True)
    assert tuple(with_days.columns) == LAG_COLUMNS + DOW_COLUMNS
    assert (with_days[list(DOW_COLUMNS)].sum(axis=1) == 1).all()
    assert with_days["dow_mon"].tolist() == [1, 0, 0, 0, 0, 1, 0]  # 1962-12-10 was a Monday


def test_lags_come_from_the_calendar_days_never_across_a_gap(raw: pd.DataFrame) -> None:
    """A history missing a look-back day fails naming it instead of shifting the lags."""
    d = pd.Timestamp("1975-06-16")
    before = raw[raw["date"] < d]["date"].tail(5)
    lookback = [x.date().isoformat() for x in before]
    gap = before.iloc[2]
    with pytest.raises(ValueError, match=f"lacks the look-back date.*{gap.date()}"):
        build_features(raw[raw["date"] != gap], d.date(), d.date(), lookback)
    full = build_features(raw, d.date(), d.date(), lookback)
    stray = pd.concat(
        [raw[raw["date"] < before.iloc[0]].tail(20), raw[raw["date"] >= before.iloc[0]]]
    )
    pd.testing.assert_frame_equal(build_features(stray, d.date(), d.date(), lookback), full)
