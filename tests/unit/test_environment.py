"""Locks and the checks a built environment must pass (no installer involved)."""

from __future__ import annotations

import subprocess
import sys

from conveyor.runners.locks import (
    IMPORT_CHECK,
    RUNTIME_BOUNDS,
    codec_imports,
    import_check_error,
    lock_pins,
)

OLD_LOCK = """# conveyor lock
numpy==1.26.4  # via pandas
pandas==2.2.0
pyarrow==26.0.1
python-dateutil==2.9.0.post0
"""


def test_lock_pins_are_normalized_names_and_versions():
    pins = lock_pins(OLD_LOCK + "Scikit_Learn==1.5.0\n")
    assert pins["numpy"] == "1.26.4"
    assert pins["python-dateutil"] == "2.9.0.post0"
    assert pins["scikit-learn"] == "1.5.0"
    assert "# conveyor lock" not in pins


def test_pyarrow_is_bounded_only_when_numpy_resolves_below_2():
    (bound,) = RUNTIME_BOUNDS
    assert bound.applies(lock_pins(OLD_LOCK))
    assert not bound.applies(lock_pins(OLD_LOCK.replace("pyarrow==26.0.1", "pyarrow==25.0.0")))
    assert not bound.applies(lock_pins(OLD_LOCK.replace("numpy==1.26.4", "numpy==2.1.0")))
    assert not bound.applies(lock_pins("numpy==1.26.4\n"))  # no pyarrow: nothing to bound
    assert bound.explain(lock_pins(OLD_LOCK)).startswith("pyarrow<26: the lock resolved numpy 1.26")


def test_the_import_check_covers_the_codec_libraries_in_the_lock():
    assert codec_imports(["numpy==1.26.4", "pandas==2.2.0", "pyarrow==26.0.1", "six==1"]) == (
        "numpy", "pandas", "pyarrow", "pyarrow.parquet",
    )  # fmt: skip
    assert codec_imports(["six==1.16.0"]) == ()


def test_a_failed_import_check_names_the_module_the_error_and_the_versions():
    proc = subprocess.run(
        [sys.executable, "-I", "-c", IMPORT_CHECK, "json", "conveyor_no_such_module"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 3
    error = import_check_error(proc.stderr, OLD_LOCK.splitlines(), "step s", "locks/x.txt")
    message = str(error)
    assert "the environment for step s installed but cannot import" in message
    assert "import conveyor_no_such_module: ModuleNotFoundError" in message
    assert "import json" not in message
    assert "(installed: numpy 1.26.4, pandas 2.2.0, pyarrow 26.0.1)" in message
    assert "refresh it with `conveyor envs lock`" in message
    ok = subprocess.run([sys.executable, "-I", "-c", IMPORT_CHECK, "json"], check=False)
    assert ok.returncode == 0
