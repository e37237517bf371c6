"""Each component declares only what it needs, and its module imports only conveyor at the top."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement

from components.drift import drift, profile
from components.evaluate import evaluate
from components.features import build_features, split_window
from components.nyse import ingest, validate
from components.predict import predict
from components.train_linear import train_linear
from components.train_xgboost import train_xgboost

ROOT = Path(__file__).resolve().parents[2]
ML = ("scikit-learn", "sklearn", "xgboost", "xgboost-cpu")


def names(packages: tuple[str, ...]) -> set[str]:
    return {Requirement(p).name for p in packages}


def test_the_trainers_declare_one_library_each() -> None:
    assert names(train_linear.spec.packages) == {"scikit-learn"}
    assert names(train_xgboost.spec.packages) == {"xgboost-cpu"}  # no scikit-learn
    assert not names(train_xgboost.spec.packages) & {"scikit-learn", "sklearn", "xgboost"}


def test_the_other_steps_need_only_pandas_which_dataframes_imply() -> None:
    for step in (ingest, validate, build_features, split_window, predict, evaluate, profile, drift):
        assert step.spec.packages == (), step.name
        assert set(step.spec.implied_packages) == {"pandas", "pyarrow"} | (
            {"joblib"} if step is predict else set()
        ), step.name


def test_predict_declares_no_ml_package() -> None:
    assert not names(predict.spec.packages) & set(ML)


def test_inputs_and_outputs_cross_in_the_expected_formats() -> None:
    assert [o.name for o in ingest.spec.outputs] == ["rows", "lookback"]
    assert [o.codec.format for o in ingest.spec.outputs] == ["parquet", "json"]
    assert ingest.spec.input("start").codec.json_type == "date"
    assert [o.name for o in split_window.spec.outputs] == ["fit", "validation"]
    assert train_linear.spec.outputs[0].codec.format == "joblib"
    assert train_xgboost.spec.outputs[0].codec.format == "joblib"
    assert predict.spec.input("model").codec.format == "joblib"
    assert evaluate.spec.outputs[0].codec.json_type == "metrics"
    assert profile.spec.outputs[0].codec.format == "json"
    assert drift.spec.input("reference").codec.format == "json"


def test_importing_the_component_modules_loads_no_ml_library() -> None:
    script = (
        "import sys\n"
        "import components.nyse, components.features, components.design, components.predict\n"
        "import components.train_linear, components.train_xgboost, components.evaluate\n"
        "import components.drift, components.gate, components\n"
        "loaded = {'sklearn', 'xgboost'} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True)
