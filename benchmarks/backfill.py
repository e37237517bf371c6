"""Backfill throughput and engine overhead, measured against each other in one run.

    python benchmarks/backfill.py [--partitions 60] [--engine prefect|local]

1. A 60-partition backfill of a small pipeline (fetch -> transform -> write_table, the fetch
   waiting 0.4 s like a call to an outside system), serial vs `--concurrency 2`, venv runner,
   every partition a Prefect flow run tagged `backfill`. Target: concurrent ≤ 0.6× serial.
2. Engine overhead per step: a chain of 10 no-op steps (in-process runner, so only the engine
   is measured) under the local engine and under the Prefect engine, warm.

Uses a throwaway project and Prefect server (started here) so nothing else is touched.
"""

from __future__ import annotations

import argparse
import os
import statistics
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
def fetch(day: date, wait: float = 0.4) -> list:
    time.sleep(wait)
    return [day.toordinal() % 97, day.day]

@component
def transform(values: list, day: date) -> "pd.DataFrame":
    import pandas as pd
    return pd.DataFrame({"day": [day] * len(values), "value": values})

@component
def noop(x: int) -> int:
    return x
"""

FLOWS = """
from datetime import date
from conveyor import pipeline, write_table
from steps.bench import fetch, noop, transform

@pipeline(calendar="daily")
def small(day: date, table: str = "small"):
    write_table(transform(fetch(day), day), table, partition=day, partition_col="day")

@pipeline
def chain(x: int = 0):
    value = noop(x)
    for _ in range(9):
        value = noop(value)
    return value

@pipeline
def single(x: int = 0):
    return noop(x)
"""


def make_project() -> Path:
    root = Path(tempfile.mkdtemp(prefix="conveyor-backfill-bench-"))
    (root / "pyproject.toml").write_text('[tool.conveyor]\nflows = ["flows"]\n')
    for package in ("steps", "flows"):
        (root / package).mkdir()
        (root / package / "__init__.py").write_text("")
    (root / "steps" / "bench.py").write_text(textwrap.dedent(STEPS))
    (root / "flows" / "bench.py").write_text(textwrap.dedent(FLOWS))
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", type=int, default=60)
    parser.add_argument("--engine", default="prefect", choices=("prefect", "local"))
    args = parser.parse_args()

    from tests.integration.prefect_support import start_prefect_server, stop_process

    root = make_project()
    os.chdir(root)
    sys.path.insert(0, str(root))
    server = None
    if args.engine == "prefect":
        server, url = start_prefect_server(root / ".prefect-server")
        os.environ["PREFECT_API_URL"] = url
        os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"  # one line per result, not per task run
    try:
        import conveyor
        from conveyor.ops.backfill import backfill

        start = date(2024, 1, 1)
        end = start + timedelta(days=args.partitions - 1)
        print(f"project {root}; {os.cpu_count()} cores; engine {args.engine}")
        # warm-up: builds the environments once, so neither timing pays for that
        warm = backfill("small", start - timedelta(days=2), start - timedelta(days=1),
                        engine=args.engine, params={"table": "warmup"})  # fmt: skip
        assert warm.ok, warm.summary()

        timings = {}
        for concurrency in (1, 2):
            table = f"small_c{concurrency}"
            began = time.perf_counter()
            result = backfill("small", start, end, concurrency=concurrency, engine=args.engine,
                              params={"table": table}, reprocess="all")  # fmt: skip
            timings[concurrency] = time.perf_counter() - began
            assert result.ok, result.summary()
            print(f"1. {args.partitions} partitions, concurrency {concurrency}: "
                  f"{timings[concurrency]:6.1f} s ({timings[concurrency] / args.partitions:.2f} "
                  f"s per partition)")  # fmt: skip
        print(f"   concurrency 2 / serial: {timings[2] / timings[1]:.2f}x  (target <= 0.6x)")

        # marginal cost of a step = (10-step run - 1-step run) / 9; the rest is per run
        cost = {}
        for engine in ("local", args.engine):
            for name, steps in (("chain", 10), ("single", 1)):
                conveyor.run(name, {"x": -1}, runner="inprocess", engine=engine, hooks=[])
                samples = []
                for x in range(7):
                    began = time.perf_counter()
                    result = conveyor.run(name, {"x": x}, runner="inprocess", engine=engine,
                                          hooks=[])  # fmt: skip
                    assert result.ok
                    samples.append(time.perf_counter() - began)
                cost[engine, steps] = statistics.median(samples)
        for engine in ("local", args.engine):
            per_step = (cost[engine, 10] - cost[engine, 1]) / 9
            fixed = cost[engine, 1] - per_step
            print(
                f"2. {engine:<7} engine: {per_step * 1000:6.1f} ms per step, "
                f"{fixed * 1000:6.1f} ms per run (no-op steps, in-process runner, warm)"
            )
        ratio = (cost[args.engine, 10] - cost[args.engine, 1]) / max(
            cost["local", 10] - cost["local", 1], 1e-9
        )
        print(f"   {args.engine} / local per step: {ratio:.1f}x")
    finally:
        if server is not None:
            stop_process(server)


if __name__ == "__main__":
    main()
