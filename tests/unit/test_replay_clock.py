"""Replay clocks: deployment ticks mapped onto the data's own timeline, their state in the database.

The clock is driven tick by tick here (no Prefect, no waiting for a cron): each call of
`resolve_tick` is what a scheduled flow run does first.
"""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta

import pytest
from typer.testing import CliRunner

from conveyor.cli import _register, app
from conveyor.ops.discovery import resolve_pipeline
from conveyor.ops.schedule_check import check_entries
from conveyor.ops.schedules import ScheduleError, finish, load_entries, resolve_tick
from tests.conftest import Project

FLOWS = """
from datetime import date
from conveyor import component, pipeline

@component
def stamp(first: date, last: date) -> str:
    return f"{first}..{last}"

@pipeline(partition=("start", "end"), calendar="weekdays")
def ranged(start: date, end: date):
    return stamp(start, end)

@pipeline(partition="as_of", calendar="weekdays")
def single(as_of: date):
    return stamp(as_of, as_of)
"""

ENTRIES = """
[ranged-replay]
pipeline = "ranged"
cron = "* * * * *"
clock = "replay"
replay_start = 2024-03-01          # a Friday
replay_end = "2024-03-08"

[single-replay]
pipeline = "single"
cron = "*/20 * * * *"
clock = "replay"
replay_start = "2024-03-01"
replay_pace = 3
partition_offset = -1

[single-wall]
pipeline = "single"
cron = "30 18 * * 1-5"
timezone = "America/New_York"
"""

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def minute(n: int) -> datetime:
    return T0 + timedelta(minutes=n)


@pytest.fixture
def replay(project: Project) -> Project:
    project.write("flows/replay.py", FLOWS)
    project.write("deployments/replay.toml", ENTRIES)
    return project


def _tick(project: Project, name: str, at: datetime, flow_run_id: str | None = None):
    entry = next(e for e in load_entries(project.settings) if e.name == name)
    pipeline = resolve_pipeline(entry.pipeline, project.settings)
    return resolve_tick(entry, pipeline, project.settings, {}, at, flow_run_id)


def test_each_tick_stands_for_the_next_calendar_date_and_survives_a_restart(replay):
    from conveyor.db.database import dispose_shared

    got = [_tick(replay, "ranged-replay", minute(n))[0] for n in range(3)]
    assert [(p["start"], p["end"]) for p in got] == [
        (date(2024, 3, 1), date(2024, 3, 1)),
        (date(2024, 3, 4), date(2024, 3, 4)),  # the weekend is not in the calendar
        (date(2024, 3, 5), date(2024, 3, 5)),
    ]
    # the same tick asked again (a retried flow run) gets the same dates, and does not advance
    assert _tick(replay, "ranged-replay", minute(1))[0]["start"] == date(2024, 3, 4)
    assert _tick(replay, "ranged-replay", minute(9), "flow-run-0")[0]["start"] == date(2024, 3, 6)
    assert _tick(replay, "ranged-replay", minute(10), "flow-run-0")[0]["start"] == date(2024, 3, 6)
    dispose_shared()  # a restarted worker: the position is in the database
    params, tick = _tick(replay, "ranged-replay", minute(11))
    assert params["start"] == date(2024, 3, 7)
    assert tick.describe() == "replay tick 5: 2026-12-03 12:11 UTC -> 2024-03-07"


def test_a_pace_moves_several_dates_and_the_offset_applies_to_the_replayed_day(replay):
    got = [_tick(replay, "single-replay", minute(20 * n)) for n in range(2)]
    # tick 1 stands for Fri 1 .. Tue 5 March; offset -1: the weekday before the 5th
    assert got[0][0] == {"as_of": date(2024, 3, 4)}
    assert (got[0][1].dates.first, got[0][1].dates.last) == (date(2024, 3, 1), date(2024, 3, 5))
    assert got[1][0] == {"as_of": date(2024, 3, 7)}  # Wed 6 .. Fri 8, offset -1


def test_the_wall_clock_stands_for_the_scheduled_date_and_records_it(replay):
    from conveyor.db.clocks import recent_ticks

    # Monday 2024-03-04 18:30 in New York
    params, tick = _tick(replay, "single-wall", datetime(2024, 3, 4, 23, 30, tzinfo=UTC))
    assert params == {"as_of": date(2024, 3, 4)}
    assert tick.describe() == "wall clock: 2024-03-04 23:30 UTC -> 2024-03-04"
    (recorded,) = recent_ticks(replay.settings, "single-wall")
    assert (recorded.kind, recorded.partition_start) == ("wall", date(2024, 3, 4))


def test_a_failed_tick_is_repeated_before_the_clock_moves_on(replay):
    first = _tick(replay, "ranged-replay", minute(0))[1]
    second = _tick(replay, "ranged-replay", minute(1))[1]
    finish(replay.settings, first, ok=False)
    finish(replay.settings, second, ok=True)
    retry = _tick(replay, "ranged-replay", minute(2))[1]
    assert retry.dates.first == date(2024, 3, 1)
    assert retry.describe().startswith("replay tick 3, repeating failed tick 1:")
    assert _tick(replay, "ranged-replay", minute(3))[1].dates.first == date(2024, 3, 5)


