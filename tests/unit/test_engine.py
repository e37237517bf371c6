"""The local engine with the in-process runner: caching, reasons, failures, retries, parallelism."""

from __future__ import annotations

import pytest

import conveyor
from conveyor.errors import ParameterError, RunFailed

STEPS = """
import json, os, time
from pathlib import Path
from conveyor import Metrics, component

@component
def load(n: int) -> list:
    return list(range(n))

@component
def double(values: list) -> list:
    return [v * 2 for v in values]

@component
def total(values: list, offset: int = 0) -> int:
    return sum(values) + offset

@component
def other(n: int) -> int:
    return n + 1

@component
def boom(values: list) -> int:
    raise RuntimeError("boom happened")

@component
def after_boom(x: int) -> int:
    return x

@component(retries=2)
def flaky(marker: str) -> int:
    path = Path(marker)
    count = int(path.read_text()) if path.exists() else 0
    path.write_text(str(count + 1))
    if count < 1:
        raise ConnectionError("first attempt always fails")
    return count + 1

@component
def sleepy(name: str, log: str) -> str:
    with open(log, "a") as f:
        f.write(f"start {name} {time.monotonic()}\\n")
    time.sleep(0.4)
    with open(log, "a") as f:
        f.write(f"end {name} {time.monotonic()}\\n")
    return name

@component
def scores(values: list) -> Metrics:
    return Metrics(mean=sum(values) / len(values))
"""

FLOWS = """
from conveyor import pipeline
from steps.basic import after_boom, boom, double, flaky, load, other, scores, sleepy, total

@pipeline
def chain(n: int = 4, offset: int = 0):
    values = load(n)
    return total(double(values), offset=offset), other(n), scores(values)

@pipeline
def failing(n: int = 3):
    values = load(n)
    after_boom(boom(values))
    return other(n)

@pipeline
def retrying(marker: str):
    return flaky(marker)

@pipeline
def parallel(log: str):
    return sleepy("a", log), sleepy("b", log)
"""


@pytest.fixture
def flows(project):
    project.write("steps/basic.py", STEPS)
    project.write("flows/basic.py", FLOWS)
    return project


def _run(name, params=None, **options):
    return conveyor.run(name, params or {}, runner="inprocess", hooks=[], **options)


def test_first_run_then_everything_cached(flows):
    first = _run("chain")
    assert first.ok, first.error
    assert {s.status for s in first.steps.values()} == {"succeeded"}
    assert {s.reason for s in first.steps.values()} == {"no previous run"}
    assert first.output == (12, 5, {"mean": 1.5})
    assert first.steps["scores"].metrics == {"mean": 1.5}

    again = _run("chain")
    assert [s.status for s in again.steps.values()] == ["cached"] * 5
    assert again.output == first.output
    assert again.steps["scores"].metrics == {"mean": 1.5}


def test_changed_parameter_reruns_exactly_that_step_and_its_descendants(flows):
    _run("chain")
    result = _run("chain", {"offset": 10})
    statuses = {n: (s.status, s.reason) for n, s in result.steps.items()}
    hit = ("cached", "same code, inputs and environment")
    assert statuses == {
        "load": hit,
        "double": hit,
        "total": ("succeeded", "parameter offset changed"),
        "other": hit,
        "scores": hit,
    }
    result = _run("chain", {"n": 5, "offset": 10})
    reasons = {n: s.reason for n, s in result.steps.items()}
    assert reasons["load"] == "parameter n changed"
    assert reasons["double"] == "input values changed"
    assert reasons["total"] == "input values changed"
    assert reasons["other"] == "parameter n changed"


def test_code_change_reruns_only_the_edited_component(flows):
    _run("chain")
    source = (flows.root / "steps/basic.py").read_text()
    flows.write("steps/basic.py", source.replace("return sum(values) + offset",
                                                 "return sum(values) + offset + 1"))  # fmt: skip
    import importlib
    import sys

    importlib.reload(sys.modules["steps.basic"])
    importlib.reload(sys.modules["flows.basic"])
    result = _run("chain")
    changed = {n: s.reason for n, s in result.steps.items() if s.status != "cached"}
    assert changed == {"total": "code changed (steps/basic.py: total)"}
    assert result.output[0] == 13


def test_no_cache_and_force_step(flows):
    _run("chain")
    forced = _run("chain", force_steps=["double"])
    assert forced.steps["double"].status == "succeeded"
    assert forced.steps["double"].reason == "forced (--force-step)"
    assert forced.steps["total"].status == "cached"  # same output content: downstream still hits
    uncached = _run("chain", cache=False)
    assert {s.status for s in uncached.steps.values()} == {"succeeded"}
    assert {s.reason for s in uncached.steps.values()} == {"cache disabled (--no-cache)"}
    with pytest.raises(ParameterError, match="has no such step; its steps are load, double"):
        _run("chain", force_steps=["nope"])


