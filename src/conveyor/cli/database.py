"""`conveyor db upgrade | current | tables | drop-table`, `conveyor models list | show | promote |
rollback`, `conveyor runs list | show`.

The database layer is imported inside each command, so the CLI still starts (and these commands
explain what to install) where SQLAlchemy is missing.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from conveyor.cli import app
from conveyor.cli.common import STATUS_STYLE, console, fail, settings, styled
from conveyor.errors import ConveyorError

db_app = typer.Typer(help="conveyor's database (SQLite by default).", no_args_is_help=True)
models_app = typer.Typer(help="The model registry.", no_args_is_help=True)
runs_app = typer.Typer(help="Recorded runs and their lineage.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(models_app, name="models")
app.add_typer(runs_app, name="runs")

STAGE_STYLE = {"production": "green", "candidate": "cyan", "archived": "dim"}


def _need_db() -> None:
    import importlib.util

    if importlib.util.find_spec("sqlalchemy") is None:
        fail("conveyor's database layer is not installed: pip install 'conveyor[db]'")


def _styled(text: str, styles: dict[str, str]) -> Text:
    return styled(text, styles.get(text, ""))


def _when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S}" if moment else ""


def _seconds(value: float | None) -> str:
    return f"{value:.2f}s" if value is not None else ""


def _short(value: Any, width: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def _input(value: Any) -> str:
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:12]  # an artifact's content hash
    if isinstance(value, dict) and set(value) == {"sha256", "bytes"}:  # recorded by hash
        return f"<{value['bytes']:,} bytes, sha256 {value['sha256'][:12]}>"
    return _short(value, 40)


# ----------------------------------------------------------------------------------- db


@db_app.command("upgrade")
def db_upgrade(
    revision: str = typer.Option("head", help="Alembic revision to upgrade to."),
) -> None:
    """Create or upgrade conveyor's tables in the configured database."""
    _need_db()
    from conveyor.db.database import Database

    database = Database.from_settings(settings())
    try:
        before = database.stored_revision()
        reached = database.upgrade(revision)
    finally:
        database.close()
    change = "already at" if before == reached else f"upgraded from {before or '(empty)'} to"
    console.print(f"{database.display_url}: {change} revision {reached}")


@db_app.command("current")
def db_current() -> None:
    """Show which database is configured and its schema revision."""
    _need_db()
    from conveyor.db.database import Database
    from conveyor.db.models import SCHEMA_REVISION

    database = Database.from_settings(settings(), upgrade=False)
    try:
        stored = database.stored_revision()
    finally:
        database.close()
    state = "up to date" if stored == SCHEMA_REVISION else "needs `conveyor db upgrade`"
    console.print(f"database: {database.display_url}")
    console.print(f"revision: {stored or '(none: no conveyor tables yet)'} ({state})")
    console.print(f"this conveyor expects: {SCHEMA_REVISION}")


@db_app.command("tables")
def db_tables(
    name: str = typer.Argument(None, help="Show this table only."),
) -> None:
    """User tables and their schemas as the database holds them: column types (as a
    conveyor.Table declares them), NOT NULL, primary key, partition column."""
    _need_db()
    from conveyor.db.database import Database
    from conveyor.db.tables import describe_tables

    database = Database.from_settings(settings())
    try:
        found = describe_tables(database, name)
    finally:
        database.close()
    if not found:
        console.print(f"{database.display_url}: no tables yet (write_table creates them)")
        return
    for info in found:
        origin = (
            f"created {_when(info.created_at)} UTC"
            + (f" by run {info.created_by_run}" if info.created_by_run else "")
            if info.created_by_conveyor
            else "not created by conveyor"
        )
        console.print(
            Text.assemble(
                (info.name, "bold"),
                f" · partition column {info.partition_col or '-'} · key "
                f"{', '.join(info.key) or '-'} · {origin}",
            ),
            soft_wrap=True,
        )
        table = Table()
        for heading in ("column", "type", "missing values", "key"):
            table.add_column(heading)
        for column in info.columns:
            table.add_row(
                column.name,
                column.kind or f"{column.origin} (conveyor cannot read it)",
                "allowed" if column.nullable else "NOT NULL",
                str(column.key) if column.key else "",
            )
        console.print(table)


