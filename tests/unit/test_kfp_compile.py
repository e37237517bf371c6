"""Compiling pipelines for Kubeflow Pipelines, checked the way Kubeflow's own tests check a spec:
a strict protobuf parse, kfp's component loader, a round trip through kfp's compiler, and our
referential-integrity check (which rejects what kfp's loaders let through); golden files for the
repository's flows; and what each conveyor option becomes in the spec.

Images are resolved without a Docker engine (tests/kfp_support.py); the integration tests
compile against pushed images and run the result under kfp.local.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from conveyor.backends.kfp import check
from conveyor.engine.settings import Settings
from conveyor.errors import CompileError
from conveyor.ops.compile import compile as compile_pipeline
from tests.kfp_support import FakeImages, normalized

pytest.importorskip("kfp")

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
FLOWS = ("example", "features", "training", "batch_prediction")
UPDATE = os.environ.get("CONVEYOR_UPDATE_GOLDEN") == "1"


@pytest.fixture
def repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The repository's own project, with its state (and artifact store) in a temporary folder
    and no database (models are not resolved: the goldens do not depend on a registry)."""
    monkeypatch.setenv("CONVEYOR_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CONVEYOR_ARTIFACTS", raising=False)
    monkeypatch.setenv("CONVEYOR_DATABASE_URL", "none")
    return Settings.load(ROOT)


def _compiled(settings: Settings, name: str, tmp_path: Path, **options: Any) -> Path:
    out = tmp_path / f"{name}.yaml"
    compile_pipeline(name, output=out, settings=settings, images=FakeImages(), **options)
    return out


def _documents(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    spec, platform = check.documents(path.read_text())
    assert platform is not None
    return spec, platform


def _executor(spec: dict[str, Any], task: str) -> dict[str, Any]:
    label = spec["components"][f"comp-{task}"]["executorLabel"]
    container: dict[str, Any] = spec["deploymentSpec"]["executors"][label]["container"]
    return container


def _task_spec(spec: dict[str, Any], task: str) -> dict[str, Any]:
    args = _executor(spec, task)["args"]
    inline: dict[str, Any] = json.loads(args[2])
    return inline


# ---------------------------------------------------------------------------------------------
# every flow: valid the way Kubeflow checks it, and equal to its golden file


@pytest.mark.parametrize("name", FLOWS)
def test_every_flow_compiles_to_a_spec_kubeflow_accepts(repository, tmp_path, name):
    from google.protobuf import json_format
    from kfp import compiler
    from kfp.components import load_component_from_file
    from kfp.pipeline_spec import pipeline_spec_pb2

    path = _compiled(repository, name, tmp_path)
    spec, platform = _documents(path)
    # strict: an unknown field is an error (ParseDict's default), as in the backend
    json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec())
    json_format.ParseDict(platform, pipeline_spec_pb2.PlatformSpec())
    check.strict_parse(spec, platform)
    assert check.problems(spec, platform) == []
    component = load_component_from_file(str(path))
    assert component.name == name.replace("_", "-")
    again = tmp_path / f"{name}-again.yaml"
    compiler.Compiler().compile(component, str(again))
    assert _documents(again) == (spec, platform)  # the round trip changes nothing


@pytest.mark.parametrize("name", FLOWS)
def test_every_flow_matches_its_golden_file(repository, tmp_path, name):
    path = _compiled(repository, name, tmp_path)
    got = normalized(path.read_text(), repository.artifact_store)
    golden = GOLDEN / f"{name}.kfp.yaml"
    if UPDATE or not golden.exists():
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(got)
        if not UPDATE:
            pytest.fail(f"wrote the missing golden file {golden}; check it in")
    expected = golden.read_text()
    if got != expected:
        diff = "\n".join(difflib.unified_diff(
            expected.splitlines(), got.splitlines(), f"tests/golden/{name}.kfp.yaml",
            f"compiled {name}", lineterm="", n=2,
        ))  # fmt: skip
        pytest.fail(
            f"the compiled {name} pipeline differs from its golden file. If the change is "
            f"meant, rerun with CONVEYOR_UPDATE_GOLDEN=1 and commit the file.\n{diff}"
        )


