"""What a step costs, measured against its floor in the same run.

    python benchmarks/step_overhead.py [--quick] [--docker | --docker-only] [--startup-only]
                                       [--pipeline-only] [--repeat N]

1. A warm no-op step per runner (environment already built) vs a bare `python -c pass` of the
   same interpreter. Target (venv, sandboxed): ≤ 3×. The sandbox's own cost is shown apart:
   `python -c pass` inside the same bwrap sandbox a step gets, and the venv runner with the
   sandbox off (CONVEYOR_SANDBOX=off); and how long past its deadline a timed-out step ends.
2. A pandas step under the venv runner (DataFrame in, DataFrame out), warm.
3. A fully cached re-run of a 3-step pipeline (`conveyor run`) vs `conveyor dag` on it (planning
   only), both as CLI processes. Target: ≤ 1.5×.
4. Hand-off of a 10M-row × 10-column float DataFrame between two steps (the producer's save plus
   the consumer's load, as the executor times them) vs an in-process `to_parquet` +
   `read_parquet` of the same frame. Target: ≤ 1.5×.

With `--docker` (a Docker engine and the base image needed; `--docker-only` skips 1-4):

5. A warm no-op step under the docker runner vs a bare `docker run --rm IMAGE python -c pass` of
   the same image, and where the time of a container goes (create, start, exit, wait, remove),
   measured through the SDK. Target: ≤ 1.3×.
6. A pandas step under the docker runner (warm).
7. Image reuse: a second pipeline whose components have the same dependencies builds nothing.
8. A fully cached re-run under the docker runner (code bundles planned, images found) vs
   `conveyor dag`, with the artifact store a local folder and on S3 (moto's server on loopback,
   started here; needs `moto[server]` and `s3fs`). Target: ≤ 1.5×.
9. A 3-step pandas pipeline under the docker runner, warm containers (one container, a
   `docker exec` per step) and cold (CONVEYOR_WARM=off: a container per step), vs the same
   steps baked into an image and run by hand with the docker CLI: `docker run --rm` per step,
   and `docker run -d` + a `docker exec` per step + `docker rm -f`. Target: warm ≤ 1.1× the
   hand-run containers.

Medians of repeated runs; every ratio is against a baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

STEPS = """
from conveyor import component

@component
def noop() -> None:
    return None

@component
def one(n: int) -> int:
    return n

@component
def two(x: int) -> int:
    return x + 1

@component
def three(x: int) -> int:
    return x * 2

@component
def frame(n: int) -> "pd.DataFrame":
    import pandas as pd
    return pd.DataFrame({"x": range(n)})

@component
def pandas_step(df: "pd.DataFrame") -> "pd.DataFrame":
    return df.assign(y=df["x"] * 2)

@component
def big(rows: int, cols: int) -> "pd.DataFrame":
    import numpy as np
    import pandas as pd
    data = np.random.default_rng(0).random((rows, cols))
    return pd.DataFrame(data, columns=[f"c{i}" for i in range(cols)])

@component
def consume(df: "pd.DataFrame") -> int:
    return len(df)

@component(timeout=1)
def sleeper() -> None:
    import time
    time.sleep(30)

@component
def noop_twin() -> None:
    return None

@component
def pandas_twin(df: "pd.DataFrame") -> int:
    return int(df["x"].sum())
"""

FLOWS = """
from conveyor import pipeline
from steps.bench import (big, consume, frame, noop, noop_twin, one, pandas_step, pandas_twin,
                         sleeper, three, two)

@pipeline
def noop_flow():
    noop()

@pipeline
def chain(n: int = 1):
    return three(two(one(n)))

@pipeline
def pandas_flow(n: int = 1000):
    return pandas_step(frame(n))

@pipeline
def handoff(rows: int = 10_000_000, cols: int = 10):
    return consume(big(rows, cols))

@pipeline
def sleepy():
    sleeper()

@pipeline
def pandas3(n: int = 1000):
    return pandas_twin(pandas_step(frame(n)))

