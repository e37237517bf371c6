"""A map of 200 no-op items vs 200 separate static steps, in-process, same run.

    python benchmarks/mapping.py [--items 200] [--repeat 5]

Both pipelines run the same no-op component 200 times through the engine (planning, the cache
check, the executor, bookkeeping) with the cache off; the map also expands its template at plan
time and names its items. Target: the map costs at most 2x the static steps.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

STEPS = """
from conveyor import component

@component
def noop(i: int) -> int:
    return i
"""

FLOWS = """
from conveyor import pipeline
from steps.bench import noop

ITEMS = {items}

@pipeline
def mapped(items: list = list(range(ITEMS))):
    noop.map(i=items)

@pipeline
def static():
    for i in range(ITEMS):  # traced once: ITEMS separate steps
        noop(i)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="conveyor-bench-map-"))
    (root / "pyproject.toml").write_text('[tool.conveyor]\nflows = ["flows"]\n')
    for package, text in (("steps", STEPS), ("flows", FLOWS.format(items=args.items))):
        (root / package).mkdir()
        (root / package / "__init__.py").write_text("")
        (root / package / "bench.py").write_text(textwrap.dedent(text))
    os.chdir(root)
    sys.path.insert(0, str(root))
    os.environ["CONVEYOR_DATABASE_URL"] = "none"

    from conveyor.engine.settings import Settings
    from conveyor.ops.discovery import resolve_pipeline
    from conveyor.ops.run import build_engine

    settings = Settings.load(root)
    engine = build_engine(settings, runner="inprocess", hooks=[], cache=False)
    pipelines = {name: resolve_pipeline(name, settings) for name in ("static", "mapped")}
    samples: dict[str, list[float]] = {name: [] for name in pipelines}
    for _ in range(args.repeat):  # interleaved, so load on the machine hits both alike
        for name, pipeline in pipelines.items():
            started = time.perf_counter()
            result = engine.run(pipeline, {})
            samples[name].append(time.perf_counter() - started)
            assert result.ok and len(result.steps) == args.items, result.error
    static, mapped = (statistics.median(samples[n]) for n in ("static", "mapped"))
    print(f"{args.items} static no-op steps, in-process: {static:6.2f} s "
          f"({static / args.items * 1000:.1f} ms per step)")  # fmt: skip
    print(f"a map of {args.items} no-op items:          {mapped:6.2f} s "
          f"({mapped / args.items * 1000:.1f} ms per item)   ratio {mapped / static:.2f}x  "
          f"(target <= 2x)")  # fmt: skip


if __name__ == "__main__":
    main()