def test_the_golden_comparison_ignores_digests_and_the_sdk_version_only(repository, tmp_path):
    text = _compiled(repository, "example", tmp_path).read_text()
    digest = text[text.index("@sha256:") + 8 :][:64]
    moved = text.replace(digest, "f" * 64).replace("sdkVersion: kfp-2", "sdkVersion: kfp-9")
    store = repository.artifact_store
    assert normalized(moved, store) == normalized(text, store)
    changed = text.replace("maxRetryCount", "maxRetryCount").replace("make-data", "make-dat")
    assert normalized(changed, store) != normalized(text, store)


# ---------------------------------------------------------------------------------------------
# the integrity check rejects what kfp's loaders accept


def _example(repository: Settings, tmp_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    return _documents(_compiled(repository, "example", tmp_path))


MUTANTS = {
    "a missing component": (
        lambda s: s["root"]["dag"]["tasks"]["report"]["componentRef"].update(name="comp-nope"),
        "componentRef 'comp-nope' names no component",
    ),
    "a missing executor label": (
        lambda s: s["components"]["comp-report"].pop("executorLabel"),
        "component 'comp-report' has no executorLabel",
    ),
    "an executor label naming nothing": (
        lambda s: s["components"]["comp-report"].update(executorLabel="exec-nope"),
        "executorLabel 'exec-nope' names no executor",
    ),
    "a dangling dependency": (
        lambda s: s["root"]["dag"]["tasks"]["report"]["dependentTasks"].append("ghost"),
        "dependentTasks names 'ghost', which is not a task of the DAG",
    ),
    "a dangling producer": (
        lambda s: s["root"]["dag"]["tasks"]["report"]["inputs"]["artifacts"]["fit"][
            "taskOutputArtifact"
        ].update(producerTask="ghost"),
        "input 'fit' names producerTask 'ghost'",
    ),
    "an output the producer lacks": (
        lambda s: s["root"]["dag"]["tasks"]["report"]["inputs"]["parameters"]["old"][
            "taskOutputParameter"
        ].update(outputParameterKey="nope"),
        "reads output 'nope' of task 'six-old', which has no such output",
    ),
    "a cycle": (
        lambda s: (
            s["root"]["dag"]["tasks"]["make-data"].setdefault("dependentTasks", []).append("report")
        ),
        "dependency cycle",
    ),
}


@pytest.mark.parametrize("mutant", list(MUTANTS))
def test_the_integrity_check_rejects_what_kfp_accepts(repository, tmp_path, mutant):
    from kfp.components import load_component_from_text

    spec, platform = _example(repository, tmp_path)
    broken = copy.deepcopy(spec)
    mutate, message = MUTANTS[mutant]
    mutate(broken)
    check.strict_parse(broken, platform)  # kfp's protobuf parse lets it through
    if mutant != "a cycle":  # and so does its loader (a cycle makes it recurse forever)
        load_component_from_text(yaml.safe_dump(broken))
    found = check.problems(broken, platform)
    assert any(message in problem for problem in found), found
    text = "\n---\n".join(yaml.safe_dump(d) for d in (broken, platform))
    with pytest.raises(CompileError, match="inconsistent"):
        check.validate(text, "example")


def test_a_cycle_is_reported_with_its_path(repository, tmp_path):
    spec, _ = _example(repository, tmp_path)
    tasks = spec["root"]["dag"]["tasks"]
    tasks["make-data"]["dependentTasks"] = ["report"]
    (cycle,) = [p for p in check.problems(spec) if "cycle" in p]
    # each task waits for the next: the path closes where it starts
    assert "fit-least-squares -> make-data -> report -> fit-least-squares" in cycle


def test_platform_config_for_an_unknown_executor_is_rejected(repository, tmp_path):
    spec, platform = _example(repository, tmp_path)
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    executors["exec-nope"] = executors["exec-report"]
    assert any("exec-nope" in p for p in check.problems(spec, platform))


# ---------------------------------------------------------------------------------------------
# what maps to what


def test_parameters_artifacts_and_outputs_map_to_kfp_types(repository, tmp_path):
    spec, _ = _documents(_compiled(repository, "features", tmp_path))
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["start"] == {"parameterType": "STRING"}  # a date: an ISO string
    assert params["source"]["parameterType"] == "STRING"
    assert params["lookback_days"] == {"defaultValue": 31.0, "isOptional": True,
                                       "parameterType": "NUMBER_INTEGER"}  # fmt: skip
    ingest = spec["components"]["comp-ingest"]["outputDefinitions"]
    # a NamedTuple: one output each; a DataFrame is a Dataset, a list a LIST parameter
    assert ingest["artifacts"]["rows"]["artifactType"]["schemaTitle"] == "system.Dataset"
    assert ingest["parameters"]["lookback"]["parameterType"] == "LIST"
    written = spec["components"]["comp-write-table"]["outputDefinitions"]
    assert written["parameters"]["output"]["parameterType"] == "NUMBER_INTEGER"
    training, _ = _documents(_compiled(repository, "training", tmp_path))
    fitted = training["components"]["comp-fit-linear"]["outputDefinitions"]["artifacts"]
    assert fitted["output"]["artifactType"]["schemaTitle"] == "system.Model"
    scored = training["components"]["comp-score-linear"]["outputDefinitions"]["artifacts"]
    assert scored["output"]["artifactType"]["schemaTitle"] == "system.Metrics"


def test_after_edges_become_task_dependencies(repository, tmp_path):
    spec, _ = _documents(_compiled(repository, "features", tmp_path))
    tasks = spec["root"]["dag"]["tasks"]
    # `with after(written): load_table(...)`: no data edge, an ordering one
    assert "write-table" in tasks["load-table"]["dependentTasks"]
    assert "inputs" not in tasks["load-table"] or "artifacts" not in tasks["load-table"]["inputs"]


def test_a_path_input_is_published_content_checked_against_the_run_parameter(repository, tmp_path):
    spec, _ = _documents(_compiled(repository, "features", tmp_path))
    inline = _task_spec(spec, "ingest")
    source = inline["inputs"]["source"]
    assert source["format"] == "file"
    assert source["compiled_from"] == {"parameter": "source", "value": "flows/data/NYSE.csv"}
    store = Path(repository.artifact_store)
    assert (store / source["sha256"][:2] / source["sha256"]).read_bytes() == (
        ROOT / "flows/data/NYSE.csv"
    ).read_bytes()
    task = spec["root"]["dag"]["tasks"]["ingest"]
    assert task["inputs"]["parameters"]["source"] == {"componentInputParameter": "source"}


def test_host_tasks_alone_get_the_database_secret(repository, tmp_path):
    spec, platform = _documents(
        _compiled(repository, "features", tmp_path, database_secret="db", database_secret_key="u")
    )
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    # the builtin host steps and the flow's own @host_step functions (trading days)
    host = {"write-table", "load-table", "write-table-2", "trading-range", "trading-lookback"}
    for task in spec["root"]["dag"]["tasks"]:
        label = spec["components"][f"comp-{task}"]["executorLabel"]
        secrets = executors.get(label, {}).get("secretAsEnv", [])
        if task in host:
            (secret,) = secrets
            assert secret["secretName"] == "db" and not secret["optional"]
            assert secret["keyToEnv"] == [{"envVar": "CONVEYOR_DATABASE_URL", "secretKey": "u"}]
            assert spec["root"]["dag"]["tasks"][task]["cachingOptions"] == {}  # always run
        else:
            assert secrets == [], task
    host_spec = _task_spec(spec, "write-table")
    assert host_spec["kind"] == "write_table" and host_spec["partition"] == ["start", "end"]
    assert _executor(spec, "write-table")["args"][-2:] == ["--run-id", "{{$.pipeline_job_uuid}}"]


def test_steps_run_their_image_by_digest_and_nothing_installs_at_run_time(repository, tmp_path):
    spec, _ = _documents(_compiled(repository, "training", tmp_path))
    for label, executor in spec["deploymentSpec"]["executors"].items():
        container = executor["container"]
        assert "@sha256:" in container["image"], label
        assert container["command"][:2] == ["/opt/conveyor/env/bin/python", "-c"]
        text = " ".join(container["command"] + container["args"])
        assert "pip install" not in text and "kfp" not in container["command"][2]
    # xgboost and scikit-learn in different images, as locally
    xgb = _executor(spec, "train-xgboost")["image"]
    linear = _executor(spec, "train-linear")["image"]
    assert xgb != linear


PROJECT_STEPS = """
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from conveyor import Metrics, component

class Split(NamedTuple):
    low: pd.DataFrame
    high: pd.DataFrame
    count: int

@component(retries=2, cpu=1.5, memory="512Mi", gpu=1, timeout=90.5)
def heavy(rows: int) -> "pd.DataFrame":
    import pandas as pd
    return pd.DataFrame({"x": range(rows)})

@component(cache=False)
def split(df: "pd.DataFrame") -> Split:
    return Split(df[df.x < 2], df[df.x >= 2], len(df))

@component(env=["API_TOKEN"])
def fixed() -> str:
    return "x"

@component
def read(path: Path, note: str = "n") -> dict:
    return {"size": path.stat().st_size}

@component
def score(low: "pd.DataFrame", count: int, fixed: str) -> Metrics:
    return Metrics(n=count)
"""

PROJECT_FLOW = """
from conveyor import after, pipeline
from steps.ops import fixed, heavy, read, score, split

@pipeline
def options(rows: int = 4, flag: bool = False, ratio: float = 0.5, tags: list = [],
            extra: dict = {}, name: str = "x"):
    parts = split(heavy(rows))
    value = fixed()
    with after(value):
        read("data/in.txt")
    return score(parts.low, parts.count, value)
"""


@pytest.fixture
def options_project(project, monkeypatch):
    monkeypatch.setenv("CONVEYOR_DATABASE_URL", "none")
    project.write("steps/ops.py", PROJECT_STEPS)
    project.write("flows/options.py", PROJECT_FLOW)
    project.write("data/in.txt", "hello")
    return project


def test_component_options_map_to_the_task(options_project, tmp_path):
    settings = options_project.settings
    path = _compiled(settings, "options", tmp_path, env_secret="step-env",
                     store_secret="store-creds")  # fmt: skip
    spec, platform = _documents(path)
    assert check.problems(spec, platform) == []
    tasks = spec["root"]["dag"]["tasks"]
    heavy = tasks["heavy"]
    assert heavy["retryPolicy"] == {"backoffDuration": "1s", "backoffFactor": 2.0,
                                    "backoffMaxDuration": "30s", "maxRetryCount": 2}  # fmt: skip
    resources = _executor(spec, "heavy")["resources"]
    assert resources["resourceCpuRequest"] == resources["resourceCpuLimit"] == "1500m"
    assert resources["resourceMemoryRequest"] == resources["resourceMemoryLimit"] == "512Mi"
    assert resources["accelerator"]["resourceCount"] == "1"
    assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert executors["exec-heavy"]["activeDeadlineSeconds"] == "91"  # the pod's deadline
    # env= comes from the named secret, to the task that lists it only
    (env,) = [s for s in executors["exec-fixed"]["secretAsEnv"] if s["secretName"] == "step-env"]
    assert env["keyToEnv"] == [{"envVar": "API_TOKEN", "secretKey": "API_TOKEN"}]
    assert not [s for s in executors["exec-heavy"].get("secretAsEnv", [])
                if s["secretName"] == "step-env"]  # fmt: skip
    # cache=False: KFP must not cache it either
    assert tasks["split"]["cachingOptions"] == {}
    # only a task whose every input is in its spec gets a compile-time cache key
    assert tasks["fixed"]["cachingOptions"]["cacheKey"].startswith("conveyor-")
    assert tasks["read"]["cachingOptions"]["cacheKey"].startswith("conveyor-")
    assert "cacheKey" not in heavy["cachingOptions"] and heavy["cachingOptions"]["enableCache"]
    assert "cacheKey" not in tasks["score"]["cachingOptions"]
    assert "fixed" in tasks["read"]["dependentTasks"]  # after()
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert {k: v["parameterType"] for k, v in params.items()} == {
        "rows": "NUMBER_INTEGER", "flag": "BOOLEAN", "ratio": "NUMBER_DOUBLE", "tags": "LIST",
        "extra": "STRUCT", "name": "STRING",
    }  # fmt: skip
    split_out = spec["components"]["comp-split"]["outputDefinitions"]
    assert set(split_out["artifacts"]) == {"low", "high"}
    assert split_out["parameters"]["count"]["parameterType"] == "NUMBER_INTEGER"
    # a store secret reaches every task (a local store has no variables to pass: none here)
    assert not any("store-creds" in json.dumps(e) for e in executors.values())
    literal = _task_spec(spec, "read")
    assert literal["parameters"]["note"] == {"value": "n"}
    assert literal["inputs"]["path"]["format"] == "file"
    assert "compiled_from" not in literal["inputs"]["path"]  # a literal path: nothing to check


def test_a_component_listing_env_needs_a_secret_to_come_from(options_project, tmp_path):
    with pytest.raises(CompileError, match=r"step 'fixed' lists env=\['API_TOKEN'\].*--env-secret"):
        _compiled(options_project.settings, "options", tmp_path)


def test_a_rebuilt_environment_changes_the_image_and_the_cache_key(options_project, tmp_path):
    settings = options_project.settings
    before, _ = _documents(_compiled(settings, "options", tmp_path, env_secret="e"))
    out = tmp_path / "rebuilt.yaml"
    compile_pipeline("options", output=out, settings=settings, images=FakeImages(salt="new base"),
                     env_secret="e")  # fmt: skip
    after, _ = _documents(out)
    for task in ("fixed", "heavy"):
        assert _executor(before, task)["image"] != _executor(after, task)["image"]
        assert _task_spec(before, task)["cache_key"] != _task_spec(after, task)["cache_key"]
    key = before["root"]["dag"]["tasks"]["fixed"]["cachingOptions"]["cacheKey"]
    assert key != after["root"]["dag"]["tasks"]["fixed"]["cachingOptions"]["cacheKey"]
    # and an unchanged pipeline compiles to the same keys
    again, _ = _documents(_compiled(settings, "options", tmp_path / "again", env_secret="e"))
    assert again["root"]["dag"]["tasks"]["fixed"]["cachingOptions"]["cacheKey"] == key


UNSUPPORTED_PARAM = """
from conveyor import component, pipeline

@component
def show(value: str) -> str:
    return value

@pipeline
def mixed(value: int | str = 1):
    return show("x")
"""


def test_a_parameter_kfp_cannot_type_fails_at_compile_time(project, monkeypatch, tmp_path):
    monkeypatch.setenv("CONVEYOR_DATABASE_URL", "none")
    project.write("flows/mixed.py", UNSUPPORTED_PARAM)
    with pytest.raises(CompileError, match=r"pipeline 'mixed', parameter 'value': type json has "
                                           r"no KFP parameter type"):  # fmt: skip
        _compiled(project.settings, "mixed", tmp_path)


CLASHING = """
from conveyor import component, pipeline

@component
def step() -> int:
    return 1

@pipeline
def clash():
    step.with_options(name="a_b")()
    step.with_options(name="a-b")()
"""


def test_steps_that_become_one_kfp_task_name_fail_at_compile_time(project, monkeypatch, tmp_path):
    monkeypatch.setenv("CONVEYOR_DATABASE_URL", "none")
    project.write("flows/clash.py", CLASHING)
    with pytest.raises(CompileError, match="steps 'a_b' and 'a-b' both become KFP task 'a-b'"):
        _compiled(project.settings, "clash", tmp_path)


MAPPED = """
from conveyor import component, pipeline

@component
def square(x: int) -> int:
    return x * x

@component
def total(values: list[int]) -> int:
    return sum(values)

@pipeline
def squares(xs: list = [1, 2, 3]):
    return total(square.map(x=xs))

@pipeline
def listed():
    return total([square(1), square(2)])
"""


def test_maps_and_collected_lists_are_refused_before_anything_is_built(project, monkeypatch,
                                                                        tmp_path):  # fmt: skip
    monkeypatch.setenv("CONVEYOR_DATABASE_URL", "none")
    project.write("flows/mapped.py", MAPPED)
    with pytest.raises(CompileError, match=r"pipeline 'squares' maps square.map\(...\), which "
                                           r"does not compile for Kubeflow yet"):  # fmt: skip
        _compiled(project.settings, "squares", tmp_path)
    with pytest.raises(CompileError, match=r"'listed' collects a list of step outputs into "
                                           r"total\(values=...\)"):  # fmt: skip
        _compiled(project.settings, "listed", tmp_path)


def test_an_unknown_target_is_refused(repository):
    with pytest.raises(CompileError, match="unknown target 'argo'"):
        compile_pipeline("example", target="argo", settings=repository, images=FakeImages())


def test_the_host_image_holds_conveyors_database_dependencies(tmp_path):
    from packaging.requirements import Requirement

    from conveyor.ops.compile import host_requirements

    local = {Requirement(r).name: Requirement(r) for r in host_requirements(str(tmp_path))}
    assert {"sqlalchemy", "alembic", "psycopg", "pandas", "pyarrow", "fsspec"} <= set(local)
    assert "uv" not in local and "prefect" not in local and "kfp" not in local
    assert all(r.marker is None for r in local.values())  # an extra's marker would drop it
    remote = {Requirement(r).name for r in host_requirements("s3://bucket/store")}
    assert "s3fs" in remote


def test_a_step_that_cannot_reach_a_remote_store_fails_at_compile_time(
    options_project, monkeypatch, tmp_path
):
    # on Kubeflow a step fetches its code from the store itself: s3fs must be in its image
    monkeypatch.setenv("CONVEYOR_ARTIFACTS", "s3://bucket/conveyor")
    expected = (
        r"step 'heavy': on Kubeflow a step reads the artifact store s3://bucket/conveyor "
        r"itself, so its environment needs fsspec, s3fs.*add 's3fs'"
    )
    with pytest.raises(CompileError, match=expected):
        _compiled(options_project.settings, "options", tmp_path, env_secret="e")


PATH_FLOW = """
from conveyor import pipeline
from steps.ops import read

@pipeline
def reads(path: str = "data/in.txt"):
    return read(path)
"""


def test_a_path_named_by_a_parameter_never_gets_a_compile_time_cache_key(options_project,
                                                                         tmp_path):  # fmt: skip
    # a cache hit would skip the check that the run names the compiled file
    options_project.write("flows/reads.py", PATH_FLOW)
    spec, _ = _documents(_compiled(options_project.settings, "reads", tmp_path))
    assert "cacheKey" not in spec["root"]["dag"]["tasks"]["read"]["cachingOptions"]
    inline = _task_spec(spec, "read")
    assert inline["inputs"]["path"]["compiled_from"] == {"parameter": "path",
                                                         "value": "data/in.txt"}  # fmt: skip
