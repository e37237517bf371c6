"""The host-step implementations the engine is handed: load_table, write_table, register_model,
load_model. They run in the orchestrator process, the only place that holds credentials.

`implementations(settings)` is cheap: the database is opened on the first host step that needs
it, once per engine, and shared by its steps.
"""

from __future__ import annotations

import re
import subprocess
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor._runtime.tables import table_name
from conveyor.dsl.artifacts import ArtifactRef, Codec
from conveyor.dsl.host import HostContext, metrics_problem
from conveyor.engine.settings import Settings
from conveyor.errors import HostStepError, RegistryError

if TYPE_CHECKING:
    from conveyor.db.database import Database

# The database modules (and SQLAlchemy under them) are imported by the host step that first
# needs them: a run gets these implementations whether or not its pipeline has host steps, and
# one without them (or a cached re-run planning only) should not pay for the import.

LOAD_TABLE_STEP = re.compile(r"load_table(_\d+)?")


def implementations(settings: Settings) -> dict[str, Callable[..., Any]]:
    """Host-step kind -> implementation, all sharing one lazily opened database."""
    steps = HostSteps(settings)

    def load_model(ctx: HostContext, **inputs: Any) -> ArtifactRef:
        return steps.load_model(ctx, **inputs)

    # planning asks for the model before environments are built (see planning.resolve_models);
    # it finds the resolver as an attribute of the function, which mypy's function type lacks
    load_model.resolve_at_plan = steps.resolve_model  # type: ignore[attr-defined]
    load_model.__doc__ = HostSteps.load_model.__doc__
    return {
        "load_table": steps.load_table,
        "write_table": steps.write_table,
        "register_model": steps.register_model,
        "load_model": load_model,
    }


