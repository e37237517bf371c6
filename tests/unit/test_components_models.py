"""Train, predict and evaluate on the ISLP split: the textbook's test R² from the components."""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys
from datetime import date
from pathlib import Path

import joblib
import pandas as pd
import pytest

from components.evaluate import evaluate
from components.features import build_features, split_window
from components.nyse import DEFAULT_SOURCE, ingest, validate
from components.predict import predict

ROOT = Path(__file__).resolve().parents[2]
HAVE_SKLEARN = importlib.util.find_spec("sklearn") is not None
HAVE_XGBOOST = importlib.util.find_spec("xgboost") is not None
needs_sklearn = pytest.mark.skipif(
    not HAVE_SKLEARN, reason="scikit-learn is not installed (pip install 'scikit-learn>=1.5,<2')"
)
needs_xgboost = pytest.mark.skipif(
    not HAVE_XGBOOST, reason="xgboost is not installed (pip install xgboost-cpu)"
)


@pytest.fixture(scope="module")
def features() -> pd.DataFrame:
    start, end = date(1962, 12, 3), date(1986, 12, 31)
    return build_features(
        validate(ingest(DEFAULT_SOURCE, start, end).rows, "NYSE.csv"), start, end, []
    )


@pytest.fixture(scope="module")
def train(features: pd.DataFrame) -> pd.DataFrame:
    return features[features["date"] <= "1979-12-31"].reset_index(drop=True)


@pytest.fixture(scope="module")
def test(features: pd.DataFrame) -> pd.DataFrame:
    return features[features["date"] > "1979-12-31"].reset_index(drop=True)


def roundtrip(model: object) -> object:
    """What crossing a step boundary does to a model: joblib out, joblib in."""
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    buffer.seek(0)
    return joblib.load(buffer)


def test_r2(model: object, test: pd.DataFrame) -> float:
    predictions = predict(roundtrip(model), test)
    assert list(predictions.columns) == ["date", "prediction"] and len(predictions) == 1770
    metrics = evaluate(predictions, test)
    assert metrics["rows"] == 1770
    return metrics["r2"]


test_r2.__test__ = False  # a helper, not a test


@needs_sklearn
@pytest.mark.parametrize(("day_of_week", "expected"), [(False, 0.4129), (True, 0.4596)])
def test_linear_reproduces_the_islp_lab(
    train: pd.DataFrame, test: pd.DataFrame, day_of_week: bool, expected: float
) -> None:
    from components.train_linear import train_linear

    assert (len(train), len(test)) == (4276, 1770)
    model = train_linear(train, day_of_week=day_of_week)
    assert model.conveyor_day_of_week is day_of_week
    assert test_r2(model, test) == pytest.approx(expected, abs=5e-4)


@needs_xgboost
def test_xgboost_native_api_scores_at_least_0_44(train: pd.DataFrame, test: pd.DataFrame) -> None:
    from components.train_xgboost import train_xgboost

    model = train_xgboost(train)
    assert type(model).__module__.startswith("xgboost") and len(model.feature_names) == 20
    assert test_r2(model, test) >= 0.44
    again = predict(train_xgboost(train), test)  # one thread and a fixed seed: same numbers
    pd.testing.assert_frame_equal(again, predict(model, test))


@needs_sklearn
def test_validation_scores_on_the_last_two_training_years(train: pd.DataFrame) -> None:
    from components.train_linear import train_linear

    fit, validation = split_window(train, 730)
    metrics = evaluate(predict(train_linear(fit), validation), validation)
    assert metrics["rows"] == 505 and metrics["r2"] == pytest.approx(0.5428, abs=5e-4)


def test_no_model_gives_empty_predictions_and_metrics_without_r2(test: pd.DataFrame) -> None:
    predictions = predict(None, test)
    assert predictions.empty and list(predictions.columns) == ["date", "prediction"]
    assert str(predictions["date"].dtype) == "datetime64[ns]"
    assert evaluate(predictions, test) == {"rows": 0}


def test_evaluate_joins_on_date_and_computes_r2_and_mae() -> None:
    dates = pd.to_datetime(["1980-01-02", "1980-01-03", "1980-01-04"])
    features = pd.DataFrame({"date": dates, "log_volume": [1.0, 2.0, 3.0]})
    predictions = pd.DataFrame({"date": dates[::-1], "prediction": [3.0, 2.0, 0.0]})
    assert evaluate(predictions, features) == pytest.approx({"r2": 0.5, "mae": 1 / 3, "rows": 3})


def test_an_unknown_model_type_is_refused(test: pd.DataFrame) -> None:
    with pytest.raises(TypeError, match=r"no rule for a builtins\.dict model"):
        predict({"not": "a model"}, test)


@needs_sklearn
@pytest.mark.slow
def test_predicting_with_a_linear_model_does_not_import_xgboost(
    train: pd.DataFrame, test: pd.DataFrame, tmp_path: Path
) -> None:
    from components.train_linear import train_linear

    joblib.dump(train_linear(train), tmp_path / "model.joblib")
    test.head(3).to_parquet(tmp_path / "features.parquet")
    script = (
        "import sys, joblib, pandas as pd\n"
        "from components.predict import predict\n"
        f"model = joblib.load({str(tmp_path / 'model.joblib')!r})\n"
        f"out = predict(model, pd.read_parquet({str(tmp_path / 'features.parquet')!r}))\n"
        "assert len(out) == 3 and 'xgboost' not in sys.modules, sorted(sys.modules)\n"
        "assert predict(None, out).empty\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True)
