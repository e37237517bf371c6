"""The docker runner against the real Docker engine, the offline base image and the index."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import conveyor
from conveyor.errors import EnvironmentBuildError
from tests.conftest import need

pytestmark = pytest.mark.docker


def _engine():
    try:
        import docker
    except ImportError:
        return None, "the docker SDK is not installed (pip install 'conveyor[docker]')"
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        return None, f"no Docker engine ({exc}); start one with containers/ensure-docker.sh"
    return client, ""


@pytest.fixture(scope="module")
def engine():
    client, reason = _engine()
    need(client is not None, reason)
    from conveyor.engine.settings import Settings

    base = Settings.load().base_image
    try:
        client.images.get(base)
    except Exception:
        need(False, f"base image {base} is missing; build it with containers/build-base-image.sh")
    yield client
    client.close()


@pytest.fixture(autouse=True)
def _needs_engine(engine):
    return engine


def _run(name, params=None, **options):
    return conveyor.run(name, params or {}, runner="docker", hooks=[], **options)


def _containers(engine, **labels):
    filters = {"label": [f"conveyor.{k}={v}" for k, v in labels.items()]}
    return engine.containers.list(all=True, filters=filters)


SIX = """
import socket
from conveyor import component

@component(packages=["six==1.16.0"])
def old_six() -> dict:
    import six
    return {"six": six.__version__, "host": socket.gethostname()}

@component(packages=["six==1.17.0"])
def new_six() -> dict:
    import six
    return {"six": six.__version__, "host": socket.gethostname()}

@component
def both(a: dict, b: dict) -> dict:
    return {"a": a, "b": b, "host": socket.gethostname()}
"""

FLOW = """
from conveyor import pipeline
from steps.sixes import both, new_six, old_six

@pipeline
def sixes():
    return both(old_six(), new_six())
"""


def test_conflicting_pins_each_step_in_its_own_container(project, engine):
    project.write("steps/sixes.py", SIX)
    project.write("flows/sixes.py", FLOW)
    result = _run("sixes")
    assert result.ok, result.error
    out = result.output
    assert (out["a"]["six"], out["b"]["six"]) == ("1.16.0", "1.17.0")
    hosts = {out["a"]["host"], out["b"]["host"], out["host"]}
    assert len(hosts) == 3 and socket.gethostname() not in hosts  # three containers
    keys = {result.steps[n].environment for n in ("old_six", "new_six", "both")}
    assert len(keys) == 3
    for key in keys:
        assert engine.images.get(f"conveyor-env:{key}").labels["conveyor.env-key"] == key
    assert _containers(engine, run=result.run_id) == []  # every container removed
    again = _run("sixes")
    assert [s.status for s in again.steps.values()] == ["cached"] * 3


STEPS = """
import os, socket, time
from conveyor import component

@component
def offline() -> list:
    seen = []
    for address in (("pypi.org", 443), ("1.1.1.1", 443)):  # by name, and by address (no DNS)
        try:
            socket.create_connection(address, timeout=5).close()
            seen.append("connected")
        except OSError as exc:
            seen.append(f"blocked: {type(exc).__name__}")
    return seen

@component(network=True)
def online() -> str:
    socket.create_connection(("pypi.org", 443), timeout=10).close()
    return "connected"

@component(memory="128Mi")
def hungry() -> int:
    data = b"x" * (1 << 30)  # writes every byte, so the pages are really used
    return len(data)

@component(memory="256Mi", cpu=0.5)
def modest() -> int:
    return len(b"x" * (16 << 20))

@component(timeout=2)
def sleepy() -> int:
    time.sleep(120)
    return 0