@db_app.command("drop-table")
def db_drop_table(
    name: str = typer.Argument(..., help="The table to drop."),
    yes: bool = typer.Option(False, "--yes", help="Really drop it, with every row."),
) -> None:
    """Drop a user table and every row in it (to re-create it from a changed declaration).

    Without --yes nothing is dropped: the command says what would go. Partitions recorded as
    written stay recorded: write them again with `conveyor backfill ... --reprocess all`.
    """
    _need_db()
    from conveyor.db.database import Database
    from conveyor.db.tables import describe_tables, drop_user_table

    database = Database.from_settings(settings())
    try:
        if not yes:
            info = describe_tables(database, name)[0]
            fail(
                f"drop-table deletes table {info.name!r} ({len(info.columns)} columns) and every "
                f"row in it from {database.display_url}; nothing was dropped. Run again with "
                f"--yes to drop it."
            )
        rows = drop_user_table(database, name)
    finally:
        database.close()
    console.print(f"dropped table {name} ({rows} rows) from {database.display_url}")


# ----------------------------------------------------------------------------------- models


@models_app.command("list")
def models_list() -> None:
    """Registered models: versions, the latest, the one in production."""
    _need_db()
    from conveyor.db import registry

    table = Table(title="models", title_justify="left")
    for column in ("name", "versions", "latest", "production", "last registered"):
        table.add_column(column)
    for model in registry.models(settings()):
        table.add_row(
            model.name,
            str(model.versions),
            f"v{model.latest}",
            f"v{model.production}" if model.production else "-",
            _when(model.updated_at),
        )
    console.print(table)


@models_app.command("show")
def models_show(
    name: str = typer.Argument(..., help="Model name."),
    version: int = typer.Option(None, "--version", "-v", help="Show one version in detail."),
) -> None:
    """A model's versions and stage history, or one version's full lineage."""
    _need_db()
    from conveyor.cli.values import metrics_text
    from conveyor.db import registry

    config = settings()
    if version is not None:
        record = registry.resolve(config, name, version=version)
        _print_version(record)
        return
    table = Table(title=f"model {name}", title_justify="left")
    for column in ("version", "stage", "registered", "metrics", "trained on", "code", "run"):
        table.add_column(column)
    for record in registry.versions(config, name):
        table.add_row(
            f"v{record.version}",
            _styled(record.stage, STAGE_STYLE),
            _when(record.created_at),
            metrics_text(record.metrics),
            f"{record.train_start or ''} .. {record.train_end or ''}",
            _code(record),
            record.run_id or "",
        )
    console.print(table)
    spans = Table(title="stage history", title_justify="left")
    for column in ("version", "stage", "from", "until", "note"):
        spans.add_column(column)
    for span in registry.history(config, name):
        spans.add_row(
            f"v{span.version}",
            _styled(span.stage, STAGE_STYLE),
            _when(span.started_at),
            _when(span.ended_at) or "now",
            span.note,
        )
    console.print(spans)


def _code(record: Any) -> str:
    if not record.git_sha:
        return f"hash {record.code_hash[:12]}" if record.code_hash else ""
    dirty = " (dirty)" if record.git_dirty else ""
    return f"git {record.git_sha[:10]}{dirty}"


def _print_version(record: Any) -> None:
    rows = [
        ("stage", record.stage),
        ("artifact", f"{record.artifact.sha256} ({record.artifact.codec.describe()}, "
                     f"{record.artifact.size} bytes)"),
        ("location", record.location),
        ("metrics", json.dumps(record.metrics)),
        ("params", json.dumps(record.params)),
        ("training range", f"{record.train_start} .. {record.train_end}"),
        ("trained by", f"run {record.run_id} ({record.pipeline}), step {record.producing_step}"),
        ("git", f"{record.git_sha or '-'}{' (dirty)' if record.git_dirty else ''}"),
        ("code hash", record.code_hash or "-"),
        ("environment", f"{record.environment_key or '-'} (python {record.interpreter or '?'})"),
        ("lock file", record.environment_lock_path or "-"),
        ("registered", _when(record.created_at)),
    ]  # fmt: skip
    table = Table(title=f"model {record.name} v{record.version}", title_justify="left")
    table.add_column("")
    table.add_column("")
    for key, value in rows:
        table.add_row(key, value)
    for read in record.training_data:
        table.add_row("read", f"{_read_span(read)} ({read['step']})")
    console.print(table)
    if record.pins:
        console.print("pins: " + " ".join(record.pins))


