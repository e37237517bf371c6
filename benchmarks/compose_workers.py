"""The compose stack: one backfill on 1 worker vs 3 (`docker compose up --scale worker=N`).

    python benchmarks/compose_workers.py [--partitions 60] [--workers 3] [--keep]

The stack of docker-compose.yml (PostgreSQL, the Prefect server, workers on the pool
`conveyor`) runs a copy of tests/fixtures/schedule_project through the schedule-check overlay
(containers/compose.schedule-check.yml): each worker takes one flow run at a time, and every
step runs in a container of its own on this machine's engine. The same backfill of
`--partitions` days (one flow run per day) runs with one worker, then again (`--reprocess all`)
with `--workers`. Printed: the wall time of each and their ratio, and per flow run the time from
submission (created) to start (Running) and the time it ran, read from the Prefect API, so the
share of orchestration is visible. Needs Docker and docker-compose; builds the images from this
checkout the first time (minutes).

Measured 2026-12-03 (2 cores, load ~3, the venv and docker helpers' tests running meanwhile):
    1 worker:  561.7 s wall for 60 flow runs; submit->start median 281.2 s; run median 2.3 s
    3 workers: 222.4 s wall; submit->start median 101.5 s; run median 1.7 s; 19/20/21 per worker
    3 workers / 1 worker wall time: 0.40x
A flow run costs ~9 s of one worker, of which its run (plan, the step's container, the write)
is ~2 s: the rest is the worker starting a process that imports Prefect and conveyor, and
polling (every 2 s here). Partitions that read earlier ones (the features flow's look-back,
`depends_on_past`) are submitted in order, so they gain nothing from more workers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "conveyor-bench"
START = date(1982, 1, 1)


def compose_command() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return ["docker", "compose"]


class Stack:
    def __init__(self, project: Path, port: int) -> None:
        self.env = {**os.environ, "CONVEYOR_CHECK_PROJECT": str(project),
                    "CONVEYOR_UI_PORT": str(port)}  # fmt: skip
        self.base = [*compose_command(), "-p", PROJECT, "-f", "docker-compose.yml",
                     "-f", "containers/compose.schedule-check.yml"]  # fmt: skip
        self.api = f"http://127.0.0.1:{port}/api"

    def __call__(self, *args: str, timeout: float = 1800) -> str:
        proc = subprocess.run([*self.base, *args], cwd=ROOT, env=self.env, capture_output=True,
                              text=True, timeout=timeout, check=False)  # fmt: skip
        if proc.returncode != 0:
            raise SystemExit(f"docker-compose {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
        return proc.stdout

    def flow_runs(self) -> list[dict]:
        request = urllib.request.Request(
            f"{self.api}/flow_runs/filter",
            data=json.dumps({"flow_runs": {"tags": {"all_": ["backfill"]}}}).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)

    def wait_for_workers(self, count: int) -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            logs = self("logs", "worker")
            if logs.count("started!") >= count:  # Prefect's "Worker '...' started!"
                return
            time.sleep(3)
        raise SystemExit(f"{count} workers did not start within 10 minutes")


def _seconds(a: str, b: str) -> float:
    return (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds()


def backfill(stack: Stack, partitions: int, again: bool) -> tuple[float, list[dict]]:
    """Wall seconds of the backfill, and the flow runs it made."""
    before = {run["id"] for run in stack.flow_runs()}
    end = START + timedelta(days=partitions - 1)
    args = ["exec", "-T", "--index", "1", "worker", "conveyor", "backfill", "ticks",
            "--start", START.isoformat(), "--end", end.isoformat(), "--pool", "conveyor",
            "--batch", "1"]  # fmt: skip
    if again:
        args += ["--reprocess", "all"]
    started = time.perf_counter()
    out = stack(*args)
    wall = time.perf_counter() - started
    if f"{partitions} partitions succeeded" not in out:
        raise SystemExit(f"the backfill did not succeed:\n{out}")
    runs = [run for run in stack.flow_runs() if run["id"] not in before]
    return wall, runs


def describe(label: str, wall: float, runs: list[dict]) -> None:
    latency = [_seconds(r["created"], r["start_time"]) for r in runs if r["start_time"]]
    ran = [_seconds(r["start_time"], r["end_time"]) for r in runs if r["end_time"]]
    workers: dict[str, int] = {}
    for run in runs:
        tag = next((t for t in run["tags"] if t.startswith("worker:")), "worker:?")
        workers[tag[7:]] = workers.get(tag[7:], 0) + 1
    print(f"{label}: {wall:.1f} s wall for {len(runs)} flow runs; submit->start median "
          f"{statistics.median(latency):.1f} s (max {max(latency):.1f}); run median "
          f"{statistics.median(ran):.1f} s; per worker {sorted(workers.values())}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", type=int, default=60)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--port", type=int, default=4311)
    parser.add_argument("--keep", action="store_true", help="leave the stack up afterwards")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-") as tmp:
        project = Path(tmp) / "schedule_project"
        shutil.copytree(ROOT / "tests" / "fixtures" / "schedule_project", project)
        (project / "deployments" / "ticks.toml").unlink()  # no cron competing for the workers
        stack = Stack(project, args.port)
        stack("down", "-v", "--remove-orphans")
        try:
            stack("up", "-d", "--build", "--scale", "worker=1")
            stack.wait_for_workers(1)
            # a first partition builds the step's image: not part of either measurement
            stack("exec", "-T", "--index", "1", "worker", "conveyor", "backfill", "ticks",
                  "--start", "1981-01-01", "--end", "1981-01-01")  # fmt: skip
            one, runs_one = backfill(stack, args.partitions, again=False)
            stack("up", "-d", "--scale", f"worker={args.workers}")
            stack.wait_for_workers(args.workers)
            many, runs_many = backfill(stack, args.partitions, again=True)
        finally:
            if not args.keep:
                stack("down", "-v", "--remove-orphans")
    load = os.getloadavg()[0]
    print(f"{args.partitions} partitions, one flow run each, every step in its own container "
          f"(load average at the end {load:.1f}, {os.cpu_count()} cores)")  # fmt: skip
    describe("1 worker", one, runs_one)
    describe(f"{args.workers} workers", many, runs_many)
    print(f"{args.workers} workers / 1 worker wall time: {many / one:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
