"""`conveyor replay status | reset`: where the replay clocks of deployments/*.toml stand."""

from __future__ import annotations

import typer
from rich.table import Table

from conveyor.cli import app
from conveyor.cli.common import console, fail, settings

replay_app = typer.Typer(
    help="Replay clocks: schedules that play the data's own history back, tick by tick.",
    no_args_is_help=True,
)
app.add_typer(replay_app, name="replay")


@replay_app.command("status")
def status() -> None:
    """Where each replay clock stands: its last date, ticks so far, and its next date."""
    from conveyor.ops.clock import views
    from conveyor.ops.schedules import load_entries

    config = settings()
    shown = views(config, load_entries(config))
    if not shown:
        fail('no deployment entry has clock = "replay" (deployments/*.toml)')
    table = Table(title="replay clocks", title_justify="left")
    for column in ("entry", "pipeline", "replays", "pace", "stands at", "ticks", "next",
                   "updated (UTC)"):  # fmt: skip
        table.add_column(column, justify="right" if column in ("pace", "ticks") else "left")
    for view in shown:
        entry = view.entry
        counts = ", ".join(f"{n} {s}" for s, n in sorted(view.counts.items()))
        coming = "the replay is over"
        if view.next is not None:
            first, last = view.next.first, view.next.last
            coming = str(first) if first == last else f"{first} .. {last}"
        table.add_row(
            entry.name,
            entry.pipeline,
            f"{entry.replay_start} .. {entry.replay_end or ''}",
            str(entry.replay_pace),
            str(view.position) if view.position else "not started",
            f"{view.ticks}" + (f" ({counts})" if counts else ""),
            coming,
            f"{view.updated_at:%Y-%m-%d %H:%M:%S}" if view.updated_at else "",
        )
    console.print(table)


@replay_app.command("reset")
def reset(
    name: str = typer.Argument(None, help="Deployment entry (default: every replay clock)."),
    to: str = typer.Option(None, "--to", help="Start at this date (YYYY-MM-DD) instead."),
) -> None:
    """Start replay clocks over: the next tick stands for replay_start (or --to) again."""
    from datetime import date

    from conveyor.ops.clock import reset as reset_clock
    from conveyor.ops.discovery import resolve_pipeline
    from conveyor.ops.schedules import find_entry, load_entries

    config = settings()
    entries = [find_entry(config, name)] if name else load_entries(config)
    replays = [e for e in entries if e.clock == "replay"]
    if not replays:
        fail(f'{"[" + name + "] has" if name else "no entry has"} no clock = "replay"; '
             f"nothing to reset")  # fmt: skip
    day = None
    if to is not None:
        try:
            day = date.fromisoformat(to)
        except ValueError:
            fail(f"--to {to!r} is not a date; write it as YYYY-MM-DD")
    for entry in replays:
        pipeline = resolve_pipeline(entry.pipeline, config)
        first = reset_clock(config, entry, pipeline, day)
        console.print(f"{entry.name}: the next tick stands for {first}")
