"""A backfill on a Prefect work pool: 1 worker vs N workers, and submit-to-start latency.

    python benchmarks/pool_workers.py [--partitions 12] [--workers 2] [--step-seconds 5]

The same backfill (one flow run per partition, each step sleeping `--step-seconds`, in-process
runner so no environment is built) runs on a pool with one `conveyor worker start`, then again
(`--reprocess all`) with `--workers` of them, all against one throwaway Prefect server started
here. Printed: wall time of each and their ratio, and per flow run the time from submission
(created) to start (Running) and the time it ran, so the share of orchestration is visible.
On a 2-core machine the workers share the cores: expect the ratio to be bounded by the flow-run
start-up cost (a Python process importing Prefect and conveyor), not by the steps.

Measured 2026-12-03 on the shared 2-core machine (load average 35-45 from other engineers'
test runs, so both numbers are noisy and the load fell between the two runs):
    --partitions 8 --workers 2 --step-seconds 5
    1 worker:  326.0 s wall; submit->start median 187.0 s (max 281.7), run median 9.3 s
    2 workers: 131.5 s wall; submit->start median 62.4 s (max 96.5); 4 runs on each worker
    2 workers / 1 worker wall time: 0.40x
Each flow run costs tens of seconds of process start-up and imports before its 5 s step; the
orchestration dominates. Not measured on an idle machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STEPS = """
import time
from datetime import date
from conveyor import component

@component
def work(day: date, seconds: float) -> "pd.DataFrame":
    import pandas as pd

    time.sleep(seconds)
    return pd.DataFrame({"day": [day], "value": [day.toordinal() % 97]})
"""

FLOWS = """
from datetime import date
from conveyor import pipeline, write_table
from steps.work import work

@pipeline(calendar="daily")
def pooled(day: date, seconds: float = 5.0):
    write_table(work(day, seconds), "pooled", partition=day, partition_col="day")
"""


def make_project() -> Path:
    root = Path(tempfile.mkdtemp(prefix="conveyor-pool-bench-"))
    (root / "pyproject.toml").write_text('[tool.conveyor]\nflows = ["flows"]\n')
    for folder, name, text in (("steps", "work", STEPS), ("flows", "pooled", FLOWS)):
        (root / folder).mkdir()
        (root / folder / "__init__.py").write_text("")
        (root / folder / f"{name}.py").write_text(textwrap.dedent(text).lstrip())
    return root


def start_workers(root: Path, count: int, pool: str) -> list[subprocess.Popen[bytes]]:
    workers = []
    for i in range(count):
        command = [sys.executable, "-m", "conveyor.cli", "worker", "start", "--pool", pool,
                   "--limit", "2", "--name", f"w{i + 1}"]  # fmt: skip
        quiet = subprocess.DEVNULL
        proc = subprocess.Popen(
            command, cwd=root, stdout=quiet, stderr=quiet, start_new_session=True
        )
        workers.append(proc)
    return workers


def stop_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    for proc in workers:
        proc.send_signal(signal.SIGTERM)
    for proc in workers:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def flow_run_times(pool: str) -> list[tuple[float, float, str]]:
    """(created -> start, start -> end, worker tag) of each finished flow run on the pool."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import WorkPoolFilter, WorkPoolFilterName

    async def read() -> list[tuple[float, float, str]]:
        async with get_client() as client:
            runs = await client.read_flow_runs(
                work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool]))
            )
        found = []
        for run in runs:
            if run.start_time and run.end_time and run.created:
                worker = next((t for t in run.tags if t.startswith("worker:")), "?")
                found.append(
                    (
                        (run.start_time - run.created).total_seconds(),
                        (run.end_time - run.start_time).total_seconds(),
                        worker,
                    )
                )
        return found

    return asyncio.run(read())


def backfill(root: Path, start: date, end: date, pool: str, again: bool) -> float:
    began = time.perf_counter()
    command = [sys.executable, "-m", "conveyor.cli", "backfill", "pooled", "--start", str(start),
               "--end", str(end), "--pool", pool, "--runner", "inprocess"]  # fmt: skip
    if again:
        command += ["--reprocess", "all"]
    done = subprocess.run(command, cwd=root, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"backfill failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    print("   ", done.stdout.strip().splitlines()[-1])
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--step-seconds", type=float, default=5.0)
    args = parser.parse_args()

    from tests.integration.prefect_support import start_prefect_server, stop_process

    root = make_project()
    server, url = start_prefect_server(root / ".prefect-server")
    os.environ["PREFECT_API_URL"] = url
    start = date(2024, 1, 1)
    end = start + timedelta(days=args.partitions - 1)
    print(f"{args.partitions} partitions, each a flow run with a {args.step_seconds:g} s step; "
          f"workers take 2 runs at once; {os.cpu_count()} cores")  # fmt: skip
    try:
        wall = {}
        for count, pool in ((1, "one"), (args.workers, "many")):
            workers = start_workers(root, count, pool)
            try:
                wall[count] = backfill(root, start, end, pool, again=count != 1)
            finally:
                stop_workers(workers)
            times = flow_run_times(pool)
            latency = [t[0] for t in times]
            ran = [t[1] for t in times]
            per_worker: dict[str, int] = {}
            for _, _, worker in times:
                per_worker[worker] = per_worker.get(worker, 0) + 1
            print(
                f"{count} worker(s): {wall[count]:.1f} s wall; submit->start median "
                f"{statistics.median(latency):.1f} s (max {max(latency):.1f}); run median "
                f"{statistics.median(ran):.1f} s of which step {args.step_seconds:g} s; "
                f"runs per worker {dict(sorted(per_worker.items()))}"
            )
        ratio = wall[args.workers] / wall[1]
        print(f"{args.workers} workers / 1 worker wall time: {ratio:.2f}x")
    finally:
        stop_process(server)


if __name__ == "__main__":
    main()