@component
def whoami() -> dict:
    return {"uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid()}

@component(env=["MY_TOKEN", "MISSING_VAR"])
def environment() -> dict:
    return dict(os.environ)

@component
def chatty(n: int) -> int:
    import sys
    for i in range(n):
        print(f"line {i}")
    print("to stderr", file=sys.stderr)
    return n

@component
def broken() -> int:
    raise ValueError("bad input in the step")

@component
def exits() -> int:
    os._exit(3)

@component
def nap(seconds: float) -> float:
    start = time.time()
    time.sleep(seconds)
    return start

@component
def frame_rows(n: int) -> "pd.DataFrame":
    import pandas as pd
    return pd.DataFrame({"x": range(n)})

@component
def count_rows(df: "pd.DataFrame") -> int:
    return len(df)
"""

STEP_FLOWS = """
from conveyor import pipeline
from steps.checks import (broken, chatty, count_rows, environment, exits, frame_rows, hungry,
                          modest, nap, offline, online, sleepy, whoami)

@pipeline
def network():
    return {"off": offline(), "on": online()}

@pipeline
def oom():
    return hungry()

@pipeline
def limits():
    return modest()

@pipeline
def timeout():
    return sleepy()

@pipeline
def user():
    return whoami()

@pipeline
def env_vars():
    return environment()

@pipeline
def logs(n: int = 3):
    return chatty(n)

@pipeline
def fails():
    return broken()

@pipeline
def exit_code():
    return exits()

@pipeline
def parallel(seconds: float = 2.0):
    return {"a": nap(seconds), "b": nap.with_options(name="nap_b")(seconds)}

@pipeline
def frames(n: int = 5):
    return count_rows(frame_rows(n))
"""


@pytest.fixture
def checks(project):
    project.write("steps/checks.py", STEPS)
    project.write("flows/checks.py", STEP_FLOWS)
    return project


def test_network_is_off_unless_the_component_asks(checks):
    result = _run("network")
    assert result.ok, result.error
    assert [seen.split(":")[0] for seen in result.output["off"]] == ["blocked", "blocked"]
    assert result.output["on"] == "connected"


def test_memory_limit_is_enforced_and_an_oom_kill_is_named(checks):
    result = _run("oom")
    assert result.status == "failed"
    assert "step 'hungry' failed: killed: out of memory (limit 128Mi)" in result.error
    ok = _run("limits")
    assert ok.ok, ok.error


def test_timeout_kills_and_removes_the_container(checks, engine):
    started = time.monotonic()
    result = _run("timeout")
    assert time.monotonic() - started < 30
    assert result.status == "failed"
    assert "timed out after 2 s" in result.error
    assert _containers(engine, run=result.run_id) == []
    assert _containers(engine, step="sleepy") == []


def test_step_runs_as_a_non_root_user(checks):
    result = _run("user")
    assert result.ok, result.error
    assert result.output["uid"] != 0 and result.output["euid"] != 0
    assert result.output["uid"] == 1000


def test_only_declared_variables_reach_the_container(checks, monkeypatch):
    monkeypatch.setenv("MY_TOKEN", "t0k3n")
    monkeypatch.setenv("DATABASE_URL", "postgresql://secret@db/prod")
    monkeypatch.setenv("CONVEYOR_DATABASE_URL", "postgresql://secret@db/prod")
    result = _run("env_vars")
    assert result.ok, result.error
    seen = result.output
    assert seen["MY_TOKEN"] == "t0k3n"
    assert "DATABASE_URL" not in seen and "MISSING_VAR" not in seen
    assert not [k for k in seen if k.startswith("CONVEYOR_")]
    assert seen["PATH"].startswith("/opt/conveyor/env/bin:")  # the image's, not the host's
    assert "secret" not in json.dumps(seen)


def test_output_is_streamed_to_the_step_log(checks):
    result = _run("logs", {"n": 3})
    assert result.ok, result.error
    text = Path(result.steps["chatty"].log_path).read_text()
    assert "line 0\nline 1\nline 2\n" in text
    assert "to stderr" in text


def test_a_failing_step_shows_its_traceback_with_host_paths(checks):
    result = _run("fails")
    assert result.status == "failed"
    assert "step 'broken' failed: ValueError: bad input in the step" in result.error
    assert str(checks.root / "steps" / "checks.py") in result.error
    assert "/conveyor/project" not in result.error


def test_a_non_zero_exit_without_a_result_fails(checks):
    result = _run("exit_code")
    assert result.status == "failed"
    assert "exit code 3" in result.error


def test_independent_steps_run_in_parallel_containers_bounded_by_max_parallel(checks):
    both = _run("parallel", {"seconds": 2.0}, max_parallel=2)
    assert both.ok, both.error
    assert abs(both.output["a"] - both.output["b"]) < 1.5  # started together
    one = _run("parallel", {"seconds": 1.0}, max_parallel=1, cache=False)
    assert one.ok, one.error
    assert abs(one.output["a"] - one.output["b"]) >= 1.0  # one after the other


def test_dataframes_move_between_containers(checks):
    result = _run("frames", {"n": 7})
    assert result.ok, result.error
    assert result.output == 7


REUSE = """
from conveyor import component

@component(packages=["six==1.16.0"])
def first() -> str:
    import six
    return "first " + six.__version__

@component(packages=["six==1.16.0"])
def second(x: str) -> str:
    return x + " then second"
"""

REUSE_FLOW = """
from conveyor import pipeline
from steps.reuse import first, second

@pipeline
def reuse():
    return second(first())
"""


def _plan(project, name):
    from conveyor.ops.discovery import resolve_pipeline
    from conveyor.ops.run import build_engine

    for module in [m for m in sys.modules if m.startswith(("steps.", "flows."))]:
        del sys.modules[module]  # pick up edited files
    engine = build_engine(project.settings, runner="docker", hooks=[])
    pipeline = resolve_pipeline(name, project.settings)
    return engine, pipeline, engine.plan(pipeline, {})


def test_same_packages_share_one_image_and_editing_code_never_rebuilds(project, engine):
    project.write("steps/reuse.py", REUSE)
    project.write("flows/reuse.py", REUSE_FLOW)
    local, pipeline, plan = _plan(project, "reuse")
    assert len(plan.environments) == 1  # both components: one environment, one image
    env = plan.steps["first"].environment
    assert env is plan.steps["second"].environment
    image_id = engine.images.get(env.location).id
    result = local.run(pipeline, {}, plan=plan)
    local.runner.close()
    assert result.ok, result.error
    assert result.output == "first 1.16.0 then second"

    project.write("steps/reuse.py", REUSE.replace('x + " then second"', 'x + " edited"'))
    local, pipeline, plan = _plan(project, "reuse")
    again = plan.steps["second"].environment
    assert (again.key, again.built) == (env.key, False)
    assert local.runner.builder.builds == 0
    result = local.run(pipeline, {}, plan=plan)
    local.runner.close()
    assert result.ok, result.error
    assert result.output == "first 1.16.0 edited"
    assert result.steps["first"].status == "cached"
    assert result.steps["second"].reason == "code changed (steps/reuse.py: second)"
    assert engine.images.get(env.location).id == image_id


def test_failed_build_names_the_requirement_and_leaves_no_image(project, engine):
    from conveyor.runners.docker import DockerRunner
    from conveyor.runners.images import DockerEnvironmentSpec

    runner = DockerRunner(project.settings)
    spec = DockerEnvironmentSpec(("six==99.0.1",), "3.11", image=project.settings.base_image)
    lock_dir = project.settings.lock_dir
    lock_dir.mkdir(parents=True, exist_ok=True)
    # a lock naming a version the index does not have: resolution passed earlier, install fails
    (lock_dir / f"{spec.lock_id}.txt").write_text("six==99.0.1\n")
    with pytest.raises(EnvironmentBuildError) as info:
        runner.prepare({spec: ["impossible"]})
    message = str(info.value)
    assert "could not build the image for step impossible" in message
    assert "six==99.0.1" in message
    assert "--- installer output ---" in message
    tagged = [t for i in engine.images.list(filters={"label": "conveyor.env-key"}) for t in i.tags]
    lock = runner.locker.existing(spec)
    key = runner.builder.key(runner.builder.base(spec.image), lock)
    assert f"conveyor-env:{key}" not in tagged
    assert engine.images.list(filters={"label": f"conveyor.build-stage={key}"}) == []


def test_an_image_that_cannot_import_its_codecs_fails_the_build(project, engine):
    """A stale lock (pyarrow 26 with NumPy 1) installs in the image but fails the import check."""
    from conveyor.runners.docker import DockerRunner
    from conveyor.runners.images import DockerEnvironmentSpec

    runner = DockerRunner(project.settings)
    spec = DockerEnvironmentSpec(
        ("pandas==2.2.0", "pyarrow"), "3.11", image=project.settings.base_image
    )
    lock_dir = project.settings.lock_dir
    lock_dir.mkdir(parents=True, exist_ok=True)
    (lock_dir / f"{spec.lock_id}.txt").write_text(
        "numpy==1.26.4\npandas==2.2.0\npyarrow==26.0.1\npython-dateutil==2.9.0.post0\n"
        "pytz==2024.1\nsix==1.16.0\ntzdata==2024.1\n"
    )
    with pytest.raises(EnvironmentBuildError) as info:
        runner.prepare({spec: ["old_frame"]})
    message = str(info.value)
    assert "the environment for step old_frame installed but cannot import" in message
    assert "import pyarrow" in message and "NumPy 2" in message
    assert "numpy 1.26.4" in message and "pyarrow 26.0.1" in message
    lock = runner.locker.existing(spec)
    key = runner.builder.key(runner.builder.base(spec.image), lock)
    assert not runner.builder.exists(f"conveyor-env:{key}")


PREPARE = """
import json, sys
from conveyor.runners.docker import DockerRunner
from conveyor.runners.images import DockerEnvironmentSpec
from conveyor.engine.settings import Settings

settings = Settings.load(sys.argv[1])
runner = DockerRunner(settings)
spec = DockerEnvironmentSpec(("six==1.15.0",), "3.11", image=settings.base_image)
env = runner.prepare({spec: ["s"]})[spec]
print(json.dumps([env.built, env.key]))
"""


def test_two_processes_needing_one_image_build_it_once(project, engine):
    from conveyor.runners.docker import DockerRunner
    from conveyor.runners.images import DockerEnvironmentSpec

    settings = project.settings
    spec = DockerEnvironmentSpec(("six==1.15.0",), "3.11", image=settings.base_image)
    key = DockerRunner(settings).prepare({spec: ["s"]})[spec].key
    engine.images.remove(f"conveyor-env:{key}", force=True)
    procs = [
        subprocess.Popen([sys.executable, "-c", PREPARE, str(project.root)],
                         stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]  # fmt: skip
    outputs = [json.loads(p.communicate(timeout=600)[0]) for p in procs]
    assert sorted(o[0] for o in outputs) == [False, True]
    assert {o[1] for o in outputs} == {key}
    assert len(engine.images.list(filters={"label": f"conveyor.env-key={key}"})) == 1


def test_close_kills_and_removes_live_containers(checks, engine):
    from conveyor.ops.discovery import resolve_pipeline
    from conveyor.ops.run import build_engine

    local = build_engine(checks.settings, runner="docker", hooks=[])
    pipeline = resolve_pipeline("parallel", checks.settings)
    plan = local.plan(pipeline, {"seconds": 60.0})
    results = []
    worker = threading.Thread(target=lambda: results.append(local.run(pipeline, {}, plan=plan)))
    worker.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(_containers(engine, step="nap")) == 0:
        time.sleep(0.1)
    assert _containers(engine, step="nap"), "the step's container never appeared"
    time.sleep(0.5)
    local.runner.close()  # what an interrupted run (Ctrl-C) calls
    worker.join(timeout=30)
    assert results and results[0].status == "failed"
    assert _containers(engine, run=results[0].run_id) == []


def test_orphans_of_a_dead_orchestrator_are_removed_at_start(project, engine):
    from conveyor.runners.docker import OWNER_LABEL, DockerRunner

    base = project.settings.base_image
    dead = f"{socket.gethostname()}/{2**22 + 17}/1"  # a pid above Linux's pid_max
    alive = f"{socket.gethostname()}/{os.getpid()}/"
    orphan = engine.containers.create(base, ["sleep", "300"], labels={OWNER_LABEL: dead})
    keeper = engine.containers.create(base, ["sleep", "300"], labels={OWNER_LABEL: alive})
    try:
        DockerRunner(project.settings).builder  # noqa: B018 (first use cleans up)
        names = {c.id for c in engine.containers.list(all=True)}
        assert orphan.id not in names
        assert keeper.id in names
    finally:
        for container in (orphan, keeper):
            try:
                container.remove(force=True)
            except Exception:
                pass


def test_cli_images_build_list_prune(project, engine):
    from typer.testing import CliRunner

    from conveyor.cli import _register, app

    _register()
    project.write("steps/reuse.py", REUSE)
    project.write("flows/reuse.py", REUSE_FLOW)
    cli = CliRunner()
    built = cli.invoke(app, ["images", "build", "reuse"])
    assert built.exit_code == 0, built.output
    assert "(steps first, second)" in built.output
    assert "1 needed" in built.output
    key = built.output.split("conveyor-env:", 1)[1].split()[0]
    listed = cli.invoke(app, ["images", "list"], env={"COLUMNS": "250"})
    assert listed.exit_code == 0, listed.output
    row = next(line for line in listed.output.splitlines() if key in line)
    assert "six==1.16.0" in row and "yes" in row
    pruned = cli.invoke(app, ["images", "prune", "--dry-run"])
    assert pruned.exit_code == 0, pruned.output
    assert key not in pruned.output  # this project uses it
    everything = cli.invoke(app, ["images", "prune", "--all", "--dry-run"])
    assert f"would remove {key}" in everything.output
    engine.images.get(f"conveyor-env:{key}")  # a dry run removes nothing


IMAGES = """
from conveyor import component

@component(packages=["six==1.16.0"])
def default_base() -> str:
    return "default"

@component(packages=["six==1.16.0"], image="conveyor-test/alias:1")
def other_base() -> str:
    import six
    return six.__version__

@component(image="conveyor-test/missing:1")
def missing_base() -> str:
    return "never"
"""

IMAGE_FLOWS = """
from conveyor import pipeline
from steps.bases import default_base, missing_base, other_base

@pipeline
def bases():
    return {"a": default_base(), "b": other_base()}

@pipeline
def missing():
    return missing_base()
"""


def test_component_image_picks_the_base_and_the_key_follows_its_content(project, engine):
    base = engine.images.get(project.settings.base_image)
    base.tag("conveyor-test/alias", "1")  # another name for the same image
    try:
        project.write("steps/bases.py", IMAGES)
        project.write("flows/bases.py", IMAGE_FLOWS)
        result = _run("bases")
        assert result.ok, result.error
        assert result.output == {"a": "default", "b": "1.16.0"}
        # same content, same packages: one key, whatever the base is called
        assert result.steps["default_base"].environment == result.steps["other_base"].environment
        with pytest.raises(EnvironmentBuildError) as info:
            _run("missing")
        assert "base image conveyor-test/missing:1 is not on this engine" in str(info.value)
    finally:
        engine.images.remove("conveyor-test/alias:1")


SLOW_FLOW = """
from conveyor import pipeline
from steps.checks import nap

@pipeline
def slow():
    return nap(120.0)
"""


def test_ctrl_c_of_the_orchestrator_removes_its_containers(checks, engine):
    import signal

    checks.write("flows/slow.py", SLOW_FLOW)
    # the local engine: this is the runner's cleanup (a session Prefect API would make `auto`
    # pick Prefect, whose interrupt path is its own). SIGINT as a terminal has it: a test run
    # started in the background (`.ci/run &`) inherits SIGINT ignored, and Python keeps that
    proc = subprocess.Popen(
        [sys.executable, "-m", "conveyor.cli", "run", "slow", "--runner", "docker",
         "--engine", "local"],
        cwd=checks.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _containers(engine, step="nap"):
            time.sleep(0.2)
        running = _containers(engine, step="nap")
        assert running, "the step's container never appeared"
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=60)[0]
    finally:
        proc.kill()
    assert proc.returncode == 130, output
    assert [c for c in _containers(engine, step="nap") if c.id == running[0].id] == []


PROBE = """
import os
from conveyor import component

@component
def frame(n: int) -> "pd.DataFrame":
    import pandas as pd

    return pd.DataFrame({"x": range(n)})

@component
def probe(df: "pd.DataFrame", database: str, other_run: str, project_file: str) -> dict:
    def tried(action, path):
        try:
            action(path)
        except OSError as exc:
            return type(exc).__name__
        return "allowed"

    code = sorted(
        os.path.relpath(os.path.join(folder, name), "/conveyor/code")
        for folder, _, names in os.walk("/conveyor/code") for name in names
    )
    return {
        "rows": len(df),
        "database": tried(lambda p: open(p, "rb").read(1), database),
        "other_run": tried(os.listdir, other_run),
        "project": tried(os.listdir, os.path.dirname(project_file)),
        "project_file": tried(lambda p: open(p).read(1), project_file),
        "conveyor": sorted(os.listdir("/conveyor")) if os.path.isdir("/conveyor") else [],
        "code": [c for c in code if "__pycache__" not in c],
    }
"""

PROBE_FLOW = """
from conveyor import pipeline
from steps.probe import frame, probe

@pipeline
def probing(database: str, other_run: str, project_file: str):
    return probe(frame(3), database, other_run, project_file)
"""


def test_a_project_in_a_0700_folder_runs_and_a_step_sees_only_its_own(project, engine):
    """No project mount: a private project folder works, and the step cannot reach the
    database, another run's folder or the project tree (it probes each from inside)."""
    project.write("steps/probe.py", PROBE)
    project.write("flows/probe.py", PROBE_FLOW)
    project.write("data/secret.csv", "a,b\n1,2\n")
    first = conveyor.run(
        "probing", {"database": "x", "other_run": "x", "project_file": "x"}, runner="inprocess"
    )  # fmt: skip  (records a run folder to look for)
    assert first.ok, first.error
    database = project.root / ".conveyor" / "conveyor.db"
    other_run = next((project.root / ".conveyor" / "runs").iterdir())
    assert database.is_file() and other_run.is_dir()
    project.root.chmod(0o700)  # uid 1000, the step user, could not even enter it
    try:
        result = conveyor.run(
            "probing",
            {"database": str(database), "other_run": str(other_run),
             "project_file": str(project.root / "steps" / "probe.py")},
            runner="docker", cache=False,
        )  # fmt: skip
    finally:
        project.root.chmod(0o755)
    assert result.ok, result.error
    seen = result.output
    assert seen["rows"] == 3
    assert seen["database"] == seen["other_run"] == "FileNotFoundError"
    assert seen["project"] == seen["project_file"] == "FileNotFoundError"
    assert seen["conveyor"] == ["code", "inputs", "runtime", "work"]
    assert seen["code"] == ["steps/__init__.py", "steps/probe.py"]  # not flows/, not data/
