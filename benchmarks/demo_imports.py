"""The cold demo's step import time: a fresh interpreter per step vs steps forked from warm servers.

    python benchmarks/demo_imports.py [--rounds N] [--sides fresh,warm,warm-first] [--cache DIR]

Issue 18, target: the cold demo's step import time cut by ≥ 40 % by the venv runner's warm
servers (CONVEYOR_WARM=on, the default) against a fresh interpreter per step (CONVEYOR_WARM=off).

What runs: `conveyor demo` (the three reference flows end to end, the venv runner, SQLite), each
time in a new copy of the repository's demo project (pyproject.toml, flows/, components/ and the
committed locks; no `.conveyor/` state, so no step result is cached and every step runs), as a
process of its own session, the sides alternating round by round. Every side uses the same
environments, built once before the first round by an unmeasured warm demo in a copy of its
own, under a folder of this benchmark (`--cache`, as CONVEYOR_ENV_DIR's parent: environments,
code bundles and conveyor's runtime; the user's shared cache is not touched).

Sides (CONVEYOR_WARM in the demo's process):
- fresh: `off`, every step starts a new interpreter in its sandbox;
- warm: `on`, steps fork from their environment's warm server, whose imports include what
  earlier steps of the environment imported (`conveyor-imports.json` in the environment's
  folder, as the build's warm demo and every earlier warm round left it: a user's second demo);
- warm-first: `on`, with every environment's `conveyor-imports.json` deleted first (a user's
  first demo after building: the servers learn during the run, importing a step's modules again
  after it).

The measure, step import time: every step process and warm server runs with
PYTHONPROFILEIMPORTTIME=1, and the "self" column of every `import time:` line it prints is
summed (self times add up to all the time spent importing, top-level and nested, with nothing
counted twice; the cumulative column of the top-level lines gives the same total, and is
printed as a check). A step's variables are only those the runner sets plus its component's
`env=` (which would also make it start a fresh interpreter), so the benchmark's driver, which
runs the demo as `conveyor demo` does, wraps the venv runner's `step_variables` to add
PYTHONPROFILEIMPORTTIME=1 for every step: fresh interpreters and warm servers alike get it (a
server is started with its steps' variables), and a forked step inherits the setting from its
server and reports only the imports it does itself. No library code is changed. Where the lines
are read: a step's stderr is its attempt's `log.txt` under `.conveyor/runs/`; a warm server's
output goes to the `conveyor.zygote` logger at debug level, which the driver writes to a file
(servers are closed, and their output drained, before the driver ends). A warm server's imports
count in full: it pays them once per environment, again whenever it is started anew (the pool
keeps at most MAX_SERVERS), and its importing of what a step taught it, between steps, too.

These are wall-clock times of each import, so they include waiting for a core: the demo runs
two steps at once here (max_parallel defaults to the cores), and on a loaded machine a fresh
interpreter's imports take longer than the same imports alone. The number of modules imported
(one `import time:` line each) is printed beside them as a count the load cannot move.

Also printed: step processes (attempt folders), interpreters started (each prints the import
profile's header once: fresh steps, servers, and any process a step starts), steps forked vs
started fresh on the warm sides (with the reasons the runner logged), each warm server start's
import seconds, the summed wall time of every step as the runner ran it (`VenvRunner.run`,
wrapped), the demo's wall time and its own account of what it ran (nothing cached). Figures are
medians over the rounds; the cut is 1 - warm / fresh of the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ("pyproject.toml", "flows", "components", ".conveyor/locks")
SIDES = {"fresh": "off", "warm": "on", "warm-first": "on"}  # CONVEYOR_WARM of each side

# Runs `conveyor demo` as the console script does, with the import profile on in every step
# process and warm server, the runner's per-step wall time kept, and the runner's warm-start
# log lines and the servers' output written to OUT/orchestrator.log.
DRIVER = """
import json, logging, sys, time
from pathlib import Path

import conveyor.runners.venv as venv
from conveyor.runners import zygote

out = Path(sys.argv[1])
plain_variables = venv.step_variables


def profiled(component, extra=None):
    return {**plain_variables(component, extra or {}), "PYTHONPROFILEIMPORTTIME": "1"}


venv.step_variables = profiled
walls = []
plain_run = venv.VenvRunner.run


def timed_run(self, task):
    started = time.perf_counter()
    try:
        return plain_run(self, task)
    finally:
        walls.append([task.step, time.perf_counter() - started])


venv.VenvRunner.run = timed_run
handler = logging.FileHandler(out / "orchestrator.log")
handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
for name in ("conveyor.zygote", "conveyor.venv"):
    logger = logging.getLogger(name)
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    logger.propagate = False

from conveyor.cli import main

sys.argv = ["conveyor", "demo"]
started = time.perf_counter()
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code or 0
elapsed = time.perf_counter() - started
servers = list(zygote.POOL._servers.values())
zygote.POOL.close()
for server in servers:  # every line a server printed, read before this process ends
    server._drained.wait(30)
