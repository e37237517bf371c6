"""What commands import: a pipeline name resolves by reading flow files, importing only the one
that defines it; `dag` and `plan` load no pandas and no database layer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conveyor.errors import DiscoveryError
from conveyor.ops.discovery import declared_names, resolve_pipeline

REPO = Path(__file__).resolve().parents[2]
FRONT = {"conveyor.db.api", "conveyor.db.host_steps"}

# Run a CLI command in a fresh interpreter, then print which of the watched modules it loaded.
PROBE = """
import json, sys
from conveyor.cli import main
sys.argv = ["conveyor", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    assert not exc.code, exc.code
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("flows", "components", "pandas",
                "numpy", "sqlalchemy", "alembic", "conveyor"))
print("\\nMODULES " + json.dumps(loaded))
"""


def loaded_by(cwd: Path, *args: str) -> set[str]:
    """The watched modules a `conveyor ARGS` process imported."""
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *args], cwd=cwd, capture_output=True, text=True, check=False,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "120", "HOME": str(cwd)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout
    line = proc.stdout.rsplit("MODULES ", 1)[1]
    return set(json.loads(line))


def test_declared_names_read_from_source():
    source = """
import conveyor
from conveyor import pipeline

@pipeline
def plain(): ...

@pipeline(name="renamed", partition="day")
def inner(day): ...

@conveyor.pipeline()
def dotted(): ...

@other
def not_a_pipeline(): ...

def pipeline_like(): ...
"""
    assert declared_names(source) == {"plain", "renamed", "dotted"}
    assert declared_names("def broken(:\n") == set()


def test_a_name_imports_only_its_flow_file(project):
    project.write("steps/small.py", "from conveyor import component\n\n@component\n"
                  "def one(n: int) -> int:\n    return n\n")  # fmt: skip
    project.write("flows/small.py", "from conveyor import pipeline\nfrom steps.small import one\n"
                  "\n@pipeline(name='tiny')\ndef small(n: int = 1):\n"
                  "    return one(n)\n")  # fmt: skip
    # another flow file that would fail to import: resolving `tiny` never touches it
    project.write("flows/other.py", "raise RuntimeError('imported')\n")
    assert resolve_pipeline("tiny", project.settings).name == "tiny"
    assert "flows.small" in sys.modules and "flows.other" not in sys.modules
    # a name the source does not show falls back to importing them all (and names the failure)
    with pytest.raises(DiscoveryError, match=r"flows/other.py: RuntimeError: imported"):
        resolve_pipeline("small", project.settings)


def test_dag_of_a_reference_flow_imports_its_file_and_no_pandas():
    loaded = loaded_by(REPO, "dag", "features")
    flows = {m for m in loaded if m.startswith("flows.")}
    # flows.tables is features' own import; the other flows are never read
    assert flows == {"flows.features", "flows.tables"}, flows
    assert not {"pandas", "numpy", "sqlalchemy"} & loaded, sorted(loaded)


def test_dag_and_plan_import_no_database_layer(project):
    project.write("steps/small.py", "from conveyor import component\n\n@component\n"
                  "def one(n: int) -> int:\n    return n\n")  # fmt: skip
    project.write("flows/small.py", "from conveyor import pipeline\nfrom steps.small import one\n"
                  "\n@pipeline\ndef small(n: int = 1):\n    return one(n)\n")  # fmt: skip
    for args in (("dag", "small"), ("plan", "small", "--runner", "inprocess")):
        loaded = loaded_by(project.root, *args)
        # the host-step and registry front ends may load; what they stand on may not
        database = {m for m in loaded if m.split(".")[0] in ("sqlalchemy", "alembic", "psycopg")}
        database |= {m for m in loaded if m.startswith("conveyor.db.") and m not in FRONT}
        assert not database, (args, sorted(database))