@pipeline
def twins(n: int = 10):
    noop_twin()
    return pandas_twin(frame(n))
"""


def median_seconds(fn, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def make_project(root: Path) -> None:
    (root / "pyproject.toml").write_text('[tool.conveyor]\nflows = ["flows"]\n')
    for package in ("steps", "flows"):
        (root / package).mkdir()
        (root / package / "__init__.py").write_text("")
    (root / "steps" / "bench.py").write_text(textwrap.dedent(STEPS))
    (root / "flows" / "bench.py").write_text(textwrap.dedent(FLOWS))


def warm_step_seconds(runner_name: str, root: Path, repeat: int) -> tuple[float, str]:
    """Median wall time of runner.run() for the no-op step, environment already built."""
    runner, task = warm_task(runner_name, root)
    seconds = median_seconds(lambda: runner.run(task), repeat)
    runner.close()
    return seconds, task.environment.location


def warm_task(runner_name: str, root: Path, label: str | None = None) -> tuple[Any, Any]:
    """(runner, task) for the no-op step, its environment built and the step run once."""
    from conveyor.engine.core import Engine
    from conveyor.engine.settings import Settings
    from conveyor.engine.tasks import Task
    from conveyor.ops.discovery import resolve_pipeline
    from conveyor.runners import get_runner

    settings = Settings.load(root)
    pipeline = resolve_pipeline("noop_flow", settings)
    runner = get_runner(runner_name, settings)
    engine = Engine(settings, runner)
    plan = engine.plan(pipeline, {})
    step = pipeline.steps[0]
    env = plan.steps[step.name].environment
    workdir = root / ".bench" / (label or runner_name)
    spec = {
        "protocol": 1, "step": "noop", "module": "steps.bench", "qualname": "noop",
        "packages": [], "inputs": {}, "parameters": {}, "outputs": {}, "returns": "none",
        "result": str(workdir / "result.json"),
    }  # fmt: skip
    code = plan.steps[step.name].code_dir  # the code bundle, for runners that ship code
    task = Task("noop", step.component.spec, spec, workdir, env, root, lambda line: None, code)
    runner.run(task)  # warm-up: bytecode caches
    return runner, task


def sandbox_command(runner: Any, task: Any, python: str) -> list[str] | None:
    """`python -c pass` inside the sandbox the no-op step gets (None when it cannot run here)."""
    import shutil

    from conveyor.runners.sandbox import bwrap_command, sandbox_problem, step_mounts

    bwrap = shutil.which("bwrap")
    if sandbox_problem() is not None or bwrap is None:
        print(f"   (no sandbox here: {sandbox_problem()})")
        return None
    mounts = step_mounts(task, runner.runtime())
    return bwrap_command(bwrap, task, Path(task.environment.location), mounts,
                         [python, "-c", "pass"])  # fmt: skip


def cpu_meter() -> Any:
    """A function returning the cpu seconds used so far by this process and every process it
    started (a cgroup v1 cpuacct group of its own, where writable), else None. Unlike wall time
    it hardly moves with the load of a shared machine, and unlike getrusage it counts processes
    reaped inside a sandbox's PID namespace."""
    import atexit
    import secrets

    root = Path("/sys/fs/cgroup/cpuacct")
    try:
        group = root / f"conveyor-bench-{os.getpid()}-{secrets.token_hex(3)}"
        group.mkdir()
        (group / "cgroup.procs").write_text(str(os.getpid()))
    except OSError:
        return None

    def leave() -> None:  # back to the parent group, and the empty one removed
        try:
            (root / "cgroup.procs").write_text(str(os.getpid()))
            group.rmdir()
        except OSError:
            pass

    atexit.register(leave)
    return lambda: int((group / "cpuacct.usage").read_text()) / 1e9