handler.flush()
(out / "driver.json").write_text(json.dumps({"code": code, "elapsed": elapsed, "walls": walls}))
sys.exit(code)
"""

IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")
HEADER = "import time: self [us] | cumulative | imported package"


def copy_project(target: Path) -> Path:
    """The demo project as a new user gets it: no `.conveyor/` state but the committed locks."""
    for name in PROJECT:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def profile(lines: list[str]) -> dict[str, float]:
    """Seconds of import (sum of "self"; sum of top-level "cumulative"), modules imported and
    interpreters started (header lines) in `lines`."""
    own = top = 0
    headers = modules = 0
    for line in lines:
        if HEADER in line:
            headers += 1
            continue
        found = IMPORT_LINE.search(line)
        if found is None:
            continue
        own += int(found[1])
        modules += 1
        if len(found[3]) <= 1:  # the top level: one space after the bar, nested ones indent more
            top += int(found[2])
    return {"self": own / 1e6, "top": top / 1e6, "interpreters": headers, "modules": modules}


def forget_learned(env_dir: Path) -> int:
    """Delete what earlier steps taught each environment's warm server; how many lists went."""
    gone = 0
    for learned in env_dir.glob("*/conveyor-imports.json"):
        learned.unlink()
        gone += 1
    return gone


def demo(project: Path, out: Path, warm: str, env_dir: Path) -> dict:
    """One `conveyor demo` through the driver, in its own session; its measurements."""
    out.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.pop("PYTHONPROFILEIMPORTTIME", None)  # the orchestrator's own imports are not counted
    env.update({"CONVEYOR_WARM": warm, "CONVEYOR_ENV_DIR": str(env_dir), "COLUMNS": "120"})
    env.pop("PREFECT_API_URL", None)  # the local engine, as on a fresh machine
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, str(out)], cwd=project, env=env, capture_output=True,
        text=True, start_new_session=True, check=False,
    )  # fmt: skip
    wall = time.perf_counter() - started
    (out / "stdout.txt").write_text(proc.stdout)
    (out / "stderr.txt").write_text(proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"conveyor demo failed in {project}:\n{proc.stdout[-3000:]}"
                         f"{proc.stderr[-3000:]}")  # fmt: skip
    driver = json.loads((out / "driver.json").read_text())
    logs = sorted((project / ".conveyor" / "runs").glob("**/attempt-*/log.txt"))
    step_lines = [line for log in logs for line in log.read_text(errors="replace").splitlines()]
    orchestrator = (out / "orchestrator.log").read_text(errors="replace").splitlines()
    server = "conveyor.zygote DEBUG warm server "
    server_lines = [ln for ln in orchestrator if ln.startswith(server) and ": import time:" in ln]
    reasons: dict[str, int] = {}
    for line in orchestrator:
        for sign in ("starts cold: ", "starts a fresh interpreter: "):
            if sign in line:
                reason = line.split(sign, 1)[1]
                reasons[reason] = reasons.get(reason, 0) + 1
    said = proc.stdout.partition("this run:")[2]  # the demo's account of what it ran
    starts = [line for line in orchestrator if "DEBUG warm server for " in line]
    per_start: list[list] = []  # [environment, import seconds] of each server started
    for line in server_lines:
        key = line[len(server) :].split(":", 1)[0]
        if HEADER in line:
            per_start.append([key, 0.0])
        elif (found := IMPORT_LINE.search(line)) is not None and per_start:
            index = max(i for i, (k, _) in enumerate(per_start) if k == key)
            per_start[index][1] += int(found[1]) / 1e6
    attempts = len(list((project / ".conveyor" / "runs").glob("**/attempt-*")))
    return {
        "steps": profile(step_lines),
        "servers": profile(server_lines),
        "attempts": attempts,
        "runner_calls": len(driver["walls"]),
        "forked": sum("forked from the warm server" in line for line in orchestrator),
        "server_starts": len(starts),
        "environments": len({line.split()[5] for line in starts}),
        "per_start": per_start,
        "reasons": reasons,
        "step_wall": sum(seconds for _, seconds in driver["walls"]),
        "demo": driver["elapsed"],
        "process": wall,
        "summary": " ".join(said.partition("finished in")[0].split()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="demos per side (default 5)")
    parser.add_argument("--sides", default="fresh,warm,warm-first",
                        help=f"comma-separated, of {', '.join(SIDES)}")  # fmt: skip
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    parser.add_argument("--cache", type=Path, default=cache / "conveyor-bench-demo-imports",
                        help="environments, bundles, runtime (kept)")  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the demo copies and logs")
    args = parser.parse_args()
    sides = [s for s in args.sides.split(",") if s]
    unknown = set(sides) - set(SIDES)
    if unknown:
        parser.error(f"unknown side(s) {', '.join(sorted(unknown))}")
    if shutil.which("bwrap") is None:
        raise SystemExit("needs bubblewrap (apt-get install bubblewrap): the venv runner's "
                         "warm servers run in its sandbox")  # fmt: skip
    env_dir = (args.cache / "envs").resolve()
    work = Path(tempfile.mkdtemp(prefix="conveyor-demo-imports-"))
    print(f"copies under {work}   environments {env_dir}   python {sys.version.split()[0]}   "
          f"{os.cpu_count()} cores   load {os.getloadavg()[0]:.2f}")  # fmt: skip

    started = time.perf_counter()
    build = demo(copy_project(work / "build"), work / "build-out", "on", env_dir)
    assert build["runner_calls"] > 0, "the demo ran no step under the venv runner"
    print(f"environments built or found, and taught, by one warm demo (not measured): "
          f"{time.perf_counter() - started:.0f} s")  # fmt: skip

    runs: dict[str, list[dict]] = {side: [] for side in sides}
    loads = []
    for index in range(args.rounds):
        for side in sides:
            if side == "warm-first":
                forget_learned(env_dir)
            name = f"{side}-{index + 1}"
            loads.append(os.getloadavg()[0])
            got = demo(copy_project(work / name), work / f"{name}-out", SIDES[side], env_dir)
            runs[side].append(got)
            shown = got["steps"]["self"] + got["servers"]["self"]
            print(f"   round {index + 1} {side:10} imports {shown:7.2f} s   step wall "
                  f"{got['step_wall']:7.2f} s   demo {got['demo']:6.1f} s   "
                  f"load {os.getloadavg()[0]:.2f}")  # fmt: skip

    def median(side: str, fn) -> float:
        return statistics.median(fn(r) for r in runs[side])

    total = {side: median(side, lambda r: r["steps"]["self"] + r["servers"]["self"])
             for side in sides}  # fmt: skip
    print(f"\nmedians of {args.rounds} rounds, sides alternating; load average during the runs "
          f"{min(loads):.2f}..{max(loads):.2f} (1 min), {os.cpu_count()} cores")  # fmt: skip
    labels = {
        "fresh": "fresh interpreter per step (CONVEYOR_WARM=off)",
        "warm": "warm servers, learned imports (CONVEYOR_WARM=on)",
        "warm-first": "warm servers, first use (CONVEYOR_WARM=on, lists deleted)",
    }
    for side in sides:
        last = runs[side][-1]
        steps = median(side, lambda r: r["steps"]["self"])
        servers = median(side, lambda r: r["servers"]["self"])
        check = median(side, lambda r: r["steps"]["top"] + r["servers"]["top"])
        print(f"\n{labels[side]}")
        print(f"   step import time:      {total[side]:8.2f} s   (steps {steps:.2f} s + warm "
              f"servers {servers:.2f} s; top-level cumulative {check:.2f} s)")  # fmt: skip
        count = median(side, lambda r: r["steps"]["modules"] + r["servers"]["modules"])
        print(f"   modules imported:      {count:8.0f}     (a count: the load does not move it)")
        print(f"   step wall time (sum):  {median(side, lambda r: r['step_wall']):8.2f} s   "
              f"demo {median(side, lambda r: r['demo']):.1f} s")  # fmt: skip
        print(f"   step processes {last['attempts']} (runner calls {last['runner_calls']}), "
              f"interpreters started in steps {last['steps']['interpreters']}, forked "
              f"{last['forked']}, warm servers started {last['server_starts']} for "
              f"{last['environments']} environments (interpreters "
              f"{last['servers']['interpreters']})")  # fmt: skip
        if last["per_start"]:
            shown = ", ".join(f"{key} {seconds:.2f} s" for key, seconds in last["per_start"])
            print(f"   warm servers' imports, in start order (last round): {shown}")
        print(f"   the demo said (last round): {last['summary'].strip()}")
        for reason, times in sorted(last["reasons"].items()):
            print(f"   started fresh {times}x: {reason}")
    if "fresh" in total:
        for side in [s for s in sides if s != "fresh"]:
            cut = 1 - total[side] / total["fresh"]
            verdict = "met" if cut >= 0.40 else "NOT met"
            wall = [median(s, lambda r: r["step_wall"]) for s in ("fresh", side)]
            count = [median(s, lambda r: r["steps"]["modules"] + r["servers"]["modules"])
                     for s in ("fresh", side)]  # fmt: skip
            print(f"\n{side} vs fresh: import time {total['fresh']:.2f} s -> {total[side]:.2f} s, "
                  f"cut {cut * 100:.1f} % (ratio {total[side] / total['fresh']:.2f}; target "
                  f">= 40 %: {verdict}); modules imported {count[0]:.0f} -> {count[1]:.0f} "
                  f"({(1 - count[1] / count[0]) * 100:.1f} % fewer); step wall time "
                  f"{wall[0]:.1f} s -> {wall[1]:.1f} s "
                  f"(cut {(1 - wall[1] / wall[0]) * 100:.1f} %)")  # fmt: skip
    if args.keep:
        print(f"\ncopies and logs kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
