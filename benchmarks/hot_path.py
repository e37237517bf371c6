"""The constant costs of a run, each against its baseline measured in the same run.

    python benchmarks/hot_path.py [--quick] [--only cli,prefect,warm] [--api URL]

1. A fully cached re-run of a 3-step pipeline from the CLI, recorded to the embedded SQLite
   database, vs `conveyor dag` on it (which traces the pipeline and prints it). Target: ≤ 1.5×.
   Also shown: the same re-run unrecorded (CONVEYOR_DATABASE_URL=none).
2. The Prefect engine's overhead over the local engine, per flow run and per step, for the
   in-process and the venv runner: pipelines of 1 and 10 no-op steps run by both engines in one
   process (per step = the difference of the two overheads / 9). Target: ≤ +0.1 s per flow run,
   ≤ +0.05 s per step. Also a fully cached 10-step re-run under both engines, and Prefect's own
   floor for reference: a bare async Prefect flow of one no-op task. Samples are half
   a second apart (SETTLE, for both engines), and the requests Prefect's server refused with a
   503 are counted.
3. A warm 3-step pandas / scikit-learn pipeline (make a frame, fit a linear model, score it)
   under conveyor's venv runner vs a Prefect async flow of the same three functions as tasks in
   one process, each run of conveyor's in one process after a warm-up run: with each step in a
   fresh interpreter (CONVEYOR_WARM=off) and with steps forked from the environment's warm
   server (CONVEYOR_WARM=on, the default). Target: ≤ 1.5×.

Every process is started in its own session (setsid), sides alternate round by round so load on
the machine hits both alike, and each figure is a median. Sections 2 and 3 need a Prefect API:
`--api URL`, else PREFECT_API_URL, else a `prefect server start` of its own for the benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

STEPS = """
from conveyor import component

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
def noop(x: int) -> int:
    return x
"""

# The same three functions serve conveyor (as components) and Prefect (as tasks).
MODEL = """
from conveyor import component

@component(packages=["scikit-learn"])
def make(n: int) -> "pd.DataFrame":
    import numpy as np
    import pandas as pd
    rng = np.random.default_rng(0)
    x = rng.random((n, 3))
    return pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "y": x @ [1.0, 2.0, 3.0]})

@component(packages=["scikit-learn"])
def fit(frame: "pd.DataFrame") -> object:
    from sklearn.linear_model import LinearRegression
    return LinearRegression().fit(frame[["a", "b", "c"]], frame["y"])

@component(packages=["scikit-learn"])
def score(model: object, frame: "pd.DataFrame") -> float:
    return float(model.score(frame[["a", "b", "c"]], frame["y"]))
"""

FLOWS = """
from conveyor import pipeline
from steps.bench import noop, one, three, two
from steps.model import fit, make, score

@pipeline
def chain(n: int = 1):
    return three(two(one(n)))

@pipeline
def single(n: int = 1):
    return noop(n)

@pipeline
def ten(n: int = 1):
    x = n
    for _ in range(10):
        x = noop(x)
    return x

@pipeline
def model(n: int = 2000):
    frame = make(n)
    return score(fit(frame), frame)
"""

# Section 2, inside one process: the two engines interleaved on the same pipelines.
ENGINES = """
import json, statistics, sys, time
import httpx
import conveyor
from conveyor.engine.settings import Settings
from conveyor.ops.discovery import resolve_pipeline
from conveyor.ops.run import build_engine
from conveyor.backends.prefect_flow import run_with_prefect

runner, repeat, SETTLE = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
settings = Settings.load()
retried = 0  # requests Prefect's server answered 503 (its SQLite was locked): retried after 2 s
send = httpx.AsyncClient.send
async def counting(self, request, *args, **kwargs):
    global retried
    response = await send(self, request, *args, **kwargs)
    retried += response.status_code == 503
    return response
httpx.AsyncClient.send = counting
out = {}
for name, cache in (("single", False), ("ten", False), ("ten", True)):
    pipeline = resolve_pipeline(name, settings)
    engine = build_engine(settings, runner=runner, cache=cache, hooks=[])
    sides = {
        "local": lambda: engine.run(pipeline, {}),
        "prefect": lambda: run_with_prefect(engine, pipeline, {}),
    }
    for side in sides.values():  # warm-up: environments, imports, the API client
        assert side().ok
    samples = {side: [] for side in sides}
    for _ in range(repeat):
        for side, call in sides.items():
            time.sleep(SETTLE)
            started = time.perf_counter()
            result = call()
            samples[side].append(time.perf_counter() - started)
            assert result.ok, result.error
    label = f"{name}{'-cached' if cache else ''}"
    out[label] = {side: statistics.median(v) for side, v in samples.items()}

# Prefect's own floor: a bare async flow of one no-op task, no conveyor in it
import asyncio
from prefect import flow, task

@task(persist_result=False)
async def noop_task(x):
    return x

@flow(persist_result=False)
async def bare(n: int = 1):
    return await noop_task(n)

