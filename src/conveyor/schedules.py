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
    runner = "venv"

A scheduled run's partition is derived from its scheduled time, so the same deployment serves
every day without new parameters.
"""

from __future__ import annotations

import time
import tomllib
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from conveyor.dag import Pipeline
from conveyor.discovery import resolve_pipeline
from conveyor.errors import ConveyorError, DiscoveryError, ParameterError
from conveyor.settings import Settings

ENTRY_KEYS = {
    "pipeline", "cron", "timezone", "partition_offset", "parameters", "after", "wait_minutes",
    "runner", "description",
}  # fmt: skip
POLL_SECONDS = 10.0


class ScheduleError(ConveyorError):
    """A deployments/*.toml entry is invalid, or a scheduled run's upstream never succeeded."""


@dataclass(frozen=True, slots=True)
class ScheduleEntry:
    """One scheduled pipeline from deployments/*.toml."""

    name: str
    file: str
    pipeline: str
    cron: str
    timezone: str = "UTC"
    partition_offset: int = 0
    parameters: dict[str, Any] = field(default_factory=dict)
    after: tuple[str, ...] = ()
    wait_minutes: float = 60.0
    runner: str = "venv"
    description: str = ""

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
            entries.append(_entry(relative, name, table))
    names = [e.name for e in entries]
    duplicated = {n for n in names if names.count(n) > 1}
    if duplicated:
        raise ScheduleError(f"deployment names must be unique; repeated: {sorted(duplicated)}")
    for entry in entries:
        validate_entry(entry, settings)
    return entries


def _entry(file: str, name: str, table: dict[str, Any]) -> ScheduleEntry:
    where = f"{file}, entry [{name}]"
    unknown = set(table) - ENTRY_KEYS
    if unknown:
        raise ScheduleError(
            f"{where}: unknown key(s) {sorted(unknown)}; valid keys: {sorted(ENTRY_KEYS)}"
        )
    for key in ("pipeline", "cron"):
        if not isinstance(table.get(key), str):
            raise ScheduleError(f"{where}: `{key}` is required and must be a string")
    after = table.get("after", [])
    if isinstance(after, str):
        after = [after]
    return ScheduleEntry(
        name=name,
        file=file,
        pipeline=table["pipeline"],
        cron=table["cron"],
        timezone=table.get("timezone", "UTC"),
        partition_offset=int(table.get("partition_offset", 0)),
        parameters=dict(table.get("parameters", {})),
        after=tuple(after),
        wait_minutes=float(table.get("wait_minutes", 60)),
        runner=table.get("runner", "venv"),
        description=table.get("description", ""),
    )


def validate_entry(entry: ScheduleEntry, settings: Settings) -> Pipeline:
    """Check the cron expression, time zone, pipeline, upstreams and parameters of an entry."""
    from croniter import croniter

    if not croniter.is_valid(entry.cron):
        raise ScheduleError(
            f"{entry.where}: cron {entry.cron!r} is not a valid cron expression (five fields: "
            f"minute hour day-of-month month day-of-week, e.g. '30 18 * * 1-5')"
        )
    try:
        ZoneInfo(entry.timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleError(f"{entry.where}: unknown timezone {entry.timezone!r}") from exc
    try:
        pipeline = resolve_pipeline(entry.pipeline, settings)
    except DiscoveryError as exc:
        raise ScheduleError(f"{entry.where}: {exc}") from exc
    for upstream in entry.after:
        try:
            resolve_pipeline(upstream, settings)
        except DiscoveryError as exc:
            raise ScheduleError(f"{entry.where}: `after` names {upstream!r}: {exc}") from exc
    trial = dict(entry.parameters)
    for name in _partition_params(pipeline):
        trial[name] = date.today()
    try:
        pipeline.bind(trial)
    except ParameterError as exc:
        raise ScheduleError(f"{entry.where}: {exc}") from exc
    return pipeline


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
    params = {**entry.parameters, **{k: v for k, v in params.items() if v is not None}}
    partition_names = _partition_params(pipeline)
    if partition_names and not all(n in params for n in partition_names):
        day = entry.partition_for(pipeline, scheduled)
        for name in partition_names:
            params[name] = day
    bound = pipeline.bind(params)
    window = pipeline.partition_range(bound)
    if entry.after and window:
        wait_for_upstreams(entry, pipeline, settings, window)
    return params


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
        "from conveyor.schedules import scheduled_flow\n\n"
        f"flow = scheduled_flow({entry.name!r})\n"
    )
    return path


def scheduled_flow(name: str, settings: Settings | None = None) -> Any:
    """The Prefect flow of a deployment entry: derives its partition, waits for upstreams."""
    from prefect.runtime import flow_run

    from conveyor.launch import build_engine
    from conveyor.prefect_flow import build_flow, configure

    settings = settings or Settings.load()
    configure(settings)
    entry = find_entry(settings, name)
    pipeline = resolve_pipeline(entry.pipeline, settings)
    engine = build_engine(settings, runner=entry.runner)

    def resolve(params: dict[str, Any]) -> dict[str, Any]:
        scheduled = flow_run.scheduled_start_time or datetime.now().astimezone()
        return resolve_scheduled_params(entry, pipeline, settings, params, scheduled)

    return build_flow(engine, pipeline, tags=("scheduled",), resolve_params=resolve)


def to_deployment(entry: ScheduleEntry, settings: Settings, work_pool: str | None = None) -> Any:
    """A Prefect RunnerDeployment for an entry, its entrypoint the generated module."""
    from prefect.schedules import Cron

    flow = scheduled_flow(entry.name, settings)
    options: dict[str, Any] = {
        "name": entry.name,
        "schedules": [Cron(entry.cron, timezone=entry.timezone)],
        "parameters": {},
        "description": entry.description or f"{entry.pipeline} on cron {entry.cron}",
        "tags": ["conveyor", "scheduled"],
    }
    if work_pool:
        options["work_pool_name"] = work_pool
    deployment = flow.to_deployment(**options)
    stub = entrypoint_file(settings, entry)
    deployment.entrypoint = f"{stub.relative_to(settings.project_root)}:flow"
    return deployment


def serve(settings: Settings, limit: int | None = None) -> None:
    """Serve every entry with Prefect: shown with its schedule in the UI, run on time."""
    from prefect import serve as prefect_serve

    deployments = [to_deployment(e, settings) for e in load_entries(settings)]
    if not deployments:
        raise ScheduleError(f"no entries in {settings.project_root / 'deployments'}/*.toml")
    prefect_serve(*deployments, limit=limit)


def deploy(settings: Settings, work_pool: str) -> list[str]:
    """Register every entry for the Prefect workers of `work_pool`; returns deployment ids."""
    ids = []
    for entry in load_entries(settings):
        deployment = to_deployment(entry, settings, work_pool=work_pool)
        ids.append(str(deployment.apply()))
    return ids
