"""The three reference flows on the NYSE data, end to end, checked from the database.

The full range runs once (SQLite, venv runner: what `conveyor demo` does); PostgreSQL and the
docker runner run a short prediction range and must write the same rows.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pytest

import conveyor
from conveyor.engine.settings import Settings
from tests.conftest import need

pytestmark = [pytest.mark.venv, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SHORT = (date(1980, 1, 2), date(1980, 1, 31))


def _settings(home: Path, **env: str) -> Iterator[Settings]:
    saved = {k: os.environ.get(k) for k in ("CONVEYOR_HOME", "CONVEYOR_DATABASE_URL", *env)}
    os.environ["CONVEYOR_HOME"] = str(home)
    os.environ.pop("CONVEYOR_DATABASE_URL", None)
    os.environ.update(env)
    try:
        yield Settings.load(ROOT)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        database = __import__("sys").modules.get("conveyor.db.database")
        if database is not None:
            database.dispose_shared()


def _run_flows(settings: Settings, runner: str, predicted: tuple[date, date]) -> dict:
    need(importlib.util.find_spec("sqlalchemy") is not None, "conveyor[db] is not installed")
    from flows.demo import HISTORY, run_reference_flows

    return run_reference_flows(settings, runner=runner, engine="local", history=HISTORY,
                               predicted=predicted)  # fmt: skip


def _table(settings: Settings, table: str, start: date | None = None, end: date | None = None):
    from flows.report import _frame

    frame = _frame(settings, table)
    if start is not None:
        dates = pd.to_datetime(frame["date"])
        frame = frame[(dates >= pd.Timestamp(start)) & (dates <= pd.Timestamp(end))]
    return frame.sort_values([c for c in ("date", "model_name") if c in frame]).reset_index(
        drop=True
    )


@pytest.fixture(scope="module")
def full(tmp_path_factory) -> Iterator[tuple[Settings, dict]]:
    """The demo's three stages over the whole data: SQLite, venv runner, the committed locks."""
    home = tmp_path_factory.mktemp("reference-sqlite")
    shutil.copytree(ROOT / ".conveyor" / "locks", home / "locks")
    for settings in _settings(home):
        yield settings, _run_flows(settings, "venv", (date(1980, 1, 2), date(1986, 12, 31)))


def test_the_demo_needs_no_lock_beyond_the_committed_ones(full):
    """A fresh clone's `conveyor demo` leaves its working tree clean: every environment the
    three flows use, the model-pinned ones of batch prediction included, is locked in git."""
    settings, _ = full
    committed = {p.name for p in (ROOT / ".conveyor" / "locks").glob("*.txt")}
    assert {p.name for p in settings.lock_dir.glob("*.txt")} == committed


def test_features_have_every_lag_point_in_time(full):
    settings, _ = full
    features = _table(settings, "features")
    assert len(features) == 6046
    source = pd.read_csv(ROOT / "flows/data/NYSE.csv", parse_dates=["date"])
    position = {d: i for i, d in enumerate(source["date"])}
    rows = features["date"].map(lambda d: position[pd.Timestamp(d)]).to_numpy()
    assert rows.min() == 5  # the first five trading days have no full look-back
    for series in ("DJ_return", "log_volume", "log_volatility"):
        values = source[series].to_numpy()
        for lag in range(1, 6):
            assert (features[f"{series}_lag{lag}"].to_numpy() == values[rows - lag]).all(), (
                f"{series}_lag{lag}"
            )
    assert (features["log_volume"].to_numpy() == source["log_volume"].to_numpy()[rows]).all()


def test_predictions_reproduce_the_published_scores(full):
    from flows.report import model_scores

    settings, _ = full
    predictions = _table(settings, "predictions")
    served = predictions[~predictions["shadow"]]
    assert len(served) == 1770
    assert not served.duplicated(["date", "model_name", "model_version"]).any()
    assert served["model_name"].unique().tolist() == ["nyse-volume"]
    shadow = predictions[predictions["shadow"]]
    assert sorted(shadow["model_name"].unique()) == [
        "nyse-volume-linear", "nyse-volume-linear_dow", "nyse-volume-xgboost",
    ]  # fmt: skip
    assert len(shadow) == 3 * 1770
    scores = model_scores(settings)
    assert scores["nyse-volume-linear"]["r2"] == pytest.approx(0.4129, abs=5e-4)
    assert scores["nyse-volume-linear_dow"]["r2"] == pytest.approx(0.4596, abs=5e-4)
    assert scores["nyse-volume-xgboost"]["r2"] >= 0.44
    assert all(score["rows"] == 1770 for score in scores.values())