def test_failure_skips_downstream_and_independent_branches_finish(flows):
    result = _run("failing")
    assert result.status == "failed"
    assert result.steps["boom"].status == "failed"
    assert result.steps["after_boom"].status == "skipped"
    assert result.steps["after_boom"].reason == "upstream boom did not succeed"
    assert result.steps["other"].status == "succeeded"
    assert "step 'boom' failed: RuntimeError: boom happened" in result.error
    assert "Original traceback" in result.error and 'raise RuntimeError("boom happened")' in (
        result.error
    )
    with pytest.raises(RunFailed, match="pipeline 'failing' failed"):
        _run("failing", raise_on_failure=True)


def test_retries_are_owned_by_the_engine(flows, monkeypatch):
    monkeypatch.setenv("CONVEYOR_RETRY_DELAY", "0.01")  # read when an engine is built
    marker = flows.root / "attempts.txt"
    result = _run("retrying", {"marker": str(marker)})
    assert result.ok, result.error
    assert result.steps["flaky"].attempts == 2
    assert result.output == 2
    assert marker.read_text() == "2"


def test_independent_steps_run_in_parallel_and_max_parallel_bounds_them(flows):
    def overlapped(log_path) -> bool:
        events = [line.split() for line in log_path.read_text().splitlines()]
        times = {(kind, name): float(t) for kind, name, t in events}
        return (
            times[("start", "b")] < times[("end", "a")]
            and times[("start", "a")] < times[("end", "b")]
        )

    log = flows.root / "parallel.log"
    assert _run("parallel", {"log": str(log)}, max_parallel=2).ok
    assert overlapped(log)
    serial = flows.root / "serial.log"
    assert _run("parallel", {"log": str(serial)}, max_parallel=1, cache=False).ok
    assert not overlapped(serial)


def test_step_results_carry_artifacts_and_timings(flows):
    result = _run("chain")
    step = result.steps["double"]
    assert set(step.artifacts) == {"output"}
    assert len(step.artifacts["output"].sha256) == 64
    assert step.output == [0, 2, 4, 6]
    assert set(step.timings) == {"import", "load", "run", "save"}
    assert step.environment and step.cache_key


def test_without_a_database_runs_work_and_host_steps_say_why(flows, monkeypatch):
    from conveyor.errors import HostStepError

    monkeypatch.setenv("CONVEYOR_DATABASE_URL", "none")
    result = conveyor.run("chain", {}, runner="inprocess")  # default hooks: none recorded
    assert result.ok, result.error
    assert not (flows.root / ".conveyor" / "conveyor.db").exists()
    flows.write(
        "flows/tables.py",
        """
        from conveyor import load_table, pipeline

        @pipeline
        def reads():
            return load_table("anything")
        """,
    )
    with pytest.raises(HostStepError, match="do not set CONVEYOR_DATABASE_URL=none"):
        conveyor.run("reads", {}, runner="inprocess")


HOST_SINK = """
from conveyor import component, host_step, pipeline

@component
def numbers(n: int) -> dict:
    return {"n": n}

@host_step
def publish(values: dict) -> None:
    lookup = {}
    return lookup["missing"]  # the user's own bug

@pipeline
def sinking(n: int = 2):
    publish(numbers(n))
"""


def test_a_host_step_error_keeps_the_users_traceback(project):
    from conveyor.errors import HostStepFailed

    project.write("flows/sinking.py", HOST_SINK)
    result = conveyor.run("sinking", runner="inprocess", hooks=[])
    step = result.steps["publish"]
    assert (result.status, step.status) == ("failed", "failed")
    assert step.error.startswith("host step 'publish' failed: KeyError: 'missing'")
    assert "Original traceback (from the host step):" in step.error
    assert 'flows/sinking.py", line 10, in publish' in step.error
    assert 'return lookup["missing"]  # the user\'s own bug' in step.error
    assert "step_runner.py" not in step.error  # conveyor's own frames are cut
    with pytest.raises(RunFailed) as info:
        conveyor.run("sinking", runner="inprocess", hooks=[], raise_on_failure=True)
    assert "KeyError: 'missing'" in str(info.value)
    assert issubclass(HostStepFailed, conveyor.StepFailed)


HELPERS = """
class DataFrameCaster:
    factor = 2

    def transform(self, values):
        return [v * self.factor for v in values]

    def unused(self):
        return None
"""

LAZY = """
from pathlib import Path
from conveyor import component, pipeline

@component
def cast(values: list) -> list:
    from steps.helpers import DataFrameCaster  # heavy imports inside the body, as recommended

    return DataFrameCaster().transform(values)

@component
def count_rows(source: Path) -> int:
    return len(source.read_text().splitlines())

@pipeline
def lazy(values: list = [1, 2]):
    return cast(values)

@pipeline
def counting(source: str = "data/x.csv"):
    return count_rows(source)
"""