@models_app.command("promote")
def models_promote(
    name: str = typer.Argument(..., help="Model name."),
    version: int = typer.Argument(..., help="Version to put in production."),
) -> None:
    """Put a version in production; the current production version is archived."""
    _need_db()
    from conveyor.db import registry

    record = registry.promote(settings(), name, version)
    console.print(f"{name} v{record.version} is now in production", style="green")


@models_app.command("rollback")
def models_rollback(name: str = typer.Argument(..., help="Model name.")) -> None:
    """Put the previous production version back in production."""
    _need_db()
    from conveyor.db import registry

    record = registry.rollback(settings(), name)
    console.print(f"{name} rolled back: v{record.version} is in production again", style="green")


# ----------------------------------------------------------------------------------- runs


@runs_app.command("list")
def runs_list(
    pipeline: str = typer.Option(None, "--pipeline", "-p", help="Only this pipeline."),
    status: str = typer.Option(None, help="Only runs with this status."),
    limit: int = typer.Option(20, help="How many runs (newest first)."),
) -> None:
    """Recent runs, newest first."""
    _need_db()
    from conveyor.db import lineage

    table = Table(title="runs", title_justify="left")
    table.add_column("run", no_wrap=True, min_width=22)
    for column in ("pipeline", "status", "partition", "started", "time", "ran on", "error"):
        table.add_column(column, justify="right" if column == "time" else "left")
    for run in lineage.list_runs(settings(), pipeline=pipeline, status=status, limit=limit):
        table.add_row(
            run.run_id,
            run.pipeline,
            _styled(run.status, STATUS_STYLE),
            _partition(run),
            _when(run.started_at),
            _seconds(run.duration),
            _ran_on(run),
            _short((run.error or "").splitlines()[0] if run.error else "", 50),
        )
    console.print(table)


def _ran_on(run: Any) -> str:
    """`worker vm-4242, pid 4301 on vm`: in a container, its hostname names the container."""
    where = f"pid {run.pid} on {run.hostname}"
    return f"worker {run.worker}, {where}" if run.worker else where


def _read_span(read: dict[str, Any]) -> str:
    """`features 1962-12-10 .. 1979-12-31 (asked from 1880-01-25)`: the rows' dates first."""
    span = f"{read['table']} {read['start'] or '…'} .. {read['end'] or '…'}"
    if read.get("asked_start") or read.get("asked_end"):
        span += f" (asked {read.get('asked_start') or '…'} .. {read.get('asked_end') or '…'})"
    return span


def _partition(run: Any) -> str:
    if run.partition_start is None:
        return ""
    if run.partition_start == run.partition_end:
        return str(run.partition_start)
    return f"{run.partition_start} .. {run.partition_end}"


def _show_tick(config: Any, run_id: str) -> None:
    """The schedule tick a run processed: when it was due and the data dates it stood for."""
    from conveyor.db.clocks import tick_of_run

    tick = tick_of_run(config, run_id)
    if tick is None:
        return
    first, last = tick.first_date, tick.last_date
    stands = str(last) if first == last else f"{first} .. {last}"
    when = f"{tick.scheduled_at:%Y-%m-%d %H:%M} UTC"
    if tick.kind == "replay":
        retry = f", repeating failed tick {tick.retry_of}" if tick.retry_of else ""
        console.print(f"scheduled by [{tick.clock}], replay tick {tick.tick}{retry}: "
                      f"{when} -> data date {stands}", soft_wrap=True)  # fmt: skip
    else:
        console.print(f"scheduled by [{tick.clock}], wall clock: {when} -> {stands}")