def interleaved_costs(fns: dict[str, Any], repeat: int) -> tuple[dict[str, float], ...]:
    """Median wall seconds, minimum wall seconds and median cpu seconds (this process and its
    children; empty where no cpuacct group can be made) of each callable, run in turn so that
    load on the machine hits all alike."""
    meter = cpu_meter()
    wall: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            used = meter() if meter else 0.0
            started = time.perf_counter()
            fn()
            wall[name].append(time.perf_counter() - started)
            if meter:
                cpu[name].append(meter() - used)
    return (
        {name: statistics.median(values) for name, values in wall.items()},
        {name: min(values) for name, values in wall.items()},
        {name: statistics.median(values) for name, values in cpu.items() if values},
    )


def interleaved_medians(fns: dict[str, Any], repeat: int) -> dict[str, float]:
    """Median seconds of each callable, run in turn so that load on the machine hits all alike."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            started = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in samples.items()}


def cli_seconds(args: list[str], root: Path, repeat: int, **variables: str) -> float:
    command = [sys.executable, "-m", "conveyor.cli", *args]
    env = {**os.environ, "COLUMNS": "120", **variables}
    return median_seconds(
        lambda: subprocess.run(command, cwd=root, env=env, check=True, capture_output=True),
        repeat,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, 1M-row hand-off")
    parser.add_argument("--docker", action="store_true", help="also measure the docker runner")
    parser.add_argument("--docker-only", action="store_true", help="only the docker sections")
    parser.add_argument("--startup-only", action="store_true", help="only section 1")
    parser.add_argument("--pipeline-only", action="store_true", help="only section 9")
    parser.add_argument("--repeat", type=int, help="rounds of each measurement (default 21)")
    args = parser.parse_args()
    repeat = args.repeat or (5 if args.quick else 21)
    rows = 1_000_000 if args.quick else 10_000_000

    root = Path(tempfile.mkdtemp(prefix="conveyor-bench-"))
    root.chmod(0o755)  # mkdtemp makes it private; docker steps run as another user and read it
    make_project(root)
    os.chdir(root)
    sys.path.insert(0, str(root))
    print(f"project: {root}   python {sys.version.split()[0]}   {os.cpu_count()} cores")
    if args.pipeline_only:
        pipeline_vs_hand(root, repeat)
        return
    if not args.docker_only:
        venv_sections(root, repeat, rows, startup_only=args.startup_only)
    if args.docker or args.docker_only:
        docker_sections(root, repeat)


def venv_sections(root: Path, repeat: int, rows: int, startup_only: bool = False) -> None:
    import conveyor

    print("\n1. warm no-op step vs bare interpreter start (interleaved, wall time)")
    runner, task = warm_task("venv", root)
    env_python = str(Path(task.environment.location) / "bin" / "python")
    os.environ["CONVEYOR_SANDBOX"] = "off"
    try:
        plain_runner, plain_task = warm_task("venv", root, label="venv-unsandboxed")
    finally:
        del os.environ["CONVEYOR_SANDBOX"]
    inprocess_step, _ = warm_step_seconds("inprocess", root, repeat)
    fns = {
        "bare": lambda: subprocess.run([env_python, "-c", "pass"], check=True),
        "step": lambda: runner.run(task),
        "plain": lambda: plain_runner.run(plain_task),
    }
    sandboxed = sandbox_command(runner, task, env_python)
    if sandboxed is not None:
        fns["sandbox"] = lambda: subprocess.run(sandboxed, check=True)
    wall, best, cpu = interleaved_costs(fns, repeat)
    runner.close()
    plain_runner.close()

    def show(label: str, key: str, note: str = "") -> None:
        median, least = wall[key], best[key]
        used = (f"  cpu {cpu[key] * 1000:6.1f} ms ({cpu[key] / cpu['bare']:.2f}x)"
                if cpu else "")  # fmt: skip
        ratio = least / best["bare"]
        print(f"   {label:42} median {median * 1000:6.1f} ms ({median / wall['bare']:.2f}x)"
              f"  min {least * 1000:6.1f} ms ({ratio:.2f}x){used}{note}")  # fmt: skip

    show("bare `python -c pass` (same interpreter):", "bare")
    show("venv runner, no-op step (sandboxed):", "step", "  (target <= 3x)")
    if sandboxed is not None:
        show("`python -c pass` in the step's sandbox:", "sandbox")
        own = wall["sandbox"] - wall["bare"], best["sandbox"] - best["bare"]
        own_cpu = f", {(cpu['sandbox'] - cpu['bare']) * 1000:.1f} ms cpu" if cpu else ""
        print(f"   the sandbox's own cost: {own[0] * 1000:.1f} ms median, "
              f"{own[1] * 1000:.1f} ms min{own_cpu}")  # fmt: skip
    show("venv runner, no-op step, sandbox off:", "plain")
    print(f"   inprocess runner, no-op step:              {inprocess_step * 1000:7.1f} ms wall")
    slept = conveyor.run("sleepy", {}, runner="venv", hooks=[], cache=False)
    step = slept.steps["sleeper"]
    print(f"   a step with timeout=1 s that sleeps 30 s ended after {step.duration:.2f} s "
          f"({step.error})")  # fmt: skip

    if startup_only:
        return
    print("\n2. pandas step under the venv runner (warm; DataFrame in and out)")
    conveyor.run("pandas_flow", {"n": 1000}, runner="venv", hooks=[])  # builds the environment
    pandas_run = conveyor.run("pandas_flow", {"n": 1000}, runner="venv", hooks=[],
                              force_steps=["pandas_step"])  # fmt: skip
    step = pandas_run.steps["pandas_step"]
    parts = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in step.timings.items())
    print(f"   pandas step wall {step.duration * 1000:.0f} ms ({parts})")

    print("\n3. fully cached re-run of a 3-step pipeline vs planning only")
    subprocess.run([sys.executable, "-m", "conveyor.cli", "run", "chain"], cwd=root, check=True,
                   capture_output=True)  # fmt: skip
    cached = cli_seconds(["run", "chain"], root, repeat)
    dag = cli_seconds(["dag", "chain"], root, repeat)
    print(f"   CLI `conveyor dag chain`:                       {dag * 1000:8.0f} ms")
    print(f"   CLI `conveyor run chain` (all cached, recorded): {cached * 1000:8.0f} ms"
          f"   ratio {cached / dag:.2f}x")  # fmt: skip
    unrecorded = cli_seconds(["run", "chain"], root, repeat, CONVEYOR_DATABASE_URL="none")
    print(f"   same, CONVEYOR_DATABASE_URL=none (engine only): {unrecorded * 1000:8.0f} ms"
          f"   ratio {unrecorded / dag:.2f}x  (target <= 1.5x)")  # fmt: skip
    from conveyor.engine.settings import Settings
    from conveyor.ops.discovery import resolve_pipeline
    from conveyor.ops.run import build_engine

    settings = Settings.load(root)
    pipeline = resolve_pipeline("chain", settings)
    engine = build_engine(settings, runner="venv", hooks=[])
    planning = median_seconds(lambda: engine.plan(pipeline, {}), repeat)
    rerun = median_seconds(lambda: engine.run(pipeline, {}), repeat)
    print(f"   in-process plan:                                 {planning * 1000:8.1f} ms")
    print(f"   in-process cached run (plan + 3 cache hits):     {rerun * 1000:8.1f} ms"
          f"   ratio {rerun / planning:.2f}x")  # fmt: skip

    print(f"\n4. hand-off of a {rows:,}-row x 10-column float DataFrame between two steps")
    result = conveyor.run("handoff", {"rows": rows}, runner="venv", hooks=[], cache=False)
    assert result.ok, result.error
    save = result.steps["big"].timings["save"]
    load = result.steps["consume"].timings["load"]
    import numpy as np
    import pandas as pd

    frame = pd.DataFrame(np.random.default_rng(0).random((rows, 10)),
                         columns=[f"c{i}" for i in range(10)])  # fmt: skip
    target = root / "baseline.parquet"

    def round_trip() -> None:
        frame.to_parquet(target)
        pd.read_parquet(target)

    baseline = median_seconds(round_trip, 3)
    size = result.steps["big"].artifacts["output"].size / 1e6
    print(f"   in-process to_parquet + read_parquet:  {baseline:6.2f} s")
    print(f"   step save + next step's load ({size:.0f} MB, sha256 verified): {save + load:6.2f} s"
          f"  (save {save:.2f} s, load {load:.2f} s)   ratio {(save + load) / baseline:.2f}x"
          f"  (target <= 1.5x)")  # fmt: skip
    print(
        f"   whole steps, wall: producer {result.steps['big'].duration:.2f} s, "
        f"consumer {result.steps['consume'].duration:.2f} s"
    )


def container_phases(image: str, repeat: int) -> dict[str, float]:
    """Median milliseconds of each phase of one bare container, driven through the SDK."""
    import docker

    api = docker.from_env().api
    samples: dict[str, list[float]] = {}
    for _ in range(repeat):
        marks = [time.perf_counter()]
        created = api.create_container(
            image, ["python", "-c", "pass"], user="1000:1000",
            host_config=api.create_host_config(network_mode="none"),
        )  # fmt: skip
        marks.append(time.perf_counter())
        stream = api.attach(created["Id"], stdout=True, stderr=True, stream=True, demux=True)
        api.start(created["Id"])
        marks.append(time.perf_counter())
        for _chunk in stream:
            pass
        marks.append(time.perf_counter())
        api.wait(created["Id"])
        marks.append(time.perf_counter())
        api.remove_container(created["Id"], force=True)
        marks.append(time.perf_counter())
        for name, (a, b) in zip(
            ("create", "attach+start", "run to exit", "wait", "remove"), pairwise(marks),
            strict=True,
        ):  # fmt: skip
            samples.setdefault(name, []).append((b - a) * 1000)
    return {name: statistics.median(values) for name, values in samples.items()}


def docker_sections(root: Path, repeat: int) -> None:
    import conveyor
    from conveyor.engine.core import Engine
    from conveyor.engine.settings import Settings
    from conveyor.ops.discovery import resolve_pipeline
    from conveyor.runners.docker import DockerRunner

    print("\n5. warm no-op step under docker vs a bare `docker run` of the same image")
    started = time.perf_counter()
    runner, task = warm_task("docker", root)
    image = task.environment.location
    print(f"   no-op image {image}: {runner.builder.builds} built, ready in "
          f"{time.perf_counter() - started:.1f} s")  # fmt: skip

    def bare(*flags: str) -> Any:
        command = ["docker", "run", "--rm", *flags, image, "python", "-c", "pass"]
        return lambda: subprocess.run(command, check=True)

    times = interleaved_medians(
        {
            "runner": lambda: runner.run(task),
            "cold": cold(lambda: runner.run(task)),
            "plain": bare(),
            "isolated": bare("--network", "none", "--user", "1000:1000"),
        },
        repeat,
    )
    runner.close()
    step, plain, isolated = times["runner"], times["plain"], times["isolated"]
    print(f"   bare `docker run --rm IMAGE python -c pass`:       {plain * 1000:8.0f} ms")
    print(f"   same with --network none --user 1000:1000:          {isolated * 1000:8.0f} ms")
    print(f"   docker runner, no-op step (executor, mounts, logs): {step * 1000:8.0f} ms"
          f"   ratio {step / plain:.2f}x  (target <= 1.3x; "
          f"{step / isolated:.2f}x the isolated bare run)")  # fmt: skip
    print(f"   same, cold (CONVEYOR_WARM=off: a container per step): "
          f"{times['cold'] * 1000:6.0f} ms   ratio {times['cold'] / plain:.2f}x")  # fmt: skip
    phases = container_phases(image, repeat)
    shown = ", ".join(f"{name} {ms:.0f}" for name, ms in phases.items())
    print(f"   where a bare container's time goes (SDK, ms): {shown}")

    print("\n6. pandas step under the docker runner (warm; DataFrame in and out)")
    started = time.perf_counter()
    first = conveyor.run("pandas_flow", {"n": 1000}, runner="docker", hooks=[])
    assert first.ok, first.error
    print(f"   first run, planning included (and the pandas image's build, if missing): "
          f"{time.perf_counter() - started:.1f} s")  # fmt: skip
    pandas_run = conveyor.run("pandas_flow", {"n": 1000}, runner="docker", hooks=[],
                              force_steps=["pandas_step"])  # fmt: skip
    assert pandas_run.ok, pandas_run.error
    step = pandas_run.steps["pandas_step"]
    parts = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in step.timings.items())
    print(f"   pandas step wall {step.duration * 1000:.0f} ms ({parts})")

    print("\n7. image reuse: new components with the same dependencies")
    settings = Settings.load(root)
    twins = resolve_pipeline("twins", settings)
    reuse_runner = DockerRunner(settings)
    started = time.perf_counter()
    plan = Engine(settings, reuse_runner).plan(twins, {})
    seconds = time.perf_counter() - started
    envs = plan.environments.values()
    print(f"   plan of `twins` (noop_twin, frame, pandas_twin): {len(envs)} environments, "
          f"{reuse_runner.builder.builds} image(s) built, {sum(e.built for e in envs)} marked "
          f"built, planned in {seconds:.2f} s")  # fmt: skip
    for name in ("noop_twin", "pandas_twin"):
        env = plan.steps[name].environment
        assert env is not None
        print(f"   {name:12} -> {env.location} (built: {env.built})")

    print("\n8. fully cached re-run under docker vs planning only, local store and S3")
    dag = cli_seconds(["dag", "chain"], root, repeat)
    print(f"   CLI `conveyor dag chain`:                          {dag * 1000:8.0f} ms")
    stores = {"local folder": {}}
    moto = start_moto()
    if moto is not None:
        stores["S3 (moto, loopback)"] = moto[1]
    try:
        for label, variables in stores.items():
            variables = {**variables, "CONVEYOR_DATABASE_URL": "none"}
            first = cli_seconds(["run", "chain", "--runner", "docker"], root, 1, **variables)
            cached = cli_seconds(["run", "chain", "--runner", "docker"], root, repeat, **variables)
            print(f"   {label:20} first run {first:6.2f} s; cached re-run {cached * 1000:6.0f} ms"
                  f"   ratio {cached / dag:.2f}x  (target <= 1.5x)")  # fmt: skip
    finally:
        if moto is not None:
            moto[0].kill()

    pipeline_vs_hand(root, repeat)


def cold(fn: Any) -> Any:
    """`fn` run with warm containers off (CONVEYOR_WARM=off)."""

    def run() -> Any:
        os.environ["CONVEYOR_WARM"] = "off"
        try:
            return fn()
        finally:
            del os.environ["CONVEYOR_WARM"]

    return run


HAND_STEPS = """
import sys
import pandas as pd

