"""The demo's report as one self-contained HTML page: the scores, the predictions, the drift.

Three plots, drawn by matplotlib as SVG and written inline (no script, no file or network fetch
when the page is viewed): predicted vs actual log volume over the test years, test R² per model,
and the PSI of the predictions per date with the threshold and the dates it flagged. Everything
is read back from the database, like the printed report (flows/report.py).
"""

from __future__ import annotations

import html
import inspect
import io
from datetime import date
from pathlib import Path

from conveyor import Settings
from flows.report import FlowReport, _frame

PAGE = "demo-report.html"
PRODUCTION = "nyse-volume"
STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 1100px;
       padding: 0 1rem; color: #1f2328; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
.lead { color: #57606a; margin-top: 0; }
table { border-collapse: collapse; margin: .5rem 0; }
th, td { padding: .25rem .8rem; border-bottom: 1px solid #d0d7de; text-align: right; }
th:first-child, td:first-child { text-align: left; }
figure { margin: .5rem 0 1.5rem; } figure svg { width: 100%; height: auto; display: block; }
figcaption { color: #57606a; font-size: .9rem; }
code { background: #f6f8fa; padding: 0 .25rem; }
"""


def report_path(settings: Settings) -> Path:
    """Where the page goes: next to the database (the project's `.conveyor/` home)."""
    return settings.home / PAGE


def psi_threshold() -> float:
    """The PSI over which batch_prediction flags a date (its pipeline parameter's default)."""
    from flows.batch_prediction import batch_prediction

    return float(inspect.signature(batch_prediction.fn).parameters["psi_threshold"].default)


def _svg(figure) -> str:
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog and doctype: inline in HTML


def _dates(frame):
    import pandas as pd

    return pd.to_datetime(frame["date"])


def predicted_vs_actual(settings: Settings) -> str:
    """The served (production) predictions against the actual log volume, per test date."""
    import matplotlib.pyplot as plt

    predictions = _frame(settings, "predictions")
    actual = _frame(settings, "features")[["date", "log_volume"]]
    rows = predictions.merge(actual, on="date").sort_values("date")
    served = rows[~rows["shadow"]]
    figure, axes = plt.subplots(figsize=(11, 3.6))
    axes.plot(_dates(served), served["log_volume"], color="#8c959f", linewidth=0.7,
              label="actual")  # fmt: skip
    axes.plot(_dates(served), served["prediction"], color="#0969da", linewidth=0.9,
              label=f"predicted ({PRODUCTION}, production)")  # fmt: skip
    axes.set_ylabel("log volume (detrended)")
    axes.legend(loc="upper left", bbox_to_anchor=(0, -0.1), frameon=False, ncols=2)
    axes.grid(alpha=0.3)
    axes.margins(x=0.01)
    return _svg(figure)


def r2_per_model(report: FlowReport) -> str:
    """Test R² of every model, from the prediction rows; the production model is named too."""
    import matplotlib.pyplot as plt

    names = sorted(report.scores, key=lambda n: report.scores[n]["r2"])
    values = [report.scores[n]["r2"] for n in names]
    figure, axes = plt.subplots(figsize=(11, 0.5 + 0.55 * len(names)))
    colors = ["#0969da" if n == PRODUCTION else "#54aeff" for n in names]
    bars = axes.barh(names, values, color=colors)
    axes.bar_label(bars, labels=[f"{v:.4f}" for v in values], padding=4)
    axes.set_xlabel("R² on the test years")
    axes.set_xlim(0, max(1.0, max(values, default=0) * 1.15))
    axes.grid(axis="x", alpha=0.3)
    return _svg(figure)


def drift_timeline(settings: Settings, threshold: float) -> str:
    """PSI of the predictions per date (trailing window), the threshold and the flagged dates."""
    import matplotlib.pyplot as plt

    drift = _frame(settings, "drift").sort_values("date")
    dates = _dates(drift)
    flagged = drift["drift_flag"].astype(bool).to_numpy()
    figure, axes = plt.subplots(figsize=(11, 3.2))
    axes.plot(dates, drift["psi_max"], color="#d0d7de", linewidth=0.8,
              label="largest PSI of any input")  # fmt: skip
    axes.plot(dates, drift["psi_prediction"], color="#0969da", linewidth=1.0,
              label="PSI of the predictions")  # fmt: skip
    axes.axhline(threshold, color="#bf8700", linestyle="--", linewidth=1,
                 label=f"threshold {threshold:g}")  # fmt: skip
    axes.scatter(dates[flagged], drift["psi_prediction"][flagged], color="#cf222e", s=9,
                 zorder=3, label=f"flagged ({int(flagged.sum())} dates)")  # fmt: skip
    axes.set_ylabel("PSI")
    axes.set_yscale("log")  # PSI spans decades; its floor (EPSILON) keeps every value positive
    axes.legend(loc="upper left", bbox_to_anchor=(0, -0.12), frameon=False, ncols=4)
    axes.grid(alpha=0.3)
    axes.margins(x=0.01)
    return _svg(figure)


def flagged_spans(settings: Settings) -> list[tuple[date, date, int]]:
    """Consecutive flagged dates (in the drift table's own order) as (first, last, count)."""
    drift = _frame(settings, "drift").sort_values("date")
    spans: list[tuple[date, date, int]] = []
    run: list[date] = []
    for day, flag in zip(_dates(drift).dt.date, drift["drift_flag"].astype(bool), strict=True):
        if flag:
            run.append(day)
        elif run:
            spans.append((run[0], run[-1], len(run)))
            run = []
    if run:
        spans.append((run[0], run[-1], len(run)))
    return spans


def _scores_table(report: FlowReport) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{s['r2']:.4f}</td><td>{s['mae']:.4f}</td>"
        f"<td>{int(s['rows']):,}</td></tr>"
        for name, s in sorted(report.scores.items())
    )
    return f"<table><tr><th>model</th><th>R²</th><th>MAE</th><th>rows</th></tr>{rows}</table>"


def _spans_text(spans: list[tuple[date, date, int]]) -> str:
    if not spans:
        return "<p>No date was flagged.</p>"
    items = "".join(
        f"<li>{first}{'' if first == last else f' – {last}'} ({count} dates)</li>"
        for first, last, count in spans
    )
    return f"<ul>{items}</ul>"


def write_html_report(settings: Settings, report: FlowReport, path: Path | None = None) -> Path:
    """Write the page (default: next to the database) and return its path."""
    import matplotlib

    matplotlib.use("Agg")  # no display: render to files only
    import matplotlib.pyplot as plt

    # text stays text in the SVG (smaller, searchable); the viewer's sans-serif draws it
    plt.rcParams.update({"svg.fonttype": "none", "font.size": 10, "axes.spines.top": False,
                         "axes.spines.right": False})  # fmt: skip
    threshold = psi_threshold()
    spans = flagged_spans(settings)
    promoted = report.promoted
    model = (
        f"{html.escape(str(promoted['name']))} v{promoted['version']} "
        f"({html.escape(str(promoted['kind']))})"
        if promoted
        else "none"
    )
    drift_rows = report.rows.get("drift", 0)
    body = f"""<h1>NYSE volume: the reference flows, from the database</h1>
<p class="lead">Production model {model}; {report.production_rows:,} served and
{report.shadow_rows:,} shadow predictions; {report.drifted_dates} of {drift_rows:,} dates flagged
for drift.</p>
<h2>Predicted vs actual over the test years</h2>
<figure id="predicted-vs-actual">{predicted_vs_actual(settings)}
<figcaption>The production model's prediction for each trading day against the actual
log volume.</figcaption></figure>
<h2>R² per model on the test years</h2>
<figure id="r2-per-model">{r2_per_model(report)}
<figcaption>Computed from the prediction rows; shadow models are scored on the same dates.
</figcaption></figure>
{_scores_table(report)}
<h2>Drift: PSI over a trailing window</h2>
<figure id="psi-timeline">{drift_timeline(settings, threshold)}
<figcaption>Population stability index of the predictions against the profile registered with the
production model; a date is flagged when it passes {threshold:g}.</figcaption></figure>
<h3>Flagged dates</h3>
{_spans_text(spans)}
"""
    page = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>conveyor demo report</title><style>{STYLE}</style></head>"
        f"<body>\n{body}</body></html>\n"
    )
    target = path or report_path(settings)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    partial.write_text(page, encoding="utf-8")
    partial.replace(target)  # a reader never sees half a page
    return target


def summary_markdown(report: FlowReport) -> str:
    """The scores as a markdown table, for the Prefect artifact that links the page."""
    lines = ["| model | R² | MAE | rows |", "|---|---:|---:|---:|"]
    for name, score in sorted(report.scores.items()):
        lines.append(f"| {name} | {score['r2']:.4f} | {score['mae']:.4f} | {int(score['rows'])} |")
    lines.append("")
    lines.append(f"Drift: {report.drifted_dates} of {report.rows.get('drift', 0)} dates flagged.")
    return "\n".join(lines)
