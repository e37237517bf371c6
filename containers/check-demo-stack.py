"""Does `docker-compose up` give a living demo? Replayed runs succeed and their rows land.

    python3 containers/check-demo-stack.py [--minutes 10] [--runs 5] [--no-up] [--down]

Brings the stack of docker-compose.yml up from this checkout (unless --no-up: it is already up),
then waits until at least `--runs` replayed runs of `features-daily` and of
`batch-prediction-daily` completed in Prefect and their rows are in the stack's PostgreSQL,
within `--minutes` of starting. Prints what it saw as it goes and how long each took; exits 1 if
the stack did not get there in time. Standard library only, so it runs with any python3.
`.ci/run` runs it after the tests, once the compose images and the reference flows' step images
(`conveyor images build features training batch_prediction`) are built.

Measured 2026-12-03 (2 cores, load 4-6): warm (images built) up in 31 s, the first replayed run
succeeded after 81 s, five of each after 342 s. Cold (the first start on this machine: three
image builds and every step image of the reference flows) the first success came after 631 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENTRIES = ("features-daily", "batch-prediction-daily")


def compose_command() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return ["docker", "compose"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--project", default="conveyor-demo", help="docker-compose project name")
    parser.add_argument("--port", default=os.environ.get("CONVEYOR_UI_PORT", "4200"))
    parser.add_argument("--no-up", action="store_true", help="the stack is already up")
    parser.add_argument(
        "--down", action="store_true", help="take the stack down (and its volumes) after"
    )
    args = parser.parse_args()
    env = {**os.environ, "CONVEYOR_UI_PORT": str(args.port)}
    base = [*compose_command(), "-p", args.project, "-f", str(REPO / "docker-compose.yml")]

    def compose(*more: str, timeout: float = 300) -> str:
        try:
            proc = subprocess.run([*base, *more], cwd=REPO, env=env, capture_output=True,
                                  text=True, timeout=timeout, check=False)  # fmt: skip
        except subprocess.TimeoutExpired:  # a loaded machine: say so, and go on
            return f"(docker-compose {' '.join(more[:3])} did not answer in {timeout:g} s)"
        return proc.stdout

    began = time.monotonic()
    try:
        if not args.no_up:
            print("docker-compose up -d --build ...", flush=True)
            subprocess.run([*base, "up", "-d", "--build"], cwd=REPO, env=env, check=True,
                           timeout=1800)  # fmt: skip
            print(f"  up after {time.monotonic() - began:.0f} s", flush=True)
        api = f"http://127.0.0.1:{args.port}/api"
        deadline = began + args.minutes * 60
        seen: dict[str, int] = {}
        first_success: float | None = None
        while time.monotonic() < deadline:
            counts = _completed_replays(api)
            if counts != seen:
                seen = counts
                print(f"  {time.monotonic() - began:4.0f} s: completed replayed runs {counts}",
                      flush=True)  # fmt: skip
                if first_success is None and any(counts.values()):
                    first_success = time.monotonic() - began
            if all(counts.get(name, 0) >= args.runs for name in ENTRIES):
                break
            time.sleep(10)
        rows = compose("exec", "-T", "postgres", "psql", "-U", "postgres", "-d", "conveyor",
                       "-tAc", "select (select count(*) from features where date >= '1980-01-01'),"
                       " (select count(*) from predictions where not shadow)")  # fmt: skip
        status = compose("exec", "-T", "worker", "conveyor", "replay", "status")
        print(status)
        ok = all(seen.get(name, 0) >= args.runs for name in ENTRIES)
        features, predictions = (rows.strip() if "|" in rows else "0|0").split("|")
        print(f"replayed runs completed: {seen}; rows since 1980: features {features}, "
              f"production predictions {predictions}; first success after "
              f"{first_success or float('nan'):.0f} s, checked after "
              f"{time.monotonic() - began:.0f} s")  # fmt: skip
        ok = ok and int(features) >= args.runs and int(predictions) >= args.runs
        if not ok:
            print(compose("logs", "--tail", "80", "worker"), file=sys.stderr)
        print("OK" if ok else f"FAILED: fewer than {args.runs} replayed runs of each within "
              f"{args.minutes:g} minutes")  # fmt: skip
        return 0 if ok else 1
    finally:
        if args.down:
            compose("down", "-v", "--remove-orphans", timeout=300)


def _completed_replays(api: str) -> dict[str, int]:
    body = json.dumps({"flow_runs": {"tags": {"all_": ["replay"]},
                                     "state": {"type": {"any_": ["COMPLETED"]}}},
                       "limit": 200}).encode()  # fmt: skip
    request = urllib.request.Request(f"{api}/flow_runs/filter", data=body,
                                     headers={"content-type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            runs = json.load(response)
    except OSError:
        return {}
    counts: dict[str, int] = {}
    for run in runs:
        entry = run["name"].split(" ")[0]
        counts[entry] = counts.get(entry, 0) + 1
    return counts


if __name__ == "__main__":
    sys.exit(main())
