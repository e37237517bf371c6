"""Artifacts shown in the terminal: a one-line summary, a fuller preview, an export to a file.

A summary reads no more than it needs: a DataFrame's shape comes from its Parquet footer, and a
pickled (joblib) value is never unpickled just to be listed.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from conveyor.dsl.artifacts import ArtifactRef
from conveyor.dsl.placeholders import Binding
from conveyor.engine.results import RunResult
from conveyor.engine.store import ArtifactStore
from conveyor.errors import ArtifactError

INLINE_JSON_BYTES = 2048  # JSON values up to this size print inline in `runs show`
HEAD_ROWS = 5


def number(value: Any) -> str:
    """A metric at full precision: 157.209366 stays 157.209366 (repr is the shortest exact)."""
    if isinstance(value, float) and not math.isnan(value):
        return repr(value)
    return str(value)


def metrics_text(metrics: dict[str, Any]) -> str:
    """`name=value, ...` at full precision."""
    return ", ".join(f"{k}={number(v)}" for k, v in metrics.items())


def size_text(size: int) -> str:
    """Bytes as B, KB, MB or GB."""
    amount = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if amount < 1024 or unit == "GB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    raise AssertionError("unreachable")


def _frame_shape(path: Path) -> tuple[int, list[str]]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    schema = parquet.schema_arrow
    index = (schema.pandas_metadata or {}).get("index_columns", [])
    names = [n for n in schema.names if n not in index]
    return parquet.metadata.num_rows, names


def summary(ref: ArtifactRef, store: ArtifactStore, width: int = 60) -> str:
    """One line: a small JSON value itself, a DataFrame's shape, else format and size."""
    fmt = ref.codec.format
    try:
        if fmt == "json" and ref.size <= INLINE_JSON_BYTES:
            text = json.dumps(store.load(ref), default=str)
            if ref.codec.json_type == "metrics":
                text = metrics_text(store.load(ref))
            return text if len(text) <= width else text[: width - 1] + "…"
        if fmt == "parquet":
            rows, columns = _frame_shape(store.local_path(ref))
            return f"DataFrame {rows:,} rows × {len(columns)} columns"
        if fmt == "npy":
            value = store.load(ref)
            return f"ndarray {value.dtype} {tuple(value.shape)}"
    except (ArtifactError, OSError) as exc:
        return f"({ref.sha256[:12]}: {exc.__class__.__name__})"
    return f"{fmt}, {size_text(ref.size)}"


def preview(ref: ArtifactRef, store: ArtifactStore, rows: int = HEAD_ROWS) -> RenderableType:
    """The value for a terminal: JSON pretty-printed, a DataFrame's first rows, else repr."""
    fmt = ref.codec.format
    if fmt == "parquet":
        shape, table = frame_head(store.local_path(ref), rows)
        return Group(Text(shape), table)
    value = store.load(ref)
    if fmt == "json":
        if ref.codec.json_type == "metrics":
            return Text(metrics_text(value))
        return Text(json.dumps(value, indent=2, default=str))
    return Text(repr(value))


def frame_head(path: Path, rows: int = HEAD_ROWS) -> tuple[str, Table]:
    """A Parquet file's shape as text, and its first `rows` rows."""
    import pyarrow.parquet as pq

    total, columns = _frame_shape(path)
    parquet = pq.ParquetFile(path)
    head = next(parquet.iter_batches(batch_size=max(rows, 1), columns=columns), None)
    table = Table()
    for name in columns:
        table.add_column(name, overflow="fold")
    if head is not None:
        for record in head.slice(0, rows).to_pylist():
            table.add_row(*(number(record[c]) for c in columns))
    shape = f"DataFrame {total:,} rows × {len(columns)} columns"
    if total > rows:
        shape += f" (the first {rows})"
    return shape, table


EXPORTS = {
    "parquet": (".parquet", ".csv", ".json"),
    "npy": (".npy", ".csv"),
    "json": (".json",),
    "joblib": (".joblib",),
    "file": (),
    "dir": (".tar",),
}


def export(ref: ArtifactRef, store: ArtifactStore, target: Path) -> Path:
    """Write the value to `target`: the stored bytes when the suffix is the stored format's,
    else converted (a DataFrame to CSV or JSON lines, an array to CSV)."""
    fmt, suffix = ref.codec.format, target.suffix.lower()
    allowed = EXPORTS[fmt] or (suffix,)  # a file input keeps whatever name it is given
    if suffix not in allowed:
        raise ArtifactError(
            f"cannot export a {fmt} artifact to {target.name}: use a name ending in "
            f"{' or '.join(allowed)}"
        )
    source = store.local_path(ref)
    target.parent.mkdir(parents=True, exist_ok=True)
    if suffix == allowed[0] or fmt == "file":
        shutil.copyfile(source, target)
    elif fmt == "parquet":
        frame = store.load(ref)
        if suffix == ".csv":
            frame.to_csv(target, index=False)
        else:
            frame.to_json(target, orient="records", lines=True, date_format="iso")
    elif fmt == "npy":
        import numpy as np

        np.savetxt(target, store.load(ref), delimiter=",")
    else:
        shutil.copyfile(source, target)
    return target


def returned_summaries(result: RunResult) -> list[tuple[str, str]]:
    """(label, summary) of each value a run's pipeline returned, in order."""
    found: list[tuple[str, str]] = []

    def visit(binding: Any, label: str) -> None:
        if isinstance(binding, Binding) and binding.kind == "collect":
            for index, item in enumerate(binding.items):
                visit(item, f"{label}[{index}]")
        elif isinstance(binding, Binding) and binding.step is not None:
            step = result.steps.get(binding.step)
            ref = step.artifacts.get(binding.output or "output") if step else None
            if step is not None and ref is not None and step.store is not None:
                name = (
                    binding.step
                    if (binding.output or "output") == "output"
                    else (f"{binding.step}.{binding.output}")
                )
                found.append((label or name, summary(ref, step.store)))
        elif isinstance(binding, tuple):
            for index, item in enumerate(binding):
                visit(item, f"{label}[{index}]" if label else f"[{index}]")
        elif isinstance(binding, dict):
            for key, item in binding.items():
                visit(item, f"{label}.{key}" if label else key)

    visit(result.outputs, "")
    return found
