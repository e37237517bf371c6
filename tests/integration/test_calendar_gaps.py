"""A source missing a trading day fails the features run naming the day, and deletes nothing.

The lags of a date are the five trading days before it on the exchange's calendar; a source
that lacks one of them must not shift the lags onto the wrong days (45 wrong cells, exit 0,
before this check existed) nor replace the stored good row of that day with nothing.
"""

from __future__ import annotations

import importlib.util
from datetime import date

import pandas as pd
import pytest

import conveyor
from tests.conftest import need
from tests.integration.test_reference_flows import ROOT, _settings

FIRST = (date(1962, 12, 3), date(1962, 12, 31))  # the data's first month: no look-back needed
GAP = date(1962, 12, 10)


@pytest.fixture
def settings(tmp_path):
    need(importlib.util.find_spec("sqlalchemy") is not None, "conveyor[db] is not installed")
    yield from _settings(tmp_path / "home")


def _run(settings, source: str):
    return conveyor.run(
        "features", {"start": FIRST[0], "end": FIRST[1], "source": source},
        runner="inprocess", engine="local", settings=settings,
    )  # fmt: skip


def test_a_missing_trading_day_fails_naming_it_and_keeps_the_stored_row(settings, tmp_path):
    good = _run(settings, str(ROOT / "flows" / "data" / "NYSE.csv"))
    assert good.ok, good.error
    stored = conveyor.read_table("raw_nyse", settings=settings)
    assert GAP in set(pd.to_datetime(stored["date"]).dt.date)
    features_before = conveyor.read_table("features", settings=settings)

    source = pd.read_csv(ROOT / "flows" / "data" / "NYSE.csv", dtype=str)
    gapped = tmp_path / "NYSE-gap.csv"
    source[source["date"] != GAP.isoformat()].to_csv(gapped, index=False)
    bad = _run(settings, str(gapped))
    assert bad.status == "failed"
    assert bad.steps["validate"].status == "failed"
    assert f"trading day {GAP} is missing (the calendar has it)" in bad.error
    assert bad.steps["write_table"].status == "skipped"  # nothing was replaced
    after = conveyor.read_table("raw_nyse", settings=settings)
    pd.testing.assert_frame_equal(after, stored)
    pd.testing.assert_frame_equal(conveyor.read_table("features", settings=settings),
                                  features_before)  # fmt: skip
