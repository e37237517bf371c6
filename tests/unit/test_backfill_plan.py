"""Choosing and grouping backfill partitions (no database, no runs)."""

from __future__ import annotations

from datetime import date

import pytest

from conveyor import component, pipeline
from conveyor.errors import ParameterError
from conveyor.ops.backfill import group_batches, select_partitions


@component
def rows(day: date) -> int:
    return day.day


@pipeline(calendar="weekdays")
def daily(day: date):
    return rows(day)


@pipeline(partition=("start", "end"), calendar="weekdays")
def ranged(start: date, end: date):
    return rows(start), rows(end)


JAN = [date(2024, 1, d) for d in (1, 2, 3, 4, 5, 8, 9, 10, 11, 12)]


def test_missing_runs_everything_not_succeeded():
    statuses = {JAN[0]: "succeeded", JAN[1]: "failed", JAN[2]: "running"}
    chosen, skipped = select_partitions(daily, date(2024, 1, 1), date(2024, 1, 12), statuses)
    assert skipped == [JAN[0]]
    assert chosen == JAN[1:]


def test_failed_and_all():
    statuses = {JAN[0]: "succeeded", JAN[1]: "failed"}
    chosen, _ = select_partitions(daily, JAN[0], JAN[-1], statuses, "failed")
    assert chosen == [JAN[1]]
    chosen, skipped = select_partitions(daily, JAN[0], JAN[-1], statuses, "all")
    assert chosen == JAN and skipped == []
    with pytest.raises(ParameterError, match="--reprocess 'some'"):
        select_partitions(daily, JAN[0], JAN[-1], {}, "some")
    with pytest.raises(ParameterError, match="is before --start"):
        select_partitions(daily, JAN[-1], JAN[0], {}, "all")


def test_single_date_pipelines_run_one_partition_per_run():
    batches = group_batches(daily, JAN[:3], batch=10)
    assert [b.dates for b in batches] == [(JAN[0],), (JAN[1],), (JAN[2],)]


def test_ranged_pipelines_group_consecutive_calendar_dates():
    batches = group_batches(ranged, JAN, batch=4)
    assert [b.label() for b in batches] == [
        "2024-01-01..2024-01-04", "2024-01-05..2024-01-10", "2024-01-11..2024-01-12",
    ]  # fmt: skip
    # a succeeded partition in the middle splits the range: it is not re-run
    gap = [d for d in JAN if d != date(2024, 1, 4)]
    assert [b.label() for b in group_batches(ranged, gap, batch=10)] == [
        "2024-01-01..2024-01-03", "2024-01-05..2024-01-12",
    ]  # fmt: skip
    assert group_batches(ranged, JAN, batch=4, reverse=True)[0].label() == (
        "2024-01-11..2024-01-12"
    )


def test_a_batch_of_zero_is_an_error_not_the_default():
    with pytest.raises(ParameterError, match="--batch must be at least 1, got 0"):
        group_batches(ranged, JAN, batch=0)
    assert len(group_batches(ranged, JAN, batch=None)) == 1  # None: the default size


def test_batches_depend_on_the_batches_holding_their_lookback():
    from dataclasses import replace

    from conveyor.ops.backfill import batch_dependencies, missing_lookback

    reads_two = replace(ranged, depends_on_past=2)
    batches = group_batches(reads_two, JAN, batch=3)
    needs = batch_dependencies(reads_two, batches)
    assert needs[0] == set()  # its look-back is before the backfill
    assert all(needs[i] == {i - 1} for i in range(1, len(batches)))
    single = group_batches(reads_two, JAN, batch=1)  # a date reads the two before it
    assert batch_dependencies(reads_two, single)[5] == {3, 4}
    december = [date(2023, 12, 28), date(2023, 12, 29)]  # the weekdays before January 1st
    assert missing_lookback(reads_two, batches, {}) == december
    assert missing_lookback(reads_two, batches, dict.fromkeys(december, "succeeded")) == []
    later = group_batches(reads_two, JAN[6:], batch=3)
    before = JAN[4:6]  # the 5th and the 8th, before the 9th
    assert missing_lookback(reads_two, later, {}) == before
    assert missing_lookback(reads_two, later, dict.fromkeys(before, "succeeded")) == []
