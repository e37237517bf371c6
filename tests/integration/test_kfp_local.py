"""Compiled specs run: `kfp.local` with its DockerRunner executes the YAML `conveyor compile`
wrote, on this machine's Docker engine, with the step images pushed to a loopback registry and
named by digest (kfp.local pulls them from there; nothing else is reachable).

No Kubernetes API runs here (no k3s, kind or minikube; Docker Hub is unreachable), so this is
the closest a test gets to a cluster: the same spec, placeholders, executor input and
`executor_output.json` handling as the KFP backend's launcher, minus the Kubernetes platform
config (kfp.local ignores secrets and deadlines; the database URL is given to its containers
directly). kfp.local can report a failed container as succeeded (kubeflow/pipelines#13332), so
these tests check results (values, database rows), never task states alone.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from conveyor.backends.kfp.check import documents
from conveyor.engine.settings import Settings
from tests.conftest import need
from tests.integration.test_docker_runner import _engine

pytestmark = [
    pytest.mark.docker,
    pytest.mark.slow,
    # kfp.local ignores what only a cluster honours (display names, resources): it says so
    pytest.mark.filterwarnings("ignore:.*have no effect in the current local runner"),
]

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _answers(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy
    try:
        with opener.open(url, timeout=2) as response:
            return int(response.status) == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    client, reason = _engine()
    need(client is not None, reason)
    need(importlib_ok("kfp.local"), "kfp is not installed (pip install 'conveyor[kfp]')")
    base = Settings.load(ROOT).base_image
    try:
        client.images.get(base)
    except Exception:
        need(False, f"base image {base} is missing; build it with containers/build-base-image.sh")
    yield client
    client.close()


def importlib_ok(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, engine: Any) -> Iterator[str]:
    """A registry (Debian's docker-registry) on a loopback port: `127.0.0.1:PORT/conveyor`."""
    binary = shutil.which("docker-registry")
    need(binary is not None, "docker-registry is not installed (apt-get install docker-registry)")
    assert binary is not None
    root = tmp_path_factory.mktemp("kfp-registry")
    port = _free_port()
    (root / "config.yml").write_text(
        f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {root / 'data'}\nhttp:\n  addr: 127.0.0.1:{port}\n"
    )
    log = (root / "registry.log").open("w")
    proc = subprocess.Popen([binary, "serve", str(root / "config.yml")], stdout=log,
                            stderr=subprocess.STDOUT)  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        if _answers(f"http://127.0.0.1:{port}/v2/"):
            break
        time.sleep(0.2)
    assert proc.poll() is None, (root / "registry.log").read_text()
    host = f"127.0.0.1:{port}"
    try:
        yield f"{host}/conveyor"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        # the names pushing and kfp.local's pulls gave existing images; the images stay
        for image in engine.images.list():
            for name in [*image.tags, *(image.attrs.get("RepoDigests") or [])]:
                if name.startswith(f"{host}/"):
                    try:
                        engine.images.remove(name)
                    except Exception as exc:  # tidying up must not hide the outcome
                        logging.getLogger(__name__).warning("could not remove %s: %s", name, exc)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """conveyor's state for the module (its locks: every test resolves them once)."""
    return tmp_path_factory.mktemp("kfp-home")


@pytest.fixture
def kfp_root(tmp_path: Path) -> Iterator[Path]:
    """kfp.local's pipeline root; the artifact store lives inside it, because kfp.local mounts
    only the pipeline root into its containers (a cluster would use s3:// or gs://)."""
    root = tmp_path / "kfp-root"
    (root / "store").mkdir(parents=True)
    yield root
    shutil.rmtree(root, ignore_errors=True)  # written by containers running as root


def _environment(home: Path, root: Path, database: str) -> dict[str, str]:
    return {"CONVEYOR_HOME": str(home), "CONVEYOR_ARTIFACTS": str(root / "store"),
            "CONVEYOR_DATABASE_URL": database}  # fmt: skip


class _Env:
    """Set variables for a block, restoring them after (settings are read from them)."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.saved: dict[str, str | None] = {}

    def __enter__(self) -> Settings:
        for key, value in self.values.items():
            self.saved[key] = os.environ.get(key)
            os.environ[key] = value
        return Settings.load(ROOT)

    def __exit__(self, *_: object) -> None:
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        import sys

        database = sys.modules.get("conveyor.db.database")
        if database is not None:
            database.dispose_shared()


def _conveyor(*args: str) -> str:
    """Run the `conveyor` command in the repository (with this process's variables)."""
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "conveyor.cli", *args], cwd=ROOT, capture_output=True, text=True,
        timeout=3600, env={**os.environ, "COLUMNS": "250"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _push(registry: str, *names: str, params: tuple[str, ...] = ()) -> None:
    _conveyor("images", "push", *names, "--registry", registry, *(f"--param={p}" for p in params))


def _run_kfp(path: Path, root: Path, params: dict[str, Any], database: str | None = None) -> Any:
    """Run a compiled spec under kfp.local's DockerRunner; returns the pipeline task."""
    from kfp import local
    from kfp.components import load_component_from_file

    environment = {"CONVEYOR_DATABASE_URL": database} if database else {}
    # host network: the loopback registry and PostgreSQL; root: kfp.local makes the output
    # folders (in the pipeline root) as this process's user, and the step images run as 1000
    runner = local.DockerRunner(network_mode="host", user="0:0", environment=environment)
    local.init(runner=runner, pipeline_root=str(root), raise_on_error=True)
    return load_component_from_file(str(path))(**params)


def test_the_compiled_example_runs_under_kfp_local_and_returns_what_a_local_run_does(
    engine, registry, kfp_root, home, tmp_path
):
    import conveyor

    with _Env(_environment(home, kfp_root, "none")) as settings:
        local = conveyor.run("example", {"rows": 500, "seed": 3}, runner="docker",
                             engine="local", settings=settings, raise_on_failure=True)  # fmt: skip
        _push(registry, "example")
        out = tmp_path / "example.yaml"
        wrote = _conveyor("compile", "example", "--target", "kfp", "-o", str(out),
                          "--registry", registry)  # fmt: skip
    assert f"wrote {out} (5 tasks, 4 images)" in wrote
    spec, _ = documents(out.read_text())
    for executor in spec["deploymentSpec"]["executors"].values():
        assert executor["container"]["image"].startswith(f"{registry}/conveyor-env@sha256:")
    task = _run_kfp(out, kfp_root, {"rows": 500, "seed": 3})
    assert task.output == local.output  # the report: both six pins, the same fit
    assert task.output["six_old"] == "1.16.0" and task.output["six_new"] == "1.17.0"
    # every value a step produced is also in the store under its hash (as a local run's)
    store = kfp_root / "store"
    for step in ("make_data", "fit_least_squares"):
        sha = local.steps[step].artifacts["output"].sha256
        assert (store / sha[:2] / sha).is_file(), step


def test_compiling_an_image_never_pushed_fails_naming_the_push(engine, kfp_root, tmp_path):
    import conveyor
    from conveyor.errors import CompileError

    # a home and a store of its own: no push record in it
    environment = _Env(_environment(tmp_path / "home", kfp_root, "none"))
    with environment as settings, pytest.raises(CompileError) as failed:
        conveyor.compile("example", settings=settings)
    message = str(failed.value)
    assert "pipeline 'example', step" in message and "was never pushed" in message
    assert "conveyor images push example" in message


# ---------------------------------------------------------------------------------------------
# the reference flows, on PostgreSQL: the same rows as the local engine writes

HISTORY = (date(1962, 12, 3), date(1967, 1, 31))  # features for every date predicted
TRAINED_UNTIL = date(1966, 12, 30)
PREDICTED = (date(1967, 1, 3), date(1967, 1, 31))
# a floor the short history's candidates all pass: the gate must promote one, or there is no
# production model to predict with
TRAINING = {"as_of": TRAINED_UNTIL.isoformat(), "floor": -1000.0}
TABLES = ("raw_nyse", "features", "predictions", "drift")


def _tables(settings: Settings) -> dict[str, Any]:
    from flows.report import _frame

    found = {}
    for table in TABLES:
        frame = _frame(settings, table)
        keys = [c for c in ("date", "model_name") if c in frame]
        found[table] = frame.sort_values(keys).reset_index(drop=True)
    return found


def _models(settings: Settings) -> list[tuple[Any, ...]]:
    from conveyor import Registry

    registry = Registry(settings)
    return sorted(
        (r.name, r.version, r.stage, r.params.get("kind"), round(r.metrics.get("r2", 0.0), 9))
        for summary in registry.models()
        for r in registry.versions(summary.name)
    )


@pytest.fixture
def schemas() -> Iterator[tuple[str, str]]:
    from tests.db_support import pg_admin, postgres_problem, schema_url

    problem = postgres_problem()
    need(problem is None, problem or "")
    names = (f"kfp_local_{os.getpid()}", f"kfp_engine_{os.getpid()}")
    for name in names:
        pg_admin(f'DROP SCHEMA IF EXISTS "{name}" CASCADE; CREATE SCHEMA "{name}"')
    try:
        yield schema_url(names[0]), schema_url(names[1])
    finally:
        for name in names:
            pg_admin(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.mark.postgres
def test_the_compiled_reference_flows_write_the_rows_the_local_engine_writes(
    engine, registry, kfp_root, home, tmp_path, schemas
):
    import conveyor

    local_db, kfp_db = schemas
    start, end = (d.isoformat() for d in HISTORY)
    predicted = {"start": PREDICTED[0].isoformat(), "end": PREDICTED[1].isoformat()}

    # the local engine on the venv runner: the same locked packages as the images (whose
    # environments the other tests built already), without a container per step
    with _Env(_environment(home, kfp_root, local_db)) as settings:
        for name, params in (("features", {"start": start, "end": end}),
                             ("training", TRAINING), ("batch_prediction", predicted)):  # fmt: skip
            conveyor.run(name, params, runner="venv", engine="local", settings=settings,
                         raise_on_failure=True)  # fmt: skip
        expected, expected_models = _tables(settings), _models(settings)

    with _Env(_environment(home, kfp_root, kfp_db)) as settings:  # compiled, under kfp.local
        _push(registry, "features", "training")
        seconds = {}
        for name in ("features", "training"):
            result = conveyor.compile(name, output=tmp_path / f"{name}.yaml", settings=settings)
            seconds[name] = result.seconds
        _run_kfp(tmp_path / "features.yaml", kfp_root, {"start": start, "end": end}, kfp_db)
        gate = _run_kfp(tmp_path / "training.yaml", kfp_root, TRAINING, kfp_db)
        assert gate.output["promoted"]  # a production model to predict with
        # the predicting steps run in the promoted model's environment: resolved now, as a
        # local plan resolves it, so they are pushed and compiled after training
        _push(registry, "batch_prediction", params=(f"start={predicted['start']}",))
        result = conveyor.compile(
            "batch_prediction", output=tmp_path / "batch_prediction.yaml",
            params={"start": predicted["start"]}, settings=settings,
        )  # fmt: skip
        seconds["batch_prediction"] = result.seconds
        _run_kfp(tmp_path / "batch_prediction.yaml", kfp_root, predicted, kfp_db)
        got, got_models = _tables(settings), _models(settings)

    import pandas as pd

    for table in TABLES:
        assert len(got[table]) == len(expected[table]) > 0, table
        pd.testing.assert_frame_equal(got[table], expected[table], check_dtype=False)
    assert got_models == expected_models
    logging.getLogger(__name__).info("compile seconds: %s", seconds)