@runs_app.command("show")
def runs_show(
    run_id: str = typer.Argument(None, help="Run id or a unique prefix (default: the latest)."),
    head: int = typer.Option(3, "--head", help="Rows of each DataFrame output to print (0: none)."),
) -> None:
    """A run's lineage: steps, inputs and outputs (small values inline), the models it used or
    registered."""
    _need_db()
    from conveyor.cli.values import frame_head, metrics_text, summary
    from conveyor.db import lineage
    from conveyor.dsl.artifacts import ArtifactRef
    from conveyor.engine.store import ArtifactStore

    config = settings()
    if run_id is None:
        latest = lineage.list_runs(config, limit=1)
        if not latest:
            fail("no run is recorded yet; `conveyor run NAME` runs a pipeline")
        run_id = latest[0].run_id
    found = lineage.run_lineage(config, run_id)
    store = ArtifactStore(config.artifact_store, cache_dir=config.artifact_cache)
    run = found.run
    console.print(
        Text.assemble(
            (run.pipeline, "bold"),
            f" run {run.run_id}: ",
            _styled(run.status, STATUS_STYLE),
            f" in {_seconds(run.duration)}" if run.duration is not None else "",
        )
    )
    console.print(
        f"params {json.dumps(run.params)}; partition {_partition(run) or '-'}; started "
        f"{_when(run.started_at)} UTC on {run.hostname} (pid {run.pid}); {run.engine} engine, "
        f"{run.runner} runner"
    )
    _show_tick(config, run.run_id)
    if run.error:
        console.print(run.error, style="red", soft_wrap=True)
    table = Table(title="steps", title_justify="left")
    for column in ("step", "status", "why", "time", "inputs", "outputs"):
        table.add_column(column, justify="right" if column == "time" else "left")
    frames = []
    for step in found.steps:
        shown = []
        for name, recorded in step.outputs.items():
            ref = ArtifactRef.from_dict(recorded)
            shown.append(f"{name} {ref.sha256[:12]}: {summary(ref, store)}")
            if ref.codec.format == "parquet" and head > 0:
                frames.append((f"{step.step}.{name}" if name != "output" else step.step, ref))
        table.add_row(
            step.step,
            _styled(step.status, STATUS_STYLE),
            step.reason,
            _seconds(step.duration),
            "\n".join(f"{k}={_input(v)}" for k, v in step.inputs.items() if v is not None),
            "\n".join(shown),
        )
    console.print(table)
    for step in found.steps:
        if step.metrics:
            console.print(f"metrics of {step.step}: {metrics_text(step.metrics)}")
    for label, ref in frames:
        try:
            shape, rows = frame_head(store.local_path(ref), head)
        except (ConveyorError, OSError) as exc:
            console.print(f"{label}: cannot read it ({exc})", style="yellow")
            continue
        console.print(f"{label}: {shape}", soft_wrap=True)
        console.print(rows)
    for step in found.steps:
        if step.error and step.status in ("failed", "crashed"):
            first = step.error.strip().splitlines()[0]
            console.print(f"{step.step}: {first}", style="red", soft_wrap=True)
        if step.log_path and step.status in ("failed", "crashed"):
            console.print(f"  log: {step.log_path}")
    for use in found.models_loaded:
        model, trained = use.model, use.training_run
        asked = ", ".join(f"{k}={v}" for k, v in use.requested.items() if v is not None)
        console.print(
            Text.assemble(
                f"{use.step}: model ",
                (f"{model.name} v{model.version}", "bold"),
                f" ({asked}; now {model.stage}), artifact {model.artifact.sha256[:12]}",
            )
        )
        if trained is not None:
            console.print(
                f"  trained by run {trained.run_id} ({trained.pipeline}, partition "
                f"{_partition(trained) or '-'}, {trained.status}), step {model.producing_step}"
            )
        for read in model.training_data:
            console.print(f"  read {_read_span(read)}")
        console.print(f"  code {_code(model) or '-'}; environment {model.environment_key or '-'}")
    for model in found.models_registered:
        console.print(
            Text.assemble(
                "registered ", (f"{model.name} v{model.version}", "bold"), f" ({model.stage})"
            )
        )
