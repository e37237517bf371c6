"""`conveyor backfill | serve | deploy | ui`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import TYPE_CHECKING, Any, TypedDict

import typer
from rich.text import Text

from conveyor.cli import app
from conveyor.cli.common import RUNNER_HELP, console, fail, parse_params, settings

if TYPE_CHECKING:  # the CLI imports the backfill machinery only when the command runs
    from conveyor.engine.settings import Settings
    from conveyor.ops.backfill import BackfillResult, BatchOutcome
    from conveyor.ops.pool_backfill import PoolProgress


def _date(value: str, flag: str) -> date:
    import re

    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):  # the shape is right, the date is not
            fail(f"{flag} {value!r} is not a date of the calendar: {exc}")
        fail(f"{flag} {value!r} is not a date; write it as YYYY-MM-DD")


class _BackfillOptions(TypedDict):
    """The options both calls of conveyor.backfill (the dry run and the run) share."""

    concurrency: int
    reprocess: str
    batch: int | None
    reverse: bool
    params: dict[str, Any]
    engine: str
    runner: str | None
    cache: bool
    force_steps: Sequence[str]
    max_parallel: int | None
    settings: Settings


@app.command()
def backfill(
    name: str = typer.Argument(..., help="Pipeline name or PATH.py:ATTRIBUTE."),
    start: str = typer.Option(..., "--start", help="First partition date (YYYY-MM-DD)."),
    end: str = typer.Option(..., "--end", help="Last partition date (YYYY-MM-DD)."),
    concurrency: int = typer.Option(1, "--concurrency", help="Runs at once."),
    reprocess: str = typer.Option(
        "missing", "--reprocess", help="missing (not yet succeeded), failed, or all."
    ),
    batch: int = typer.Option(None, "--batch", help="Dates per run (ranged pipelines)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the partitions; run nothing."),
    reverse: bool = typer.Option(False, "--reverse", help="Newest partitions first."),
    param: list[str] = typer.Option(None, "--param", "-p", help="Other parameters NAME=VALUE."),
    engine: str = typer.Option("auto", help="local, prefect, or auto."),
    runner: str | None = typer.Option(None, help=RUNNER_HELP),
    no_cache: bool = typer.Option(False, "--no-cache"),
    force_step: list[str] = typer.Option(None, "--force-step"),
    max_parallel: int = typer.Option(None, "--max-parallel", help="Steps at once per run."),
    pool: str = typer.Option(
        None, "--pool", help="Run the batches as flow runs on this Prefect work pool's workers."
    ),
    max_active: int = typer.Option(
        None, "--max-active", help="With --pool: flow runs submitted at once."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Run what has not succeeded yet (the default, --reprocess missing)."
    ),
) -> None:
    """Run a pipeline over a date range; skips succeeded partitions; resumable.

    With --pool the batches run on the workers of a Prefect work pool (`conveyor worker start
    --pool P`, any number, anywhere), with the same selection, summary and exit code."""
    from conveyor.ops.backfill import backfill as run_backfill

    first, last = _date(start, "--start"), _date(end, "--end")
    if resume and reprocess != "missing":
        fail(f"--resume runs what has not succeeded; it cannot go with --reprocess {reprocess}")
    if pool is not None:
        _pool_backfill(name, first, last, pool, max_active, dry_run, reprocess=reprocess,
                       batch=batch, reverse=reverse, params=parse_params(param), runner=runner,
                       cache=not no_cache, force_steps=force_step or (),
                       max_parallel=max_parallel)  # fmt: skip
        return
    if max_active is not None:
        fail("--max-active bounds flow runs on a work pool; give --pool POOL (or --concurrency)")
    options = _BackfillOptions(
        concurrency=concurrency, reprocess=reprocess, batch=batch, reverse=reverse,
        params=parse_params(param), engine=engine, runner=runner, cache=not no_cache,
        force_steps=force_step or (), max_parallel=max_parallel, settings=settings(),
    )  # fmt: skip
    selection = run_backfill(name, first, last, dry_run=True, **options)
    if dry_run:
        _print_dry_run(selection, "runs", "run")
        return
    with _BackfillProgress(f"backfill {name}", len(selection.selected), eta=True) as shown:
        result = run_backfill(name, first, last, on_progress=shown.finished, **options)
    _end(result)


def _pool_backfill(
    name: str, first: date, last: date, pool: str, max_active: int | None, dry_run: bool,
    **options: Any,
) -> None:  # fmt: skip
    from conveyor.ops.pool_backfill import backfill_on_pool

    config = settings()
    selection = backfill_on_pool(name, first, last, pool=pool, dry_run=True, settings=config,
                                 **options)  # fmt: skip
    if dry_run:
        _print_dry_run(selection, f"flow runs on pool {pool}", "submit")
        return
    with _BackfillProgress(f"backfill {name} on {pool}", len(selection.selected)) as shown:
        result = backfill_on_pool(
            name, first, last, pool=pool, max_active=max_active, settings=config,
            on_progress=shown.finished, on_status=shown.pool_status, **options,
        )  # fmt: skip
    _end(result)


def _print_dry_run(result: BackfillResult, runs: str, verb: str) -> None:
    console.print(
        f"dry run: {len(result.selected)} partitions to run in {len(result.batches)} {runs}, "
        f"{len(result.skipped)} already succeeded (skipped)"
    )
    for one in result.batches:
        console.print(f"  would {verb} {one.label()} ({len(one.dates)} partitions)")


class _BackfillProgress:
    """The live line of a backfill: partitions done of the total, ok and failed, and on a pool
    what each worker is doing; none when the output is not a terminal (rich decides)."""

    def __init__(self, title: str, total: int, *, eta: bool = False) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            ProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        # TextColumn reads its text as markup unless told not to; the title holds NAME
        columns: list[ProgressColumn] = [
            TextColumn("{task.description}", style="bold", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("partitions · {task.fields[counts]}", markup=False),
            TimeElapsedColumn(),
        ]
        if eta:
            columns += [TextColumn("ETA", markup=False), TimeRemainingColumn()]
        self.progress = Progress(*columns, console=console)
        self.task = self.progress.add_task(title, total=total, counts="")
        self.counts = {"succeeded": 0, "failed": 0}

    def __enter__(self) -> _BackfillProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(None, None, None)

    def _text(self) -> str:
        return f"{self.counts['succeeded']} ok, {self.counts['failed']} failed"

    def finished(self, outcome: BatchOutcome) -> None:
        """A batch ended: advance by its partitions."""
        self.counts[outcome.status] += len(outcome.batch.dates)
        self.progress.update(self.task, advance=len(outcome.batch.dates), counts=self._text())

    def pool_status(self, state: PoolProgress) -> None:
        """A poll of the pool: what each worker is doing."""
        line = state.line() or "submitting"
        self.progress.update(self.task, counts=f"{self._text()} · {line}")


def _end(result: BackfillResult) -> None:
    console.print(result.summary())
    if not result.ok:
        raise typer.Exit(130 if result.interrupted else 1)


@app.command()
def serve(
    limit: int = typer.Option(None, "--limit", help="Flow runs at once."),
) -> None:
    """Serve the schedules in deployments/*.toml with Prefect (they run on time; see the UI).

    Reports to PREFECT_API_URL (or [tool.conveyor] prefect_api), else to conveyor's managed
    server (`conveyor ui`), started if needed; never to a private temporary one. SIGTERM stops
    it within seconds, releasing its in-flight runs.
    """
    from conveyor.backends.prefect_flow import api_settings, configure
    from conveyor.backends.prefect_server import connect
    from conveyor.ops.schedules import load_entries
    from conveyor.ops.schedules import serve as serve_entries

    config = settings()
    configure(config)
    entries = load_entries(config)  # a bad entry fails here, before any server starts
    url, started = connect(config)
    console.print(("started conveyor's Prefect server; " if started else "") + f"Prefect API {url}")
    for entry in entries:
        schedule = f"on '{entry.cron}' ({entry.timezone}, offset {entry.partition_offset})"
        if entry.clock == "replay":
            schedule += f", replaying from {entry.replay_start}, {entry.replay_pace} per tick"
        console.print(
            Text.assemble("serving ", (entry.name, "bold"), f": {entry.pipeline} {schedule}")
        )
    with api_settings(config):  # a server started just now, for the Prefect imported above
        serve_entries(config, limit=limit)


@app.command()
def deploy(
    work_pool: str = typer.Option(
        None,
        "--pool",
        "--work-pool",
        help="Prefect work pool whose workers run them (not needed with --check).",
    ),
    check: bool = typer.Option(
        False, "--check", help="Validate deployments/*.toml and print each entry's next 3 runs."
    ),
) -> None:
    """Register the schedules in deployments/*.toml for Prefect workers of a work pool."""
    config = settings()
    if check:
        _check_deployments(config)
        return
    if work_pool is None:
        fail("give --pool POOL (or --work-pool POOL) to register, or --check to validate")
    from conveyor.backends.prefect_flow import configure
    from conveyor.backends.prefect_server import connect
    from conveyor.ops.schedules import deploy as deploy_entries

    url, _ = connect(config)
    configure(config)
    for deployment_id in deploy_entries(config, work_pool):
        console.print(f"registered deployment {deployment_id} on pool {work_pool} ({url})")
    console.print(f"workers run them: conveyor worker start --pool {work_pool}")


def _check_deployments(config: Settings) -> None:
    from conveyor.ops.schedule_check import check_entries

    checks = check_entries(config)
    if not checks:
        fail(f"no deployment entries in {config.project_root / 'deployments'}/*.toml")
    for check in checks:
        entry = check.entry
        console.print(
            Text.assemble(
                ("ok ", "green"), (entry.name, "bold"),
                f" ({entry.file}): {entry.pipeline} on '{entry.cron}' ({entry.timezone})",
            ),
            soft_wrap=True,
        )  # fmt: skip
        if entry.clock == "replay":
            end = f" to {entry.replay_end}" if entry.replay_end else ""
            console.print(
                f"    replay clock: from {entry.replay_start}{end}, {entry.replay_pace} "
                f"date(s) of the calendar per tick"
            )
            if len(check.fires) < 3:
                console.print(f"    the replay ends after {len(check.fires)} more tick(s)")
        for fire in check.fires:
            partition = ""
            if fire.partition:
                shown = f"{fire.first} .. {fire.partition}" if fire.first else fire.partition
                partition = f"  -> partition {shown}"
            if fire.stands_for:
                first, last = fire.stands_for
                partition = f"  -> data {first if first == last else f'{first} .. {last}'}" + (
                    partition.replace("  -> ", ", ")
                )
            console.print(f"    next {fire.at:%Y-%m-%d %H:%M %Z} ({fire.at:%a}){partition}")
    console.print(f"{len(checks)} deployment entries valid")


@app.command()
def ui(
    port: int = typer.Option(4200, help="Port of the managed Prefect server."),
    stop: bool = typer.Option(False, "--stop", help="Stop the managed server."),
) -> None:
    """Start (or show) conveyor's managed Prefect server; its UI is conveyor's web UI."""
    from conveyor.backends.prefect_server import start_server, stop_server

    config = settings()
    if stop:
        console.print("stopped" if stop_server(config) else "no managed server was running")
        return
    server = start_server(config, port=port)
    console.print(f"Prefect UI: {server['ui']}   (API {server['url']}, pid {server['pid']})")
    console.print("runs and backfills started from this project now report here; "
                  "`conveyor ui --stop` stops it")  # fmt: skip


worker_app = typer.Typer(help="Prefect workers: run the flow runs of a pool.", no_args_is_help=True)
app.add_typer(worker_app, name="worker")


@worker_app.command("start")
def worker_start(
    pool: str = typer.Option(..., "--pool", help="Work pool to take flow runs from."),
    limit: int = typer.Option(None, "--limit", help="Flow runs at once (default: no limit)."),
    name: str = typer.Option(None, "--name", help="Worker name (default: HOST-PID)."),
) -> None:
    """Run flow runs of a work pool (deployments from `conveyor deploy --pool` and
    `conveyor backfill --pool`) until stopped; SIGTERM stops it within seconds, releasing its
    in-flight runs to the other workers. Start any number, on any machine that reaches the
    Prefect API, the database and the artifact store."""
    from conveyor.backends.prefect_flow import configure
    from conveyor.backends.prefect_pool import run_worker, worker_name
    from conveyor.backends.prefect_server import connect

    config = settings()
    url, _ = connect(config)
    configure(config)
    name = name or worker_name()
    console.print(f"worker {name} on pool {pool} (API {url}, project {config.project_root})")
    in_project = (config.project_root / "pyproject.toml").is_file()
    run_worker(
        pool, name=name, limit=limit,
        env={"CONVEYOR_PROJECT_ROOT": str(config.project_root)} if in_project else {},
        on_start=lambda message: console.print(message),
    )  # fmt: skip
