"""`conveyor demo`: the three reference flows end to end on the NYSE data.

1. the features backfill over the whole history (1962-12-03..1986-12-31), ranged runs;
2. training on every date up to 1979-12-31, with the promotion gate;
3. the batch-prediction backfill for 1980-01-02..1986-12-31 (production and shadow models);
then a report computed from the database. A second run is served by the partition status and
the step cache: it finishes in seconds.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from datetime import date

import conveyor
from conveyor import Settings

HISTORY = (date(1962, 12, 3), date(1986, 12, 31))
TRAINED_UNTIL = date(1979, 12, 31)
PREDICTED = (date(1980, 1, 2), date(1986, 12, 31))


def run_reference_flows(
    settings: Settings,
    runner: str = "venv",
    engine: str = "auto",
    history: tuple[date, date] = HISTORY,
    predicted: tuple[date, date] = PREDICTED,
    on_progress=None,
) -> dict:
    """Backfill features, train, backfill predictions; returns what each stage did."""
    done = {}
    progress = on_progress or (lambda stage, outcome=None: None)
    progress("features", None)
    done["features"] = conveyor.backfill(
        "features", *history, batch=1500, runner=runner, engine=engine, settings=settings,
        on_progress=lambda outcome: progress("features", outcome),
    )  # fmt: skip
    if not done["features"].ok:
        raise SystemExit(done["features"].summary())
    progress("training", None)
    done["training"] = conveyor.run(
        "training", {"as_of": TRAINED_UNTIL}, runner=runner, engine=engine, settings=settings,
        raise_on_failure=True,
    )  # fmt: skip
    progress("training", done["training"])
    progress("batch_prediction", None)
    done["batch_prediction"] = conveyor.backfill(
        "batch_prediction", *predicted, batch=500, runner=runner, engine=engine,
        settings=settings, on_progress=lambda outcome: progress("batch_prediction", outcome),
    )  # fmt: skip
    if not done["batch_prediction"].ok:
        raise SystemExit(done["batch_prediction"].summary())
    return done


def describe_work(done: dict) -> str:
    """What a demo run did and what it found done already (a second run: nearly everything)."""
    features, training, predictions = (done[k] for k in ("features", "training",
                                                          "batch_prediction"))  # fmt: skip
    return (
        f"features: {len(features.selected)} partitions run, {len(features.skipped)} already "
        f"done; {training.summary()}; predictions: {len(predictions.selected)} partitions run, "
        f"{len(predictions.skipped)} already done"
    )


def demo(settings: Settings, runner: str = "venv") -> int:
    """Run the reference flows with a progress bar, then print the report."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from components.nyse import trading_days
    from flows.report import build_report
    from flows.report_html import summary_markdown, write_html_report

    # the report prints model names and table cells verbatim: no markup, no emoji codes
    console = Console(markup=False, emoji=False)
    began = time.perf_counter()
    # the progress bars tell the story; per-step log lines would scroll them away
    for name in ("conveyor", "prefect"):
        logging.getLogger(name).setLevel(logging.WARNING)
    totals = {
        "features": len(trading_days(*HISTORY)),
        "training": 1,
        "batch_prediction": len(trading_days(*PREDICTED)),
    }
    columns = (TextColumn("{task.description:<18}", markup=False), BarColumn(),
               MofNCompleteColumn(), TextColumn("partitions", markup=False),
               TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=console) as bar:
        tasks = {
            name: bar.add_task(name, total=total, start=False) for name, total in totals.items()
        }

        def on_progress(stage, outcome=None):
            bar.start_task(tasks[stage])
            if stage == "training" and outcome is not None:
                bar.update(tasks[stage], completed=1)
            elif outcome is not None:
                bar.update(tasks[stage], advance=len(outcome.batch.dates))

        done = run_reference_flows(settings, runner=runner, on_progress=on_progress)
        for stage in ("features", "batch_prediction"):
            skipped = len(done[stage].skipped)
            bar.update(tasks[stage], advance=skipped)
    report = build_report(settings)
    elapsed = time.perf_counter() - began

    table = Table(title="rows written", title_justify="left")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, count in report.rows.items():
        table.add_row(name, f"{count:,}")
    table.add_row("  predictions, production", f"{report.production_rows:,}")
    table.add_row("  predictions, shadow", f"{report.shadow_rows:,}")
    console.print(table)
    scores = Table(title="test set 1980-01-02..1986-12-31, from the database", title_justify="left")
    for column in ("model", "R²", "MAE", "rows"):
        scores.add_column(column, justify="left" if column == "model" else "right")
    for name, score in report.scores.items():
        scores.add_row(name, f"{score['r2']:.4f}", f"{score['mae']:.4f}", str(score["rows"]))
    console.print(scores)
    if report.promoted:
        console.print(f"promoted: {report.promoted['name']} v{report.promoted['version']} "
                      f"({report.promoted['kind']}; validation R² "
                      f"{report.promoted['metrics'].get('r2', float('nan')):.4f})")  # fmt: skip
    console.print(f"drift: {report.drifted_dates} of {report.rows['drift']} dates flagged")
    training = done["training"]
    if importlib.util.find_spec("matplotlib") is None:
        console.print("no report page: its plots need matplotlib (pip install 'conveyor[report]')")
    else:
        page = write_html_report(settings, report)
        console.print(f"report with plots: {page}")
        # through Prefect (`conveyor ui` up), the training flow run links the page
        summary = summary_markdown(report)
        if conveyor.publish_report(
            page, training, title="NYSE demo report", markdown=summary, settings=settings
        ):
            console.print(f"  linked from the training flow run {training.flow_run_id} in the UI")
    console.print(f"this run: {describe_work(done)}")
    console.print(
        f"\nfinished in {elapsed:.0f} s. Next: open the report, `conveyor runs show "
        f"{training.run_id}` for the training lineage, `conveyor models show nyse-volume`, and "
        f"`conveyor ui` for the web UI."
    )
    return 0