def test_a_helper_imported_inside_a_component_is_part_of_its_code(project):
    """Editing a project helper the component imports in its body re-runs it, naming the method."""
    import importlib
    import sys

    project.write("steps/helpers.py", HELPERS)
    project.write("flows/lazy.py", LAZY)
    assert _run("lazy").output == [2, 4]
    assert _run("lazy").steps["cast"].status == "cached"
    project.write("steps/helpers.py", HELPERS.replace("v * self.factor", "v * self.factor + 1"))
    importlib.reload(sys.modules["steps.helpers"])  # the in-process runner shares our modules
    again = _run("lazy")
    step = again.steps["cast"]
    assert (step.status, step.reason) == (
        "succeeded", "code changed (steps/helpers.py: DataFrameCaster.transform)",
    )  # fmt: skip
    assert again.output == [3, 5]
    project.write("steps/helpers.py", HELPERS.replace("return None", "return 0").replace(
        "v * self.factor", "v * self.factor + 1"))  # fmt: skip
    assert _run("lazy").steps["cast"].reason == (
        "code changed (steps/helpers.py: DataFrameCaster.unused)"
    )  # the class is followed method by method; another method's edit is named as such


def test_a_file_argument_is_its_content(project):
    """Editing a CSV in place re-runs the step that reads it, and the new value lands."""
    project.write("flows/lazy.py", LAZY)
    project.write("data/x.csv", "a\n1\n")
    assert _run("counting").output == 2
    assert _run("counting").steps["count_rows"].status == "cached"
    (project.root / "data" / "x.csv").write_text("a\n1\n2\n")
    again = _run("counting")
    step = again.steps["count_rows"]
    assert (step.status, step.reason) == ("succeeded", "input file data/x.csv changed")
    assert again.output == 3
    with pytest.raises(ParameterError) as info:
        _run("counting", {"source": "data/none.csv"})  # at plan time: nothing ran
    assert "step 'count_rows', parameter 'source': data/none.csv does not exist" in str(info.value)


def test_a_corrupt_cached_output_is_a_miss_that_repairs_it(flows):
    """Same-size corruption of a cached output: the next run says so, recomputes, replaces it."""
    from conveyor.engine.store import ArtifactStore

    first = _run("chain")
    ref = first.steps["double"].artifacts["output"]
    store = ArtifactStore(flows.settings.artifact_store)
    path = store.path_for(ref.sha256)
    good = path.read_bytes()
    path.write_bytes(good.replace(b"2", b"3"))  # same size, different content
    assert path.stat().st_size == ref.size
    again = _run("chain")
    step = again.steps["double"]
    assert step.status == "succeeded"
    assert "cached output 'output'" in step.reason and "no longer matches its hash" in step.reason
    assert path.read_bytes() == good  # replaced by the recomputed value
    assert again.output[0] == first.output[0]
    assert _run("chain").steps["double"].status == "cached"


def test_the_reason_after_a_failed_run_says_it_failed(flows):
    first = _run("failing")
    assert first.steps["boom"].status == "failed"
    again = _run("failing")
    assert again.steps["boom"].reason == "its previous run failed"


def test_cached_steps_say_what_matched_not_cached_again(flows):
    _run("chain")
    again = _run("chain")
    assert {s.reason for s in again.steps.values()} == {"same code, inputs and environment"}


def test_a_step_that_failed_outside_its_function_is_remembered_as_failed(flows):
    """An error of conveyor's own after a step began (here: the runner cannot store an output)
    must make the next run say the step failed, never that it did not finish."""
    from conveyor.engine.core import Engine
    from conveyor.errors import ArtifactError
    from conveyor.ops.discovery import resolve_pipeline
    from conveyor.runners.inprocess import InProcessRunner

    class StoreFullOnce(InProcessRunner):
        broken = True

        def run(self, task):
            if task.step == "double" and StoreFullOnce.broken:
                StoreFullOnce.broken = False
                raise ArtifactError("no space left in the store")
            return super().run(task)

    settings = flows.settings
    first = Engine(settings, StoreFullOnce()).run(resolve_pipeline("chain", settings), {})
    assert first.steps["double"].status == "failed"
    assert "no space left in the store" in (first.steps["double"].error or "")
    again = _run("chain")
    assert again.steps["double"].status == "succeeded"
    assert again.steps["double"].reason == "its previous run failed"


def test_a_cache_probe_settles_hits_and_begins_nothing_else(flows):
    """What a driver paying per executed step (Prefect) asks first: a hit comes back as the
    step's cached result; a miss is None, with nothing begun, and then runs as usual."""
    from conveyor.engine.settings import Settings
    from conveyor.ops.discovery import resolve_pipeline
    from conveyor.ops.run import build_engine

    assert _run("chain").ok
    settings = Settings.load()
    engine = build_engine(settings, runner="inprocess", hooks=[])
    pipeline = resolve_pipeline("chain", settings)
    execution = engine.execution(pipeline, engine.plan(pipeline, {}))
    first = execution.state.pipeline.steps[0]
    hit = execution.steps.cached(first)
    assert hit is not None and hit.status == "cached" and hit.artifacts
    changed = engine.execution(pipeline, engine.plan(pipeline, {"n": 7}))
    step = changed.state.pipeline.steps[0]
    assert changed.steps.cached(step) is None
    ran = changed.steps.execute(step)
    assert ran.status == "succeeded" and ran.reason == "parameter n changed"
