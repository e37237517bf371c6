"""Schedules: `deployments/*.toml` entries, served with Prefect or registered for its workers.

One table per scheduled pipeline:

    [features-daily]
    pipeline = "features"
    cron = "30 18 * * 1-5"          # when to run
    timezone = "America/New_York"   # of the cron expression and of the partition date
    partition_offset = 0            # calendar units from the run's date (-1: the previous one)
    parameters = { source = "..." } # fixed parameters
    after = ["features"]            # upstream pipelines whose same partition must succeed first
    wait_minutes = 60               # how long to wait for them before failing
    runner = "docker"               # optional: else the worker's default runner
    clock = "replay"                # optional: replay the data's own timeline (see below)
    replay_start = 1980-01-02       # the first date the replay stands for
    replay_pace = 1                 # calendar dates the clock moves per tick
    replay_end = 1986-12-31         # optional: the last date it replays

A scheduled run's partition is derived from its scheduled time, so the same deployment serves
every day without new parameters. That is the wall clock (`clock = "wall"`, the default): a
tick stands for its scheduled date. A replay clock (`conveyor.ops.clock`) maps ticks onto the
data's timeline instead: each tick stands for the next `replay_pace` dates of the pipeline's
calendar from `replay_start`, its position kept in the database. `partition_offset` applies to
the date a tick stands for, whichever the clock.
"""

from __future__ import annotations

import time
import tomllib
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from conveyor.dsl.pipeline import Pipeline
from conveyor.engine.settings import Settings
from conveyor.errors import DiscoveryError, ParameterError, ScheduleError
from conveyor.ops.discovery import resolve_pipeline

if TYPE_CHECKING:
    from conveyor.engine.results import RunResult
    from conveyor.ops.clock import Tick

POLL_SECONDS = 10.0