def test_the_gate_promoted_the_best_validation_candidate(full):
    from conveyor.db import registry

    settings, done = full
    record = registry.resolve(settings, "nyse-volume", stage="production", as_of=date(1980, 1, 2))
    assert record.params["kind"] == "xgboost"  # best on the 1978-79 validation window
    assert record.environment_lock and "xgboost-cpu" in record.environment_lock
    assert "scikit-learn" not in record.environment_lock
    gate = done["training"].output
    assert gate["promoted"] == "xgboost"


def test_xgboost_lives_only_in_its_own_environment(full):
    settings, done = full
    training = done["training"].steps
    feature_run = done["features"].outcomes[0].run.steps

    def imports_xgboost(step) -> bool:
        python = settings.env_dir / step.environment / "bin" / "python"
        assert python.exists(), python
        proc = subprocess.run([str(python), "-c", "import xgboost"], capture_output=True,
                              check=False)  # fmt: skip
        return proc.returncode == 0

    assert imports_xgboost(training["train_xgboost"])
    assert not imports_xgboost(feature_run["build_features"])
    assert not imports_xgboost(training["train_linear"])


def test_drift_is_flagged_in_the_database(full):
    settings, done = full
    drift = _table(settings, "drift")
    assert len(drift) == 1770
    assert str(drift["drift_flag"].dtype) in ("bool", "boolean")
    flagged = int(drift["drift_flag"].sum())
    summaries = [o.run.output for o in done["batch_prediction"].outcomes]
    assert sum(s["drifted_dates"] for s in summaries) == flagged


PROBE = """<script>
document.body.insertAdjacentHTML("beforeend", "<pre id='probe'>" + JSON.stringify(
  [...document.querySelectorAll("figure")].map(f => {
    const svg = f.querySelector("svg"), box = svg ? svg.getBoundingClientRect() : {};
    return {id: f.id, width: box.width || 0, height: box.height || 0,
            marks: svg ? svg.querySelectorAll("path, use").length : 0};
  })) + "</pre>");
</script>"""


def test_the_html_report_renders_its_three_plots(full, tmp_path):
    import json
    import re

    from PIL import Image

    from flows.report import build_report
    from flows.report_html import write_html_report
    from tests.integration.browser_support import chromium

    settings, _ = full
    page = write_html_report(settings, build_report(settings))
    assert page.parent == settings.home and (settings.home / "conveyor.db").is_file()
    text = page.read_text()
    # self-contained: nothing is fetched when the page is viewed
    assert not re.search(r"<script|<link|<img|@import|url\((?!#)|(?:href|src)=\"(?!#)", text)
    for heading in ("Predicted vs actual", "R² per model", "Drift: PSI"):
        assert heading in text
    probe = tmp_path / "probe.html"  # the page plus a script that measures the drawn plots
    probe.write_text(text.replace("</body>", PROBE + "</body>"))
    profile = f"--user-data-dir={tmp_path / 'chromium-profile'}"
    dom = chromium(profile, "--dump-dom", probe.as_uri()).stdout
    found = re.search(r"<pre id=\"probe\">(.*?)</pre>", dom, re.S)
    assert found, dom[-2000:]
    figures = {f["id"]: f for f in json.loads(found.group(1))}
    assert set(figures) == {"predicted-vs-actual", "r2-per-model", "psi-timeline"}
    for figure in figures.values():
        assert figure["width"] > 500 and figure["height"] > 100, figure
        assert figure["marks"] > 5, figure  # axes, lines, bars, markers were drawn
    shot = ROOT / "docs" / "demo-report.png"
    chromium(profile, f"--screenshot={shot}", page.as_uri(), size="1200,1900")
    image = Image.open(shot).convert("RGB").resize((300, 600))
    colours = image.getcolors(maxcolors=300 * 600) or []
    inked = sum(count for count, rgb in colours if sum(rgb) < 600)
    assert len(colours) > 50 and inked > 0.02 * 300 * 600, (len(colours), inked)