asyncio.run(bare())
samples = []
for _ in range(repeat):
    time.sleep(SETTLE)
    started = time.perf_counter()
    asyncio.run(bare())
    samples.append(time.perf_counter() - started)
out["bare"] = statistics.median(samples)
out["retried"] = retried
print("RESULT " + json.dumps(out))
"""

# Section 3, conveyor's side: the pipeline under the venv runner, every step run.
WARM_CONVEYOR = """
import json, statistics, sys, time
import conveyor
repeat = int(sys.argv[1])
run = lambda: conveyor.run("model", runner="venv", engine="local", cache=False)
assert run().ok  # warm-up (builds the environment the first time)
samples = []
for _ in range(repeat):
    started = time.perf_counter()
    result = run()
    samples.append(time.perf_counter() - started)
    assert result.ok, result.error
steps = {n: round(s.duration, 3) for n, s in result.steps.items()}
print("RESULT " + json.dumps({"seconds": statistics.median(samples), "steps": steps}))
"""

# Section 3, Prefect's side: an async flow of the same functions as tasks, one process.
WARM_PREFECT = """
import asyncio, json, statistics, sys, time
from prefect import flow, task
from steps.model import fit, make, score

make_t, fit_t, score_t = (task(f, persist_result=False) for f in (make, fit, score))

@flow(persist_result=False)
async def model(n: int = 2000):
    frame = await asyncio.to_thread(make_t, n)
    fitted = await asyncio.to_thread(fit_t, frame)
    return await asyncio.to_thread(score_t, fitted, frame)

repeat = int(sys.argv[1])
asyncio.run(model())  # warm-up: imports, the API client
samples = []
for _ in range(repeat):
    started = time.perf_counter()
    asyncio.run(model())
    samples.append(time.perf_counter() - started)