class ScheduleEntry(BaseModel):
    """One scheduled pipeline from deployments/*.toml (the table's keys, checked on load)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    file: str
    pipeline: str
    cron: str
    timezone: str = "UTC"
    partition_offset: int = Field(0, strict=True)
    parameters: dict[str, Any] = Field(default_factory=dict)
    after: tuple[str, ...] = ()
    wait_minutes: float = Field(60.0, ge=0)
    # None: the serving machine's default (CONVEYOR_RUNNER / [tool.conveyor] runner, else venv)
    runner: Literal["venv", "docker", "inprocess"] | None = None
    description: str = ""
    clock: Literal["wall", "replay"] = "wall"
    replay_start: date | None = None
    replay_pace: int = Field(1, strict=True, ge=1)
    replay_end: date | None = None

    @field_validator("replay_start", "replay_end", mode="before")
    @classmethod
    def _a_date(cls, value: Any) -> Any:
        if isinstance(value, datetime):
            raise ValueError("must be a date (1980-01-02), not a date and time")
        if isinstance(value, str):
            try:
                return date.fromisoformat(value)
            except ValueError:
                raise ValueError("must be a date written YYYY-MM-DD") from None
        return value

    @model_validator(mode="after")
    def _clock_keys(self) -> ScheduleEntry:
        replay_keys = sorted(k for k in self.model_fields_set if k.startswith("replay_"))
        if self.clock == "wall" and replay_keys:
            raise ValueError(
                f"{', '.join(f'`{k}`' for k in replay_keys)} only apply to a replay clock: add "
                f'clock = "replay", or remove them to keep the wall clock'
            )
        if self.clock == "replay":
            if self.replay_start is None:
                raise ValueError(
                    'clock = "replay" needs `replay_start`, the first date of the data the '
                    "replay stands for (e.g. replay_start = 1980-01-02)"
                )
            if self.replay_end is not None and self.replay_end < self.replay_start:
                raise ValueError(
                    f"`replay_end` {self.replay_end} is before `replay_start` {self.replay_start}"
                )
        return self

    @field_validator("after", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {value!r}") from exc
        return value

    @property
    def where(self) -> str:
        return f"{self.file}, entry [{self.name}]"

    def partition_for(self, pipeline: Pipeline, scheduled: datetime) -> date:
        """The partition a run scheduled at `scheduled` processes."""
        local = scheduled.astimezone(ZoneInfo(self.timezone)).date()
        calendar = pipeline.calendar
        if self.partition_offset == 0:
            recent = calendar.dates(local - timedelta(days=30), local)
            if not recent:
                raise ScheduleError(f"{self.where}: no calendar date on or before {local}")
            return recent[-1]
        return calendar.shift(local, self.partition_offset)


ENTRY_KEYS = sorted(set(ScheduleEntry.model_fields) - {"name", "file"})


def load_entries(settings: Settings, folder: str = "deployments") -> list[ScheduleEntry]:
    """Parse and validate every entry in `<root>/deployments/*.toml`."""
    entries = []
    base = settings.project_root / folder
    for path in sorted(base.glob("*.toml")):
        relative = str(path.relative_to(settings.project_root))
        try:
            document = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ScheduleError(f"{relative}: not valid TOML ({exc})") from exc
        for name, table in document.items():
            if not isinstance(table, dict):
                raise ScheduleError(f"{relative}: `{name}` must be a table ([{name}])")
            entries.append(parse_entry(relative, name, table))
    names = [e.name for e in entries]
    duplicated = {n for n in names if names.count(n) > 1}
    if duplicated:
        raise ScheduleError(f"deployment names must be unique; repeated: {sorted(duplicated)}")
    for entry in entries:
        validate_entry(entry, settings)
    return entries


def parse_entry(file: str, name: str, table: dict[str, Any]) -> ScheduleEntry:
    """One TOML table as a ScheduleEntry; a bad key or value is named with its file and entry."""
    where = f"{file}, entry [{name}]"
    if "name" in table or "file" in table:
        raise ScheduleError(f"{where}: `name` and `file` are not keys; valid keys: {ENTRY_KEYS}")
    try:
        return ScheduleEntry(name=name, file=file, **table)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            key = ".".join(str(part) for part in error["loc"])
            if not key:  # a rule over several keys (the clock's): its message names them
                problems.append(str(error["msg"]).removeprefix("Value error, "))
            elif error["type"] == "extra_forbidden":
                problems.append(f"unknown key `{key}`; valid keys: {ENTRY_KEYS}")
            elif error["type"] == "missing":
                problems.append(f"`{key}` is required")
            else:
                message = str(error["msg"]).removeprefix("Value error, ")
                got = repr(error.get("input"))
                problems.append(
                    f"key `{key}`: {message}" + ("" if got in message else f" (got {got})")
                )
        raise ScheduleError(f"{where}: " + "; ".join(problems)) from None


def validate_entry(entry: ScheduleEntry, settings: Settings) -> Pipeline:
    """Check the cron expression, time zone, pipeline, upstreams and parameters of an entry."""
    from conveyor.backends.prefect_deploy import cron_problem

    problem = cron_problem(entry.cron, entry.timezone)
    if problem is not None:
        raise ScheduleError(
            f"{entry.where}: cron {entry.cron!r} is not a valid cron expression ({problem}); "
            f"five fields: minute hour day-of-month month day-of-week, e.g. '30 18 * * 1-5'"
        )
    try:
        pipeline = resolve_pipeline(entry.pipeline, settings)
    except DiscoveryError as exc:
        raise ScheduleError(f"{entry.where}: {exc}") from exc
    for upstream in entry.after:
        try:
            resolve_pipeline(upstream, settings)
        except DiscoveryError as exc:
            raise ScheduleError(f"{entry.where}: `after` names {upstream!r}: {exc}") from exc
    if entry.clock == "replay":
        _check_replay_dates(entry, pipeline)
    trial = dict(entry.parameters)
    for name in _partition_params(pipeline):
        trial[name] = date.today()
    try:
        pipeline.bind(trial)
    except ParameterError as exc:
        raise ScheduleError(f"{entry.where}: {exc}") from exc
    return pipeline


def _check_replay_dates(entry: ScheduleEntry, pipeline: Pipeline) -> None:
    assert entry.replay_start is not None  # the model's validator requires it
    if pipeline.partition is None:
        raise ScheduleError(
            f"{entry.where}: pipeline {entry.pipeline!r} has no partition, so a replay clock "
            f"has nothing to map its ticks onto; remove the clock keys"
        )
    start = entry.replay_start
    if not pipeline.calendar.dates(start, start):
        following = pipeline.calendar.shift(start, 1)
        raise ScheduleError(
            f"{entry.where}: replay_start {start} is not a date of pipeline {entry.pipeline!r}'s "
            f"calendar ({pipeline.calendar.name}); the next one is {following}"
        )


def _partition_params(pipeline: Pipeline) -> tuple[str, ...]:
    if pipeline.partition is None:
        return ()
    return pipeline.partition if isinstance(pipeline.partition, tuple) else (pipeline.partition,)


def resolve_scheduled_params(
    entry: ScheduleEntry,
    pipeline: Pipeline,
    settings: Settings,
    params: dict[str, Any],
    scheduled: datetime,
) -> dict[str, Any]:
    """Fill in the partition from the scheduled time; wait for `after` upstreams (bounded)."""
    return resolve_tick(entry, pipeline, settings, params, scheduled)[0]


def resolve_tick(
    entry: ScheduleEntry,
    pipeline: Pipeline,
    settings: Settings,
    params: dict[str, Any],
    scheduled: datetime,
    flow_run_id: str | None = None,
) -> tuple[dict[str, Any], Tick | None]:
    """A tick's parameters: its partition from the entry's clock (unless `params` name one), its
    fixed parameters, after its `after` upstreams succeeded for the same dates (bounded wait).

    Returns the tick too (None when the partition was given): its clock's mapping, recorded.
    """
    from conveyor.ops.clock import claim_tick

    params = {**entry.parameters, **{k: v for k, v in params.items() if v is not None}}
    partition_names = _partition_params(pipeline)
    tick = None
    if partition_names and not all(n in params for n in partition_names):
        tick = claim_tick(entry, pipeline, settings, scheduled, flow_run_id)
        assert tick.dates.partition is not None  # the pipeline has a partition
        first, last = tick.dates.partition
        if isinstance(pipeline.partition, tuple):
            params[partition_names[0]], params[partition_names[1]] = first, last
        else:
            params[partition_names[0]] = last
    try:
        bound = pipeline.bind(params)
        window = pipeline.partition_range(bound)
        if entry.after and window:
            wait_for_upstreams(entry, pipeline, settings, window)
    except BaseException:
        finish(settings, tick, ok=False)
        raise
    return params, tick


def finish(settings: Settings, tick: Tick | None, *, ok: bool) -> None:
    """Record how a tick's run ended (a failed replay tick is repeated by the next one)."""
    if tick is None or tick.record is None:
        return
    from conveyor.db.clocks import finish_tick

    finish_tick(settings, tick.record, "succeeded" if ok else "failed")