def test_a_scheduled_date_writes_exactly_the_backfilled_row(full):
    from conveyor.ops.discovery import resolve_pipeline
    from conveyor.ops.schedules import find_entry, resolve_scheduled_params

    settings, _ = full
    entry = find_entry(settings, "batch-prediction-daily")
    pipeline = resolve_pipeline("batch_prediction", settings)
    # 1983-06-15 (a Wednesday) at 19:00 in New York
    scheduled = datetime(1983, 6, 15, 23, 0, tzinfo=UTC)
    params = resolve_scheduled_params(entry, pipeline, settings, {}, scheduled)
    assert (params["start"], params["end"]) == (date(1983, 6, 15), date(1983, 6, 15))
    day = params["start"]
    before = _table(settings, "predictions", day, day)
    assert len(before) == 4
    result = conveyor.run("batch_prediction", params, runner="venv", engine="local",
                          settings=settings)  # fmt: skip
    assert result.ok, result.error
    after = _table(settings, "predictions", day, day)
    pd.testing.assert_frame_equal(before, after)
    assert len(_table(settings, "predictions")) == 4 * 1770


def test_a_second_run_is_served_by_partition_status_and_the_cache(full):
    settings, _ = full
    again = _run_flows(settings, "venv", (date(1980, 1, 2), date(1986, 12, 31)))
    assert again["features"].batches == [] and len(again["features"].skipped) == 6051
    assert again["batch_prediction"].batches == []
    ran = [n for n, s in again["training"].steps.items()
           if s.status == "succeeded" and s.kind == "component"]  # fmt: skip
    # only the production model's score on the holdout is new: it is now the promoted model
    assert set(ran) <= {"validate_production", "score_production"}
    from flows.demo import describe_work

    said = describe_work(again)  # what `conveyor demo` prints about a second run
    assert said.startswith("features: 0 partitions run, 6051 already done; training succeeded")
    cached = sum(s.status == "cached" for s in again["training"].steps.values())
    assert f", {cached} cached, " in said and said.endswith("predictions: 0 partitions run, "
                                                            "1770 already done")  # fmt: skip


def test_a_bad_source_fails_naming_the_value_and_writes_nothing(full, tmp_path):
    # after the re-run test: the failed run marks its partitions failed
    settings, _ = full
    lines = (ROOT / "flows/data/NYSE.csv").read_text().splitlines()
    bad = [line.replace("-0.020766", "abc", 1) if line.startswith('"1970-01-05"') else line
           for line in lines]  # fmt: skip
    assert bad != lines
    source = tmp_path / "NYSE_bad.csv"
    source.write_text("\n".join(bad) + "\n")
    raw_before = _table(settings, "raw_nyse")
    result = conveyor.run("features", {"start": "1970-01-02", "end": "1970-01-09",
                                       "source": str(source)},
                          runner="venv", engine="local", settings=settings)  # fmt: skip
    assert result.status == "failed"
    assert result.steps["validate"].status == "failed"
    assert result.steps["write_table"].status == "skipped"
    assert "NYSE_bad.csv: column 'log_volume', date 1970-01-05: value 'abc'" in result.error
    pd.testing.assert_frame_equal(raw_before, _table(settings, "raw_nyse"))


def _short_rows(settings: Settings) -> dict[str, pd.DataFrame]:
    return {
        "features": _table(settings, "features", *SHORT),
        "predictions": _table(settings, "predictions", *SHORT),
    }


@pytest.mark.postgres
def test_postgres_writes_the_same_rows_as_sqlite(full, tmp_path):
    from tests.db_support import pg_admin, postgres_problem, schema_url

    problem = postgres_problem()
    need(problem is None, problem or "")
    sqlite_settings, _ = full
    expected = _short_rows(sqlite_settings)
    schema = f"reference_{os.getpid()}"
    pg_admin(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE; CREATE SCHEMA "{schema}"')
    try:
        for settings in _settings(tmp_path / "pg", CONVEYOR_DATABASE_URL=schema_url(schema)):
            _run_flows(settings, "venv", SHORT)
            got = _short_rows(settings)
        for table in expected:
            pd.testing.assert_frame_equal(got[table], expected[table], check_dtype=False)
    finally:
        pg_admin(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.mark.docker
def test_the_docker_runner_writes_the_same_rows(full, tmp_path):
    from tests.integration.test_docker_runner import _engine

    client, reason = _engine()
    need(client is not None, reason)
    sqlite_settings, _ = full
    expected = _short_rows(sqlite_settings)
    home = tmp_path / "docker"
    for settings in _settings(home):
        done = _run_flows(settings, "docker", SHORT)
        got = _short_rows(settings)
    for table in expected:
        pd.testing.assert_frame_equal(got[table], expected[table], check_dtype=False)
    assert done["training"].steps["train_xgboost"].environment != (
        done["training"].steps["train_linear"].environment
    )
    shutil.rmtree(home, ignore_errors=True)
