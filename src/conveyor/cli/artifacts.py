"""`conveyor artifacts show REF [--to FILE]`: any recorded step output, printed or exported."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from conveyor.cli import app
from conveyor.cli.common import console, fail, settings

artifacts_app = typer.Typer(help="Step outputs in the artifact store.", no_args_is_help=True)
app.add_typer(artifacts_app, name="artifacts")

REF_HELP = (
    "RUN:STEP[.OUTPUT] (a run id or unique prefix; OUTPUT for NamedTuple fields) or the first "
    "6+ hex digits of a content hash, as `conveyor runs show` prints them."
)
HASH_PREFIX = re.compile(r"[0-9a-f]{6,64}")
# an output name after the step: `.field` outside the item brackets of a mapped step
STEP_OUTPUT = re.compile(r"(?P<step>.+?)(?:\.(?P<output>[A-Za-z_]\w*))?")


@artifacts_app.command("show")
def artifacts_show(
    ref: str = typer.Argument(..., help=REF_HELP),
    to: Path = typer.Option(None, "--to", help="Write the value to this file instead."),
    rows: int = typer.Option(10, "--rows", help="Rows of a DataFrame to print."),
) -> None:
    """Print a step output (a DataFrame's first rows, JSON, metrics), or export it with --to."""
    from conveyor.cli.values import export, preview, size_text
    from conveyor.db import lineage
    from conveyor.dsl.artifacts import ArtifactRef
    from conveyor.engine.store import ArtifactStore

    config = settings()
    if ":" in ref:
        run_id, _, rest = ref.partition(":")
        match = STEP_OUTPUT.fullmatch(rest)
        if not run_id or match is None or "]" in (match.group("output") or ""):
            fail(f"artifact {ref!r}: write it as RUN:STEP or RUN:STEP.OUTPUT")
        found = lineage.step_output(config, run_id, match["step"], match["output"] or "output")
    elif HASH_PREFIX.fullmatch(ref.lower()):
        matches = lineage.find_outputs(config, ref)
        hashes = {m.ref["sha256"] for m in matches}
        if not hashes:
            fail(f"no recorded step output has a content hash starting {ref!r}")
        if len(hashes) > 1:
            listed = ", ".join(sorted(h[:12] for h in hashes))
            fail(f"content hash prefix {ref!r} is ambiguous: {listed}; give more digits")
        found = matches[0]
    else:
        fail(f"artifact {ref!r}: {REF_HELP}")
    artifact = ArtifactRef.from_dict(found.ref)
    store = ArtifactStore(config.artifact_store, cache_dir=config.artifact_cache)
    label = f"{found.step}" + ("" if found.output == "output" else f".{found.output}")
    if to is not None:
        written = export(artifact, store, to)
        console.print(f"wrote {label} of run {found.run_id} to {written}")
        return
    console.print(
        f"{label} of run {found.run_id}: {artifact.codec.describe()}, "
        f"{size_text(artifact.size)}, sha256 {artifact.sha256}"
    )
    console.print(preview(artifact, store, rows=rows))