def wait_for_upstreams(
    entry: ScheduleEntry, pipeline: Pipeline, settings: Settings, window: tuple[date, date]
) -> None:
    """Block until every `after` pipeline succeeded for the window's dates, or fail naming one."""
    from conveyor.db.lineage import partition_status

    dates = pipeline.calendar.dates(*window)
    deadline = time.monotonic() + entry.wait_minutes * 60
    while True:
        missing = []
        for upstream in entry.after:
            statuses = partition_status(settings, upstream, window[0], window[1])
            missing += [(upstream, d) for d in dates if statuses.get(d) != "succeeded"]
        if not missing:
            return
        if time.monotonic() >= deadline:
            upstream, day = missing[0]
            raise ScheduleError(
                f"{entry.where}: upstream pipeline {upstream!r} has not succeeded for partition "
                f"{day} (waited {entry.wait_minutes:g} min); run or backfill it first "
                f"(`conveyor backfill {upstream} --start {day} --end {day}`)"
            )
        time.sleep(min(POLL_SECONDS, max(0.1, deadline - time.monotonic())))


def find_entry(settings: Settings, name: str) -> ScheduleEntry:
    for entry in load_entries(settings):
        if entry.name == name:
            return entry
    raise ScheduleError(f"no deployment entry named {name!r} in deployments/*.toml")