class HostSteps:
    """Host steps bound to one project's database."""

    def __init__(self, settings: Settings, database: Database | None = None) -> None:
        self.settings = settings
        self._database = database
        self._lock = threading.Lock()

    @property
    def database(self) -> Database:
        with self._lock:
            if self._database is None:
                from conveyor.db.database import shared_database

                self._database = shared_database(self.settings)
            return self._database

    def load_table(
        self,
        ctx: HostContext,
        table: str,
        start: date | None = None,
        end: date | None = None,
        days: int | None = None,
        columns: list[str] | None = None,
    ) -> Any:
        """Rows of `table` in [start, end] (or the `days` calendar days ending at `end`)."""
        from conveyor.db import reads

        frame = reads.load_table(self.database, table, start, end, days, columns)
        ctx.log.info("load_table %s: %d rows", table, len(frame))
        return frame

    def write_table(
        self,
        ctx: HostContext,
        df: Any,
        table: str | dict[str, Any],
        partition_start: date | None = None,
        partition_end: date | None = None,
        partition_col: str | None = None,
        min_rows: int | None = None,
        key_col: str | None = None,
        key_value: str | int | None = None,
    ) -> int:
        """Replace one partition of `table` (a name, or a declaration's JSON) with `df`; the
        rows written."""
        name = table_name(table)
        if partition_start is None and key_col is None and ctx.partition is not None:
            raise HostStepError(
                f"step {ctx.step!r}: write_table({name!r}) has no partition in a partitioned "
                f"pipeline, so it would replace the whole table on every run. Pass "
                f"partition=<the partition parameter> (or a (start, end) pair)."
            )
        if min_rows is not None:
            check_rows_per_date(ctx, df, name, partition_start, partition_end, partition_col,
                                min_rows)  # fmt: skip
        from conveyor.db import writes

        rows = writes.write_table(
            self.database, df, table, partition_start, partition_end, partition_col,
            key={key_col: key_value} if key_col is not None else None, run_id=ctx.run_id,
        )  # fmt: skip
        shown = f" ({key_col}={key_value!r})" if key_col is not None else ""
        ctx.log.info("write_table %s%s: %d rows", name, shown, rows)
        return rows

    def register_model(
        self,
        ctx: HostContext,
        name: str,
        model: ArtifactRef,
        metrics: dict[str, float] | None = None,
        params: dict[str, Any] | None = None,
    ) -> int:
        """Record `model` (a reference; never loaded) with its lineage; its version number."""
        if not isinstance(model, ArtifactRef):
            raise HostStepError(f"step {ctx.step!r}: register_model needs the model's reference")
        problem = metrics_problem(metrics) if metrics is not None else None
        if problem:
            source = ctx.upstream.get("metrics")
            shown = f" (the output of step {source})" if source else ""
            raise HostStepError(
                f"step {ctx.step!r}: register_model({name!r}): {problem}{shown}. Nothing was "
                f"registered."
            )
        from conveyor.db import registry

        producer = ctx.upstream.get("model")
        environment = ctx.environments.get(producer) if producer else None
        reads_ = tables_read(ctx, self.database)
        starts = [r["start"] for r in reads_ if r["start"]]
        ends = [r["end"] for r in reads_ if r["end"]]
        partition = ctx.partition or (None, None)
        sha, dirty = git_version(ctx.project_root)
        version = registry.register(
            self.database,
            registry.NewModel(
                name=name,
                artifact=model,
                location=ctx.store.uri_for(model.sha256),
                metrics={k: float(v) for k, v in (metrics or {}).items()},
                params=dict(params or {}),
                train_start=date.fromisoformat(min(starts)) if starts else partition[0],
                train_end=date.fromisoformat(max(ends)) if ends else partition[1],
                training_data=reads_,
                git_sha=sha,
                git_dirty=dirty,
                code_hash=ctx.code.get(producer) if producer else None,
                environment_key=getattr(environment, "key", None),
                environment_lock_path=getattr(environment, "lock_path", None),
                environment_lock="\n".join(getattr(environment, "pins", ())) or None,
                interpreter=getattr(environment, "interpreter", None),
                run_id=ctx.run_id,
                pipeline=ctx.pipeline,
                step=ctx.step,
                producing_step=producer,
            ),
            at=training_cutoff(ctx.partition),
        )
        ctx.log.info("register_model %s: version %d", name, version)
        return version

    def resolve_model(
        self,
        name: str,
        stage: str | None = "production",
        version: int | None = None,
        as_of: date | str | None = None,
        required: bool = True,
    ) -> dict[str, Any] | None:
        """The version load_model will return and the pins of the environment that built it,
        resolved when the run is planned (so the consuming step's environment can use them).
        None when there is no such model and it is not required."""
        from conveyor.db import registry

        try:
            record = registry.resolve(
                self.database, name, stage=stage, version=version, as_of=_date(as_of)
            )
        except RegistryError:
            if required:
                raise
            return None
        return {"version": record.version, "pins": list(record.pins)}

    def load_model(
        self,
        ctx: HostContext,
        name: str,
        stage: str | None = "production",
        version: int | None = None,
        as_of: date | None = None,
        required: bool = True,
    ) -> ArtifactRef:
        """The reference of the model version asked for, checked to be in the artifact store.

        When the run was planned with this model resolved (`ctx.pinned`), that exact version
        is returned, even if a promotion happened since: the consuming step's environment was
        built for it. With `required=False`, no such model gives a stored None (the first
        training run has no production model to compare with).
        """
        from conveyor.db import registry

        pinned = getattr(ctx.pinned, "version", None)
        try:
            if pinned is not None:
                record = registry.resolve(self.database, name, version=pinned)
            else:
                record = registry.resolve(
                    self.database, name, stage=stage, version=version, as_of=as_of
                )
        except RegistryError as exc:
            if required:
                raise
            ctx.log.info("load_model %s: none (%s); passing None", name, exc)
            return ctx.store.put(None, Codec("joblib"))
        if not ctx.store.exists(record.artifact):
            raise HostStepError(
                f"step {ctx.step!r}: model {name!r} v{record.version} is registered, but its "
                f"artifact {record.artifact.sha256[:12]} is not in this artifact store "
                f"({ctx.store.url}); it was stored at {record.location}"
            )
        requested = {
            "stage": stage if version is None else None,
            "version": version,
            "as_of": as_of.isoformat() if as_of else None,
            "pinned_at_plan": pinned,
        }
        registry.record_load(
            self.database, record, run_id=ctx.run_id, step=ctx.step, requested=requested
        )
        ctx.log.info("load_model %s: version %d (%s)", name, record.version, record.stage)
        return record.artifact