print("RESULT " + json.dumps({"seconds": statistics.median(samples)}))
"""


def make_project() -> Path:
    root = Path(tempfile.mkdtemp(prefix="conveyor-hot-path-"))
    (root / "pyproject.toml").write_text('[tool.conveyor]\nflows = ["flows"]\n')
    for package in ("steps", "flows"):
        (root / package).mkdir()
        (root / package / "__init__.py").write_text("")
    (root / "steps" / "bench.py").write_text(textwrap.dedent(STEPS))
    (root / "steps" / "model.py").write_text(textwrap.dedent(MODEL))
    (root / "flows" / "bench.py").write_text(textwrap.dedent(FLOWS))
    return root


def session(args: list[str], root: Path, **variables: str) -> subprocess.CompletedProcess[str]:
    """Run a process in its own session (setsid) in the project; fail loudly."""
    env = {**os.environ, "COLUMNS": "120", **variables}
    proc = subprocess.run(
        args, cwd=root, env=env, capture_output=True, text=True, start_new_session=True,
        check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        shown = " ".join(args[:4])
        raise SystemExit(f"{shown} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return proc


def result_of(proc: subprocess.CompletedProcess[str]) -> dict:
    return json.loads(proc.stdout.rsplit("RESULT ", 1)[1])


def timed(args: list[str], root: Path, **variables: str) -> float:
    started = time.perf_counter()
    session(args, root, **variables)
    return time.perf_counter() - started


def interleaved(sides: dict[str, list[str]], root: Path, repeat: int, **env: str) -> dict:
    """Median wall seconds of each command, the commands alternating round by round."""
    samples: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(repeat):
        for name, args in sides.items():
            samples[name].append(timed(args, root, **env))
    return {name: statistics.median(values) for name, values in samples.items()}


def cli_section(root: Path, repeat: int) -> None:
    print("\n1. fully cached CLI re-run of a 3-step pipeline vs `conveyor dag`")
    cli = [sys.executable, "-m", "conveyor.cli"]
    session([*cli, "run", "chain"], root)  # builds, runs, creates the database
    session([*cli, "run", "chain"], root)  # the first cached run settles any first-use work
    sides = {
        "dag": [*cli, "dag", "chain"],
        "recorded": [*cli, "run", "chain"],
    }
    medians = interleaved(sides, root, repeat)
    unrecorded = interleaved({"unrecorded": [*cli, "run", "chain"]}, root, repeat,
                             CONVEYOR_DATABASE_URL="none")["unrecorded"]  # fmt: skip
    dag = medians["dag"]
    print(f"   `conveyor dag chain`:                                 {dag * 1000:7.0f} ms")
    print(f"   `conveyor run chain`, all cached, recorded to SQLite:  "
          f"{medians['recorded'] * 1000:7.0f} ms   ratio {medians['recorded'] / dag:.2f}x"
          f"  (target <= 1.5x)")  # fmt: skip
    print(f"   the same, unrecorded (CONVEYOR_DATABASE_URL=none):     "
          f"{unrecorded * 1000:7.0f} ms   ratio {unrecorded / dag:.2f}x")  # fmt: skip


# Seconds between samples, both engines alike. Prefect's server records a run's task runs from
# its events just after the run; on a plain `prefect server start` (--api) a flow run created
# meanwhile finds its SQLite database locked, gets a 503 and is retried two seconds later
# (prefect#18934). Back to back, every 10-step sample paid that, which measures the server's
# database rather than the engine. (The server this script starts, as `conveyor ui` starts
# one, waits for the lock instead: conveyor.backends.prefect_sqlite.)
SETTLE = 0.5


def prefect_section(root: Path, repeat: int, api: str) -> None:
    print("\n2. Prefect engine vs local engine, same process, same steps")
    for runner in ("inprocess", "venv"):
        out = result_of(session([sys.executable, "-c", ENGINES, runner, str(repeat), str(SETTLE)],
                                root, PREFECT_API_URL=api))  # fmt: skip
        one, ten, cached = out["single"], out["ten"], out["ten-cached"]
        over_one = one["prefect"] - one["local"]
        over_ten = ten["prefect"] - ten["local"]
        per_step = (over_ten - over_one) / 9
        per_flow = over_one - per_step
        print(f"   {runner} runner:")
        for label, pair in (("1 step", one), ("10 steps", ten), ("10 steps cached", cached)):
            local, prefect = pair["local"], pair["prefect"]
            extra = (prefect - local) * 1000
            print(f"     {label:16} local {local * 1000:7.0f} ms   prefect {prefect * 1000:7.0f} ms"
                  f"   +{extra:5.0f} ms   ratio {prefect / local:.2f}x")  # fmt: skip
        bare = out["bare"] * 1000
        print(f"     Prefect alone: a bare async flow of one no-op task {bare:7.0f} ms")
        print(f"     per flow run +{per_flow * 1000:.0f} ms (target <= 100), per step "
              f"+{per_step * 1000:.0f} ms (target <= 50); requests Prefect's server answered "
              f"503 and the client retried 2 s later: {out['retried']}")  # fmt: skip


def warm_section(root: Path, repeat: int, rounds: int, api: str) -> None:
    print("\n3. warm 3-step pandas / scikit-learn pipeline: conveyor venv vs a Prefect async flow")
    session([sys.executable, "-c", WARM_CONVEYOR, "1"], root)  # builds the environment once
    sides = {"fresh": "off", "warm": "on"}  # CONVEYOR_WARM: a new interpreter a step, or forks
    runs: dict[str, list[float]] = {"fresh": [], "warm": [], "prefect": []}
    steps: dict[str, dict] = {}
    for _ in range(rounds):
        for side, warm in sides.items():
            got = result_of(session([sys.executable, "-c", WARM_CONVEYOR, str(repeat)], root,
                                    CONVEYOR_WARM=warm))  # fmt: skip
            runs[side].append(got["seconds"])
            steps[side] = got["steps"]
        got = result_of(session([sys.executable, "-c", WARM_PREFECT, str(repeat)], root,
                                PREFECT_API_URL=api))  # fmt: skip
        runs["prefect"].append(got["seconds"])
    medians = {side: statistics.median(values) for side, values in runs.items()}
    theirs = medians["prefect"]
    print(f"   Prefect async flow, tasks in one process:          {theirs * 1000:7.0f} ms")
    for side, label in (("fresh", "a fresh interpreter a step (CONVEYOR_WARM=off)"),
                        ("warm", "forked from a warm server (CONVEYOR_WARM=on)")):  # fmt: skip
        ours = medians[side]
        print(f"   conveyor venv, {label}: {ours * 1000:7.0f} ms   ratio {ours / theirs:.2f}x"
              f"  (target <= 1.5x)")  # fmt: skip
    print(f"   warm vs fresh: {medians['fresh'] / medians['warm']:.1f}x faster")
    for side in sides:
        print(f"   conveyor's steps, {side} (wall s): {steps[side]}")


def start_server(home: Path) -> tuple[subprocess.Popen[bytes], str]:
    sys.path.insert(0, str(ROOT))
    from tests.integration.prefect_support import start_prefect_server

    return start_prefect_server(home)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--only", default="cli,prefect,warm", help="sections, comma-separated")
    parser.add_argument("--api", default=os.environ.get("PREFECT_API_URL"), help="Prefect API")
    args = parser.parse_args()
    repeat = 5 if args.quick else 11
    wanted = set(args.only.split(","))
    root = make_project()
    print(f"project: {root}   python {sys.version.split()[0]}   {os.cpu_count()} cores   "
          f"load {os.getloadavg()[0]:.1f}")  # fmt: skip
    if "cli" in wanted:
        cli_section(root, repeat)
    if not wanted & {"prefect", "warm"}:
        return
    server = None
    api = args.api
    if not api:
        server, api = start_server(root / ".prefect-server")
    try:
        if "prefect" in wanted:
            prefect_section(root, repeat, api)
        if "warm" in wanted:
            warm_section(root, 3 if args.quick else 5, 3, api)
    finally:
        if server is not None:
            from tests.integration.prefect_support import stop_process

            stop_process(server)


if __name__ == "__main__":
    main()