def entrypoint_file(settings: Settings, entry: ScheduleEntry) -> Path:
    """A tiny module Prefect's runner imports to rebuild this entry's flow in a subprocess."""
    folder = settings.home / "prefect" / "entrypoints"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{entry.name.replace('-', '_')}.py"
    path.write_text(
        f'"""Generated by conveyor: the Prefect entrypoint of deployment {entry.name!r}."""\n\n'
        "from conveyor.ops.schedules import scheduled_flow\n\n"
        f"flow = scheduled_flow({entry.name!r})\n"
    )
    return path


def scheduled_flow(name: str, settings: Settings | None = None) -> Any:
    """The Prefect flow of a deployment entry: derives its partition, waits for upstreams."""
    from conveyor.backends.prefect_deploy import scheduled_flow as prefect_flow
    from conveyor.backends.prefect_flow import Resolved, configure
    from conveyor.ops.run import build_engine

    settings = settings or Settings.load()
    configure(settings)
    entry = find_entry(settings, name)
    pipeline = resolve_pipeline(entry.pipeline, settings)
    engine = build_engine(settings, runner=entry.runner)

    def resolve(params: dict[str, Any], scheduled: datetime, flow_run_id: str | None) -> Resolved:
        params, tick = resolve_tick(entry, pipeline, settings, params, scheduled, flow_run_id)
        if tick is None:
            return Resolved(params=params)
        record = tick.record

        def on_run(run_id: str) -> None:
            if record is not None:
                from conveyor.db.clocks import link_run

                link_run(settings, record, run_id)

        def on_end(result: RunResult | None) -> None:
            finish(settings, tick, ok=result is not None and result.ok)

        window = tick.dates.partition
        shown = "" if window is None else str(window[0]) if window[0] == window[1] else (
            f"{window[0]}..{window[1]}")  # fmt: skip
        kind = f"replay tick {record.tick}" if record and record.kind == "replay" else "wall"
        return Resolved(
            params=params,
            tags=("replay",) if entry.clock == "replay" else (),
            on_run=on_run,
            on_end=on_end,
            notes={"tick": tick.describe(), "name": f"{entry.name} {shown} ({kind})"},
        )

    return prefect_flow(engine, pipeline, resolve)


def to_deployment(entry: ScheduleEntry, settings: Settings, work_pool: str | None = None) -> Any:
    """A Prefect deployment for an entry, its entrypoint the generated module."""
    from conveyor.backends.prefect_deploy import deployment

    stub = entrypoint_file(settings, entry)
    return deployment(
        scheduled_flow(entry.name, settings),
        name=entry.name,
        cron=entry.cron,
        timezone=entry.timezone,
        description=entry.description or f"{entry.pipeline} on cron {entry.cron}",
        entrypoint=f"{stub.relative_to(settings.project_root)}:flow",
        work_pool=work_pool,
    )


def serve(settings: Settings, limit: int | None = None) -> None:
    """Serve every entry with Prefect: shown with its schedule in the UI, run on time."""
    from conveyor.backends.prefect_deploy import serve as serve_deployments

    deployments = [to_deployment(e, settings) for e in load_entries(settings)]
    if not deployments:
        raise ScheduleError(f"no entries in {settings.project_root / 'deployments'}/*.toml")
    serve_deployments(deployments, limit=limit)


def deploy(settings: Settings, work_pool: str) -> list[str]:
    """Register every entry for the Prefect workers of `work_pool` (created if missing);
    returns deployment ids. Workers rebuild each flow from conveyor itself
    (`conveyor.ops.pool_flows`), not from a file written here, so they may run anywhere."""
    from conveyor.backends.prefect_pool import flow_entrypoint, register

    ids = []
    for entry in load_entries(settings):
        ids.append(
            register(
                scheduled_flow(entry.name, settings),
                name=entry.name,
                pool=work_pool,
                entrypoint=flow_entrypoint("schedule", entry.name),
                env={"CONVEYOR_DEPLOYED_ROOT": str(settings.project_root)},
                tags=["conveyor", "scheduled"],
                description=entry.description or f"{entry.pipeline} on cron {entry.cron}",
                cron=entry.cron,
                timezone=entry.timezone,
            )
        )
    return ids