step, *args = sys.argv[1:]
if step == "frame":
    pd.DataFrame({"x": range(int(args[1]))}).to_parquet(args[0])
elif step == "pandas_step":
    df = pd.read_parquet(args[0])
    df.assign(y=df["x"] * 2).to_parquet(args[1])
else:
    print(int(pd.read_parquet(args[0])["x"].sum()))
"""


def pipeline_vs_hand(root: Path, repeat: int) -> None:
    """Section 9: the 3-step pandas pipeline, warm and cold, vs the same steps by hand."""
    import conveyor
    from conveyor.runners.images import ENV_PREFIX

    print("\n9. 3-step pandas pipeline under docker vs the same steps in pre-baked containers "
          "run by hand (interleaved)")  # fmt: skip
    os.environ["CONVEYOR_DATABASE_URL"] = "none"  # the runner's cost, not the recorder's
    first = conveyor.run("pandas3", {"n": 1000}, runner="docker", hooks=[], cache=False)
    assert first.ok, first.error
    assert first.output == sum(range(1000))
    env_image = f"conveyor-env:{first.steps['frame'].environment}"
    context = root / ".bench" / "prebaked"
    context.mkdir(parents=True, exist_ok=True)
    (context / "steps.py").write_text(HAND_STEPS)
    (context / "Dockerfile").write_text(f"FROM {env_image}\nCOPY steps.py /app/steps.py\n")
    image = "conveyor-bench/prebaked:latest"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    subprocess.run(["docker", "build", "-q", "-t", image, str(context)], check=True, **quiet)
    data = root / ".bench" / "hand-data"
    data.mkdir(exist_ok=True)
    data.chmod(0o777)
    python = f"{ENV_PREFIX}/bin/python"
    flags = ["--network", "none", "--user", "1000:1000", "-v", f"{data}:/data"]
    steps = [
        ["frame", "/data/a.parquet", "1000"],
        ["pandas_step", "/data/a.parquet", "/data/b.parquet"],
        ["pandas_twin", "/data/b.parquet"],
    ]

    def docker(*args: str) -> str:
        # every process in a session of its own, as the engine's would be
        done = subprocess.run(["docker", *args], check=True, capture_output=True, text=True,
                              start_new_session=True)  # fmt: skip
        return done.stdout.strip()

    def hand_run() -> None:
        for step in steps:
            docker("run", "--rm", *flags, image, python, "/app/steps.py", *step)

    def hand_exec() -> None:
        container = docker("run", "-d", *flags, image, "sleep", "infinity")
        try:
            for step in steps:
                docker("exec", container, python, "/app/steps.py", *step)
        finally:
            docker("rm", "-f", container)

    def pipeline() -> None:
        result = conveyor.run("pandas3", {"n": 1000}, runner="docker", hooks=[], cache=False)
        assert result.ok, result.error

    try:
        times = interleaved_medians(
            {"hand_run": hand_run, "hand_exec": hand_exec, "warm": pipeline,
             "cold": cold(pipeline)},
            repeat,
        )  # fmt: skip
    finally:
        del os.environ["CONVEYOR_DATABASE_URL"]
    run, exec_, warm, cold_ = (times[k] for k in ("hand_run", "hand_exec", "warm", "cold"))
    print(f"   by hand, `docker run --rm` per step:                 {run * 1000:8.0f} ms")
    print(f"   by hand, `docker run -d` + `docker exec` per step + rm: {exec_ * 1000:5.0f} ms")
    print(f"   conveyor, warm containers (plan, run, cleanup):      {warm * 1000:8.0f} ms"
          f"   {warm / run:.2f}x `docker run`, {warm / exec_:.2f}x `docker exec`"
          f"  (target <= 1.1x)")  # fmt: skip
    print(f"   conveyor, cold (CONVEYOR_WARM=off):                  {cold_ * 1000:8.0f} ms"
          f"   {cold_ / run:.2f}x `docker run`, {cold_ / exec_:.2f}x `docker exec`")  # fmt: skip


def start_moto() -> tuple[subprocess.Popen[bytes], dict[str, str]] | None:
    """moto's S3 server on a free loopback port and a bucket on it, or None if not installed."""
    import shutil
    import socket

    binary = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    if not Path(binary).is_file():
        print("   (S3 skipped: moto's server is not installed; pip install 'moto[server]')")
        return None
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([binary, "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    variables = {
        "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "CONVEYOR_ARTIFACTS": "s3://conveyor-bench/artifacts",
    }  # fmt: skip
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    import fsspec

    os.environ.update({k: v for k, v in variables.items() if k.startswith("AWS_")})
    fsspec.filesystem("s3", skip_instance_cache=True).mkdir("conveyor-bench")
    return proc, variables


if __name__ == "__main__":
    main()