def tables_read(ctx: HostContext, database: Database) -> list[dict[str, Any]]:
    """What the run's load_table steps read so far: table, the dates of the rows it got (and the
    range it asked for, when wider), content hash."""
    from conveyor.db import reads

    found = []
    for step, result in sorted(ctx.results.items()):
        if not LOAD_TABLE_STEP.fullmatch(step) or result.status not in ("succeeded", "cached"):
            continue
        inputs = result.inputs
        start, end = reads.resolve_range(
            _date(inputs.get("start")), _date(inputs.get("end")), inputs.get("days")
        )
        output = result.artifacts.get("output")
        table = inputs.get("table")
        # `days=9000` before 1990 asks from 1965 on; the rows may start in 1972: say that
        got = reads.data_span(database, table, start, end) if table else None
        asked = {}
        if got is not None and (got[0], got[1]) != (start, end):
            asked = {"asked_start": _iso(start), "asked_end": _iso(end)}
            start, end = got
        found.append(
            {
                "step": step,
                "table": table_name(table) if table else None,
                "start": _iso(start),
                "end": _iso(end),
                **asked,
                "columns": inputs.get("columns"),
                "sha256": output.sha256 if output else None,
            }
        )
    return found


def _iso(day: date | None) -> str | None:
    return day.isoformat() if day else None


def training_cutoff(partition: tuple[date, date] | None) -> datetime | None:
    """When a partitioned run's model takes effect in the registry: the start (UTC) of its last
    partition date — data time, so replaying history finds the models of that time. None (now)
    for an unpartitioned run."""
    if partition is None:
        return None
    return datetime.combine(partition[1], time.min, UTC)


def _date(value: Any) -> date | None:
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(str(value))


def git_version(root: Path | str) -> tuple[str | None, bool | None]:
    """(HEAD commit, whether tracked files differ from it) of the repository at `root`;
    (None, None) when it is not a git repository or git is missing."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(root), *args],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 else None

    sha = git("rev-parse", "HEAD")
    if sha is None:
        return None, None
    status = git("status", "--porcelain", "--untracked-files=no")
    return sha.strip(), bool(status.strip()) if status is not None else None


def check_rows_per_date(
    ctx: HostContext,
    df: Any,
    table: str,
    start: date | None,
    end: date | None,
    partition_col: str | None,
    min_rows: int,
) -> None:
    """Fail, before anything is written, when a partition date has fewer than `min_rows` rows.

    The dates are the run's calendar dates within the written partition: a trading day with
    no data is an error, not a succeeded, empty partition that later backfills skip.
    """
    import pandas as pd

    if isinstance(min_rows, bool) or not isinstance(min_rows, int) or min_rows < 0:
        raise HostStepError(f"write_table({table!r}): min_rows={min_rows!r} must be a count >= 0")
    if start is None:
        dates = []
    else:
        last = end or start
        dates = [d for d in ctx.run.partition_dates if start <= d <= last] or [start]
    if not dates:
        if len(df) < min_rows:
            raise HostStepError(
                f"write_table({table!r}): {len(df)} row(s), at least {min_rows} expected"
            )
        return
    if partition_col is None or len(dates) == 1:
        counts = {dates[0]: len(df)} if len(dates) == 1 else {}
    else:
        if partition_col not in df.columns:
            return  # writes.write_table names the missing column
        days = pd.to_datetime(df[partition_col], errors="coerce").dt.date
        counts = days.value_counts().to_dict()
    short = [(d, counts.get(d, 0)) for d in dates if counts.get(d, 0) < min_rows]
    if short:
        listed = ", ".join(f"{d} ({n})" for d, n in short[:5]) + (" ..." if len(short) > 5 else "")
        raise HostStepError(
            f"write_table({table!r}): {len(short)} partition date(s) have fewer than {min_rows} "
            f"row(s): {listed}. Nothing was written; a date with no data is an error here "
            f"(min_rows={min_rows}), not an empty partition"
        )
