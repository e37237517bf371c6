"""How soon a `conveyor run` on a terminal shows its first line, against the interpreter's floor.

    python benchmarks/first_output.py [--rounds N]

On a pseudo-terminal (so the live progress view is on, as for a user), per round:
1. `python -c "print('x')"` of the same interpreter: the floor any CLI pays.
2. `python -m conveyor.cli --help`: the CLI's own import cost.
3. `conveyor run ticking` (cold cache, inprocess runner): seconds until the first frame
   ("loading ticking ...") and until the run's summary line.
Target (issue 17): the first frame within 1 s of start. Medians of interleaved rounds; every
process in its own session. Ratios are against the floor measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.terminal import record  # the repository root, put on the path above

FLOW = """
from conveyor import component, pipeline

@component
def tick(n: int) -> int:
    return n + 1

@pipeline
def ticking(n: int = 1):
    return tick(n)
"""


def _project(root: Path) -> Path:
    (root / "flows").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[tool.conveyor]\nflows = ["flows"]\n')
    (root / "flows" / "__init__.py").write_text("")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    floor, version, first, done = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = _project(Path(tmp) / "p")
        for _ in range(args.rounds):
            bare = record([sys.executable, "-c", "print('x')"], cwd=tmp, env=env)
            floor.append(bare.chunks[0][0])
            cli = record([sys.executable, "-m", "conveyor.cli", "--help"], cwd=tmp, env=env)
            version.append(cli.chunks[0][0])
            # a new marker each round: the cache is cold, the run does real work
            (root / "flows" / "ticking.py").write_text(FLOW + f"\n# {uuid.uuid4().hex}\n")
            run = record([sys.executable, "-m", "conveyor.cli", "run", "ticking", "--runner",
                          "inprocess"], cwd=str(root), env=env)  # fmt: skip
            if run.returncode != 0:
                raise SystemExit(f"conveyor run failed:\n{run.text}")
            first.append(run.frames()[0][0])
            ended = run.first(r"ticking succeeded in")
            done.append(ended if ended is not None else run.chunks[-1][0])
    base = statistics.median(floor)
    print(f"load now: {os.getloadavg()[0]:.1f} (2 cores); medians of {args.rounds} rounds")
    for label, values in (
        ("python -c print (floor)", floor),
        ("conveyor --help", version),
        ("conveyor run: first frame", first),
        ("conveyor run: summary line", done),
    ):
        median = statistics.median(values)
        print(f"{label:30s} {median:7.3f} s   {median / base:5.1f}x floor")
    verdict = "met" if statistics.median(first) <= 1.0 else "NOT met"
    print(f"target: first frame within 1 s -> {verdict}")


if __name__ == "__main__":
    main()
