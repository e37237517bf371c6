"""components.nyse on the packaged data and on small broken files: ingest, validate, calendar."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from components.nyse import COLUMNS, DEFAULT_SOURCE, ingest, resolve_source, trading_days, validate

HEADER = '"date","day_of_week","DJ_return","log_volume","log_volatility","train"'
GOOD = [
    '"1970-01-02","fri",0.004,0.1,-10.1,TRUE',
    '"1970-01-05","mon",0.005,0.2,-10.2,TRUE',
    '"1970-01-06","tues",-0.003,0.3,-10.3,TRUE',
]


def write_csv(tmp_path: Path, lines: list[str], header: str = HEADER) -> str:
    path = tmp_path / "NYSE_bad.csv"
    path.write_text("\n".join([header, *lines]) + "\n")
    return str(path)


def load(source: str) -> pd.DataFrame:
    rows = ingest(source, date(1970, 1, 1), date(1970, 1, 31)).rows
    return validate(rows, source)


def test_a_weekend_gives_an_empty_frame_with_the_columns_and_dtypes() -> None:
    rows, lookback = ingest(DEFAULT_SOURCE, date(1970, 1, 3), date(1970, 1, 4))
    assert rows.empty and tuple(rows.columns) == COLUMNS
    checked = validate(rows, DEFAULT_SOURCE)
    assert checked.empty and tuple(checked.columns) == COLUMNS
    assert str(checked["date"].dtype) == "datetime64[ns]"
    assert checked["train"].dtype == bool and checked["log_volume"].dtype == "float64"
    assert lookback == ["1969-12-26", "1969-12-29", "1969-12-30", "1969-12-31", "1970-01-02"]


def test_a_single_date_gives_its_row_typed_by_validate() -> None:
    rows, lookback = ingest(DEFAULT_SOURCE, date(1962, 12, 6), date(1962, 12, 6))
    assert len(rows) == 1 and rows["date"][0] == "1962-12-06"
    assert lookback == ["1962-12-03", "1962-12-04", "1962-12-05"]  # fewer at the data's start
    row = validate(rows, DEFAULT_SOURCE).iloc[0]
    assert row["date"] == pd.Timestamp("1962-12-06") and row["day_of_week"] == "thur"
    assert row["log_volume"] == pytest.approx(0.210182) and bool(row["train"])


def test_the_whole_range_validates_sorted_and_unique() -> None:
    rows, lookback = ingest(DEFAULT_SOURCE, date(1962, 1, 1), date(1986, 12, 31))
    checked = validate(rows, DEFAULT_SOURCE)
    assert lookback == [] and len(checked) == 6051
    assert checked["date"].is_monotonic_increasing and checked["date"].is_unique
    assert (checked["date"] <= "1979-12-31").eq(checked["train"]).all()


def test_the_calendar_is_the_trading_days_then_weekdays() -> None:
    assert trading_days(date(1970, 1, 1), date(1970, 1, 6)) == [
        date(1970, 1, 2), date(1970, 1, 5), date(1970, 1, 6),
    ]  # fmt: skip
    assert len(trading_days(date(1962, 1, 1), date(1986, 12, 31))) == 6051
    assert trading_days(date(1986, 12, 31), date(1987, 1, 5)) == [
        date(1986, 12, 31), date(1987, 1, 1), date(1987, 1, 2), date(1987, 1, 5),
    ]  # fmt: skip
    assert trading_days(date(1970, 1, 3), date(1970, 1, 4)) == []


def test_the_calendar_is_exactly_the_dates_of_the_vendored_csv() -> None:
    dates = pd.read_csv(resolve_source(DEFAULT_SOURCE), usecols=["date"])["date"]
    assert trading_days(date(1962, 12, 3), date(1986, 12, 31)) == [
        date.fromisoformat(d) for d in dates
    ]


def test_relative_and_absolute_sources_resolve_to_the_same_file() -> None:
    path = resolve_source(DEFAULT_SOURCE)
    assert path.is_file() and path.name == "NYSE.csv"
    assert resolve_source(str(path)) == path


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    source = str(tmp_path / "nope.csv")
    with pytest.raises(FileNotFoundError, match=r"nope\.csv: source file not found"):
        ingest(source, date(1970, 1, 1), date(1970, 1, 2))


def test_a_missing_column_is_named(tmp_path: Path) -> None:
    header = '"date","day_of_week","DJ_return","log_volatility","train"'
    source = write_csv(tmp_path, ['"1970-01-05","mon",0.005,-10.2,TRUE'], header)
    with pytest.raises(ValueError, match=r"NYSE_bad\.csv: missing column\(s\) 'log_volume'"):
        ingest(source, date(1970, 1, 1), date(1970, 1, 31))
    frame = pd.DataFrame({c: [] for c in COLUMNS if c != "log_volume"})
    with pytest.raises(ValueError, match=r"x\.csv: missing column 'log_volume'"):
        validate(frame, "x.csv")


def test_an_unparseable_date_is_named(tmp_path: Path) -> None:
    source = write_csv(tmp_path, [GOOD[0], '"1970-13-45","mon",0.005,0.2,-10.2,TRUE'])
    with pytest.raises(ValueError) as error:
        ingest(source, date(1970, 1, 1), date(1970, 1, 31))
    assert "NYSE_bad.csv: column 'date', line 3: value '1970-13-45' is not a date" in str(error)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            '"1970-01-05","mon",0.005,abc,-10.2,TRUE',
            "NYSE_bad.csv: column 'log_volume', date 1970-01-05: value 'abc' is not a number",
        ),
        (
            '"1970-01-05","mon",0.005,,-10.2,TRUE',
            "NYSE_bad.csv: column 'log_volume', date 1970-01-05: missing value",
        ),
        (
            '"1970-01-05","mon",0.5,0.2,-10.2,TRUE',
            "NYSE_bad.csv: column 'DJ_return', date 1970-01-05: value 0.5 is outside the range "
            "[-0.3, 0.3]",
        ),
        (
            '"1970-01-05","tues",0.005,0.2,-10.2,TRUE',
            "NYSE_bad.csv: column 'day_of_week', date 1970-01-05: value 'tues' does not match "
            "the date (a Monday)",
        ),
        (
            '"1970-01-05","monday",0.005,0.2,-10.2,TRUE',
            "NYSE_bad.csv: column 'day_of_week', date 1970-01-05: value 'monday' is not one of "
            "mon, tues, wed, thur, fri",
        ),
        (
            '"1970-01-05","mon",0.005,0.2,-10.2,maybe',
            "NYSE_bad.csv: column 'train', date 1970-01-05: value 'maybe' is not TRUE or FALSE",
        ),
        (
            '"1970-01-03","fri",0.005,0.2,-10.2,TRUE',
            "NYSE_bad.csv: column 'day_of_week', date 1970-01-03: value 'fri' does not match "
            "the date (a Saturday)",
        ),
    ],
)
def test_a_bad_value_is_named_with_file_column_date_and_value(
    tmp_path: Path, line: str, message: str
) -> None:
    source = write_csv(tmp_path, [GOOD[0], line, GOOD[2]])
    with pytest.raises(ValueError) as error:
        load(source)
    assert str(error.value) == f"{tmp_path}/{message}"  # the source as given, then the problem


def test_a_duplicate_date_is_named(tmp_path: Path) -> None:
    source = write_csv(tmp_path, [*GOOD, GOOD[1]])
    with pytest.raises(ValueError, match=r"NYSE_bad\.csv: column 'date': date 1970-01-05 appears"):
        load(source)


def test_several_problems_are_listed_together(tmp_path: Path) -> None:
    lines = ['"1970-01-02","fri",x,0.1,-10.1,TRUE', '"1970-01-05","mon",0.005,9,-10.2,TRUE']
    with pytest.raises(ValueError) as error:
        load(write_csv(tmp_path, lines))
    text = str(error.value)
    assert text.startswith("2 problems in ") and "NYSE_bad.csv" in text
    assert "column 'DJ_return', date 1970-01-02: value 'x' is not a number" in text
    assert "column 'log_volume', date 1970-01-05: value 9 is outside the range [-5.0, 5.0]" in text


def test_a_bad_row_outside_the_range_does_not_fail_other_dates(tmp_path: Path) -> None:
    source = write_csv(tmp_path, [*GOOD, '"1970-02-02","mon",0.005,abc,-10.2,TRUE'])
    assert len(load(source)) == 3  # 1970-02-02 has not "arrived" in January


def test_validate_is_idempotent_and_canonical() -> None:
    rows = ingest(DEFAULT_SOURCE, date(1970, 1, 1), date(1970, 3, 31)).rows
    once = validate(rows.iloc[::-1], DEFAULT_SOURCE)  # order of arrival does not matter
    assert once["date"].is_monotonic_increasing and list(once.index) == list(range(len(once)))
    pd.testing.assert_frame_equal(validate(once, DEFAULT_SOURCE), once)
