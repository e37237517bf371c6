"""What a step costs, measured against its floor in the same run.

    python benchmarks/step_overhead.py [--quick]

1. A warm no-op step per runner (environment already built) vs a bare `python -c pass` of the
   same interpreter. Target (venv): ≤ 3×.
2. A pandas step under the venv runner (DataFrame in, DataFrame out), warm.
3. A fully cached re-run of a 3-step pipeline (`conveyor run`) vs `conveyor dag` on it (planning
   only), both as CLI processes. Target: ≤ 1.5×.
4. Hand-off of a 10M-row × 10-column float DataFrame between two steps (the producer's save plus
   the consumer's load, as the executor times them) vs an in-process `to_parquet` +
   `read_parquet` of the same frame. Target: ≤ 1.5×.

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
from pathlib import Path

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
"""

FLOWS = """
from conveyor import pipeline
from steps.bench import big, consume, frame, noop, one, pandas_step, three, two

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
    from conveyor.discovery import resolve_pipeline
    from conveyor.engine import LocalEngine
    from conveyor.runners import get_runner
    from conveyor.runners.base import Task
    from conveyor.settings import Settings

    settings = Settings.load(root)
    pipeline = resolve_pipeline("noop_flow", settings)
    runner = get_runner(runner_name, settings)
    engine = LocalEngine(settings, runner)
    plan = engine.plan(pipeline, {})
    step = pipeline.steps[0]
    env = plan.steps[step.name].environment
    workdir = root / ".bench" / runner_name
    spec = {
        "protocol": 1, "step": "noop", "module": "steps.bench", "qualname": "noop",
        "packages": [], "inputs": {}, "parameters": {}, "outputs": {}, "returns": "none",
        "result": str(workdir / "result.json"),
    }  # fmt: skip
    task = Task("noop", step.component.spec, spec, workdir, env, root, lambda line: None)
    runner.run(task)  # warm-up: bytecode caches
    seconds = median_seconds(lambda: runner.run(task), repeat)
    return seconds, env.location


def cli_seconds(args: list[str], root: Path, repeat: int) -> float:
    command = [sys.executable, "-m", "conveyor.cli", *args]
    env = {**os.environ, "COLUMNS": "120"}
    return median_seconds(
        lambda: subprocess.run(command, cwd=root, env=env, check=True, capture_output=True),
        repeat,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, 1M-row hand-off")
    args = parser.parse_args()
    repeat = 5 if args.quick else 21
    rows = 1_000_000 if args.quick else 10_000_000

    import conveyor

    root = Path(tempfile.mkdtemp(prefix="conveyor-bench-"))
    make_project(root)
    os.chdir(root)
    sys.path.insert(0, str(root))
    print(f"project: {root}   python {sys.version.split()[0]}   {os.cpu_count()} cores")

    print("\n1. warm no-op step vs bare interpreter start")
    venv_step, env_path = warm_step_seconds("venv", root, repeat)
    env_python = str(Path(env_path) / "bin" / "python")
    bare = median_seconds(lambda: subprocess.run([env_python, "-c", "pass"], check=True), repeat)
    inprocess_step, _ = warm_step_seconds("inprocess", root, repeat)
    print(f"   bare `python -c pass` (same interpreter): {bare * 1000:8.1f} ms")
    print(f"   venv runner, no-op step:                  {venv_step * 1000:8.1f} ms"
          f"   ratio {venv_step / bare:.2f}x  (target <= 3x)")  # fmt: skip
    print(f"   inprocess runner, no-op step:             {inprocess_step * 1000:8.1f} ms"
          f"   ratio {inprocess_step / bare:.2f}x")  # fmt: skip

    print("\n2. pandas step under the venv runner (warm; DataFrame in and out)")
    conveyor.run("pandas_flow", {"n": 1000}, runner="venv", hooks=[])  # builds the environment
    pandas_run = conveyor.run("pandas_flow", {"n": 1000}, runner="venv", hooks=[],
                              force_steps=["pandas_step"])  # fmt: skip
    step = pandas_run.steps["pandas_step"]
    parts = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in step.timings.items())
    print(f"   pandas step wall {step.duration * 1000:.0f} ms ({parts})")

    print("\n3. fully cached re-run of a 3-step pipeline vs planning only (CLI processes)")
    subprocess.run([sys.executable, "-m", "conveyor.cli", "run", "chain"], cwd=root, check=True,
                   capture_output=True)  # fmt: skip
    cached = cli_seconds(["run", "chain"], root, repeat)
    dag = cli_seconds(["dag", "chain"], root, repeat)
    print(f"   `conveyor dag chain`:                  {dag * 1000:8.0f} ms")
    print(f"   `conveyor run chain` (all 3 cached):   {cached * 1000:8.0f} ms"
          f"   ratio {cached / dag:.2f}x  (target <= 1.5x)")  # fmt: skip

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


if __name__ == "__main__":
    main()
