"""The executor protocol, run as a real `python -m conveyor._runtime.executor` subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conveyor.dsl.artifacts import Codec, read_value, write_value
from conveyor.runners.runtime import runtime_bundle


def _run(project, spec: dict, *extra: str) -> subprocess.CompletedProcess:
    bundle = runtime_bundle(project.root / ".runtime")
    spec_path = project.root / "task.json"
    spec_path.write_text(json.dumps(spec))
    return subprocess.run(
        [sys.executable, "-m", "conveyor._runtime.executor", str(spec_path), *extra],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": f"{bundle}:{project.root}", "PATH": "/usr/bin:/bin"},
        cwd=project.root,
        check=False,
    )


def _spec(project, **overrides) -> dict:
    spec = {
        "protocol": 1,
        "step": "scale",
        "module": "steps.ops",
        "qualname": "scale",
        "packages": [],
        "inputs": {},
        "parameters": {},
        "outputs": {"output": {"path": str(project.root / "out" / "output"), "format": "json"}},
        "returns": "single",
        "result": str(project.root / "result.json"),
    }
    spec.update(overrides)
    return spec


OPS = """
from datetime import date
from conveyor import component

@component
def scale(values: list, factor: float, when: date) -> dict:
    return {"scaled": [v * factor for v in values], "weekday": when.weekday()}

@component
def explode(x: int) -> int:
    helper(x)

def helper(x):
    raise ValueError(f"bad value {x}")
"""


def test_runs_a_step_and_writes_a_result(project):
    project.write("steps/ops.py", OPS)
    values = write_value([1, 2, 3], Codec("json"), project.root / "in" / "values")
    spec = _spec(
        project,
        inputs={"values": {"path": str(project.root / "in" / "values"), "format": "json",
                           "sha256": values.sha256}},
        parameters={"factor": {"value": 2.0}, "when": {"value": "2024-01-01", "type": "date"}},
    )  # fmt: skip
    proc = _run(project, spec)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((project.root / "result.json").read_text())
    assert result["status"] == "succeeded"
    out = result["outputs"]["output"]
    assert read_value(project.root / "out" / "output", Codec("json"), out["sha256"]) == {
        "scaled": [2.0, 4.0, 6.0],
        "weekday": 0,
    }
    assert set(result["timings"]) == {"import", "load", "run", "save"}


def test_path_overrides_for_kfp_style_placeholders(project):
    project.write("steps/ops.py", OPS)
    write_value([5], Codec("json"), project.root / "elsewhere" / "v")
    spec = _spec(
        project,
        inputs={"values": {"path": "/nonexistent", "format": "json"}},
        parameters={"factor": {"value": 1}, "when": {"value": "2024-01-02", "type": "date"}},
    )
    proc = _run(
        project, spec,
        "--input", f"values={project.root / 'elsewhere' / 'v'}",
        "--output", f"output={project.root / 'kfp' / 'out'}",
        "--result", str(project.root / "kfp" / "result.json"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (project.root / "kfp" / "out").is_file()
    assert json.loads((project.root / "kfp" / "result.json").read_text())["status"] == "succeeded"


def test_user_exception_comes_back_with_step_and_original_traceback(project):
    project.write("steps/ops.py", OPS)
    spec = _spec(project, step="explode", qualname="explode", parameters={"x": {"value": 7}})
    proc = _run(project, spec)
    assert proc.returncode == 1
    error = json.loads((project.root / "result.json").read_text())["error"]
    assert error["type"] == "ValueError" and error["message"] == "bad value 7"
    assert 'in helper\n    raise ValueError(f"bad value {x}")' in error["traceback"]
    assert "conveyor/executor.py" not in error["traceback"]


def test_tampered_input_is_refused(project):
    project.write("steps/ops.py", OPS)
    ref = write_value([1], Codec("json"), project.root / "in" / "values")
    (project.root / "in" / "values").write_text("[1000]")
    spec = _spec(
        project,
        inputs={"values": {"path": str(project.root / "in" / "values"), "format": "json",
                           "sha256": ref.sha256}},
        parameters={"factor": {"value": 1}, "when": {"value": "2024-01-02", "type": "date"}},
    )  # fmt: skip
    proc = _run(project, spec)
    assert proc.returncode == 1
    error = json.loads((project.root / "result.json").read_text())["error"]
    assert error["type"] == "ArtifactIntegrityError" and error["stage"] == "load"
    assert "does not match its content hash" in error["message"]


def test_protocol_mismatch_is_reported(project):
    proc = _run(project, {"protocol": 99})
    assert proc.returncode == 2
    assert "protocol 99" in proc.stderr


def test_a_spec_that_is_not_an_object_is_a_protocol_error(tmp_path, capsys):
    import contextvars

    from conveyor._runtime.executor import main

    (tmp_path / "task.json").write_text("[1, 2]")
    # main() enters step mode, as a step process does; keep that out of this test process
    assert contextvars.copy_context().run(main, [str(tmp_path / "task.json")]) == 2
    assert "task spec must be a JSON object, got list" in capsys.readouterr().err


def test_importing_the_executor_loads_only_the_standard_library(tmp_path: Path):
    """A step gets conveyor/_runtime whole and the three stdlib-only top-level modules, nothing
    else; a component module's `from conveyor import ...` resolves there, hints included."""
    bundle = runtime_bundle(tmp_path / "runtime")
    code = (
        "import sys, conveyor._runtime.executor\n"
        "from conveyor._runtime.step_mode import IN_STEP\n"
        "IN_STEP.set(True)\n"
        "from conveyor import component, pipeline, load_table, Metrics, HostContext, StepFailed\n"
        "third = sorted({m.split('.')[0] for m in sys.modules} - set(sys.stdlib_module_names)"
        " - {'conveyor', '__main__'})\n"
        "print(','.join(third))\n"
    )
    script = f"import sys; sys.path.insert(0, {str(bundle)!r}); {code}"
    proc = subprocess.run(
        # -S: no site-packages, so a .pth hook of the test venv (setuptools') is not counted
        [sys.executable, "-I", "-S", "-c", script],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert proc.stdout.strip() == ""
    shipped = {p.name for p in (bundle / "conveyor").iterdir()} - {"__pycache__"}
    assert shipped == {"__init__.py", "errors.py", "version.py", "_runtime"}
