"""How long `conveyor compile --target kfp` takes for the three reference flows, once their images
exist (pushed, recorded in the artifact store).

For each flow it measures, in one process after the imports: `conveyor.compile` (median of
`--repeat` runs: resolve the pushed images from their locks and records, publish bundles and
runtimes, build and check the spec), against a baseline taken in the same run: kfp compiling the
same pipeline again from its YAML (`load_component_from_file` + `Compiler().compile`, the part of
the work that is kfp's own YAML writing). It also times the `conveyor compile` command in a fresh
process, imports included.

Prerequisites: `conveyor images push features training batch_prediction --registry ...` with the
same CONVEYOR_HOME / CONVEYOR_ARTIFACTS (and, for batch_prediction, a database holding the
promoted model, or CONVEYOR_DATABASE_URL=none).

Usage: python benchmarks/kfp_compile.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLOWS = ("features", "training", "batch_prediction")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from kfp import compiler
    from kfp.components import load_component_from_file

    import conveyor

    with tempfile.TemporaryDirectory(prefix="kfp-compile-bench-") as folder:
        out = Path(folder)
        started = time.perf_counter()
        conveyor.compile(FLOWS[0], output=out / "warmup.yaml")  # imports, discovery, docker
        first = time.perf_counter() - started
        print(f"first compile in this process (imports, discovery): {first:.2f}s")
        columns = ("conveyor.compile", "kfp recompile", "ratio", "command")
        print(
            f"{'flow':<18}"
            + "".join(f"{c:>{w}}" for c, w in zip(columns, (18, 15, 8, 10), strict=True))
        )
        for flow in FLOWS:
            target = out / f"{flow}.yaml"
            ours = []
            for _ in range(args.repeat):
                ours.append(conveyor.compile(flow, output=target).seconds)
            theirs = []
            for _ in range(args.repeat):
                began = time.perf_counter()
                compiler.Compiler().compile(
                    load_component_from_file(str(target)), str(out / "rt.yaml")
                )
                theirs.append(time.perf_counter() - began)
            began = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "conveyor.cli", "compile", flow, "-o", str(target)],
                check=True, capture_output=True,
            )  # fmt: skip
            command = time.perf_counter() - began
            mine, base = statistics.median(ours), statistics.median(theirs)
            print(f"{flow:<18}{mine:>17.3f}s{base:>14.3f}s{mine / base:>7.1f}×{command:>9.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