def test_the_replay_ends_at_replay_end(replay):
    for n in range(6):  # Mar 1, 4, 5, 6, 7, 8
        _tick(replay, "ranged-replay", minute(n))
    with pytest.raises(
        ScheduleError,
        match=r"the replay is over: it reached replay_end "
        r"2024-03-08. `conveyor replay reset ranged-replay` starts it over",
    ):
        _tick(replay, "ranged-replay", minute(6))


def test_workers_ticking_at_once_claim_distinct_consecutive_dates(
    replay, database_url, monkeypatch
):
    monkeypatch.setenv("CONVEYOR_DATABASE_URL", database_url)  # SQLite, and PostgreSQL's row lock
    claimed: list[date] = []
    errors: list[BaseException] = []

    def tick(n: int) -> None:
        try:
            claimed.append(_tick(replay, "ranged-replay", minute(n))[0]["start"])
        except BaseException as exc:  # a thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=tick, args=(n,)) for n in range(5)]  # own connections
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert sorted(claimed) == [date(2024, 3, d) for d in (1, 4, 5, 6, 7)]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('replay_start = 2024-03-01          # a Friday', ""),
         'entry [ranged-replay]: clock = "replay" needs `replay_start`'),
        (('clock = "replay"\nreplay_start = 2024-03-01', 'replay_start = 2024-03-01'),
         "`replay_end`, `replay_start` only apply to a replay clock: add clock = \"replay\""),
        (("2024-03-01          # a Friday", "2024-03-02"),
         "replay_start 2024-03-02 is not a date of pipeline 'ranged''s calendar (weekdays); "
         "the next one is 2024-03-04"),
        (('replay_end = "2024-03-08"', 'replay_end = "2024-02-30"'),
         "key `replay_end`: must be a date written YYYY-MM-DD (got '2024-02-30')"),
        (('replay_end = "2024-03-08"', 'replay_end = "2024-02-28"'),
         "`replay_end` 2024-02-28 is before `replay_start` 2024-03-01"),
        (('replay_end = "2024-03-08"', "replay_pace = 0"),
         "key `replay_pace`: Input should be greater than or equal to 1"),
        (('clock = "replay"', 'clock = "simulated"'),
         "key `clock`: Input should be 'wall' or 'replay'"),
    ],
)  # fmt: skip
def test_bad_clock_keys_say_what_to_write(project, change, message):
    project.write("flows/replay.py", FLOWS)
    old, new = change
    project.write("deployments/replay.toml", ENTRIES.replace(old, new, 1))
    with pytest.raises(ScheduleError) as info:
        load_entries(project.settings)
    assert message in str(info.value)


def test_deploy_check_shows_the_data_dates_of_the_next_ticks(replay):
    checks = {c.entry.name: c for c in check_entries(replay.settings, after=T0)}
    assert [f.stands_for for f in checks["ranged-replay"].fires] == [
        (date(2024, 3, d), date(2024, 3, d)) for d in (1, 4, 5)
    ]
    _tick(replay, "ranged-replay", minute(0))  # from where the clock stands
    checks = {c.entry.name: c for c in check_entries(replay.settings, after=T0)}
    assert [f.partition for f in checks["ranged-replay"].fires] == [
        date(2024, 3, d) for d in (4, 5, 6)
    ]
    _register()
    result = CliRunner().invoke(app, ["deploy", "--check"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "replay clock: from 2024-03-01 to 2024-03-08, 1 date(s) of the calendar per tick" in (
        result.output
    )
    assert "-> data 2024-03-04, partition 2024-03-04" in result.output
    assert "-> data 2024-03-01 .. 2024-03-05, partition 2024-03-04" in result.output


def test_replay_status_and_reset(replay):
    _register()
    for n in range(2):
        _tick(replay, "ranged-replay", minute(n))
    runner = CliRunner()
    result = runner.invoke(app, ["replay", "status"], terminal_width=200)
    assert result.exit_code == 0, result.output
    (line,) = [x for x in result.output.splitlines() if "ranged-replay" in x]
    assert "2024-03-04" in line and "2 (2 claimed)" in line and "2024-03-05" in line
    (line,) = [x for x in result.output.splitlines() if "single-replay" in x]
    assert "not started" in line
    assert "single-wall" not in result.output

    result = runner.invoke(app, ["replay", "reset", "ranged-replay", "--to", "2024-03-06"])
    assert result.exit_code == 0, result.output
    assert "ranged-replay: the next tick stands for 2024-03-06" in result.output
    assert _tick(replay, "ranged-replay", minute(5))[0]["start"] == date(2024, 3, 6)
    result = runner.invoke(app, ["replay", "reset"])
    assert result.exit_code == 0, result.output
    assert _tick(replay, "ranged-replay", minute(6))[0]["start"] == date(2024, 3, 1)
    result = runner.invoke(app, ["replay", "reset", "single-wall"])
    assert result.exit_code == 1
