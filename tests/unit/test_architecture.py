"""The import contracts in pyproject.toml can fail: each breaks when its rule is broken.

A copy of the package gets one forbidden import per contract; import-linter must report every
contract broken, and keep them all on the unmodified copy. A contract that passes whatever the
code does protects nothing.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# (module file under src/conveyor, line appended, the contract it must break)
INJECTIONS = [
    ("engine/core.py", "import prefect", "Only conveyor.backends imports Prefect"),
    ("ops/run.py", "import kfp", "Only conveyor.backends imports kfp"),
    ("engine/results.py", "import docker", "Only conveyor.runners imports the Docker SDK"),
    ("cli/common.py", "import sqlalchemy", "Only conveyor.db imports SQLAlchemy and Alembic"),
    ("runners/base.py", "import psycopg", "Only conveyor.db may import psycopg"),
    ("_runtime/codecs.py", "import rich", "The step runtime imports nothing but the standard"),
    ("dsl/pipeline.py", "import conveyor.engine.results", "Layers: each subpackage imports"),
    # placeholders <-> pipeline: a cycle inside one layer, which only the acyclic check sees
    ("dsl/placeholders.py", "import conveyor.dsl.pipeline", "No import cycles between sibling"),
]


def _lint(tmp: Path) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", "from importlinter.cli import lint_imports_command as c; c()",
         "--no-cache", str(tmp / "pyproject.toml")],
        cwd=tmp, capture_output=True, text=True, env={"PYTHONPATH": str(tmp / "src"),
                                                       "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def copy(tmp_path_factory) -> Path:
    if importlib.util.find_spec("importlinter") is None:
        pytest.skip("import-linter is not installed (pip install 'conveyor[dev]')")
    tmp = tmp_path_factory.mktemp("contracts")
    shutil.copytree(ROOT / "src" / "conveyor", tmp / "src" / "conveyor",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    shutil.copy(ROOT / "pyproject.toml", tmp / "pyproject.toml")
    return tmp


def test_every_contract_holds_on_the_code_as_it_is(copy):
    output = _lint(copy)
    assert "BROKEN" not in output, output
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    assert output.count(" KEPT") == len(contracts["contracts"]), output


def test_every_contract_breaks_when_its_rule_is_broken(copy):
    for relative, line, _ in INJECTIONS:
        path = copy / "src" / "conveyor" / relative
        path.write_text(path.read_text() + f"\n{line}  # injected by the test\n")
    output = _lint(copy)
    for _, line, name in INJECTIONS:
        status = next((row for row in output.splitlines() if row.startswith(name)), "")
        assert status.endswith("BROKEN"), f"{line!r} did not break {name!r}:\n{output}"
