"""write_table's speed, measured against its floor and against what users would write.

    python benchmarks/db_write.py [--rows 1000000] [--repeat 3] [--postgres URL] [--no-to-sql]

The frame: ROWS rows x 6 columns (a date spread over 30 days, an int64 id, three float64
columns, a text column), written as one ranged partition (the 30 days, partition_col="day").

PostgreSQL (URL from --postgres, CONVEYOR_BENCH_POSTGRES_URL, or the local server's `test`
database; everything happens in a throwaway schema):

1. `write_table` into a new table (it creates the table, takes the partition locks, checks the
   frame, deletes the partition — empty here — and COPYs the rows, in one transaction).
2. The floor: raw psycopg 3 `COPY ... FROM STDIN (FORMAT BINARY)` with `write_row` over the
   same rows into an identical empty table — the fastest way psycopg offers to load Python rows.
3. `DataFrame.to_sql(name, engine, index=False)` with every other argument at its default,
   through an SQLAlchemy engine on psycopg 3 — what users would write.
   Also shown: psycopg's default text-format COPY, and write_table replacing an existing
   partition of the same size (delete 1M rows + insert).

SQLite (a file in a temporary folder): write_table vs `to_sql` defaults vs a raw sqlite3
`executemany` in one transaction.

Every contender writes into a freshly dropped table; each measurement is repeated (interleaved,
so drift hits all alike) and the median is reported, with ratios computed from medians of the
same run. Targets: PostgreSQL write_table >= 0.7x the raw COPY's rows/s and >= 5x to_sql's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

DEFAULT_PG = os.environ.get(
    "CONVEYOR_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
START = date(2024, 1, 1)
DAYS = 30
COLUMNS = '"day" DATE, "id" BIGINT, "a" DOUBLE PRECISION, "b" DOUBLE PRECISION, ' \
    '"c" DOUBLE PRECISION, "name" TEXT'  # fmt: skip


def make_frame(rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(42)
    days = np.array([START + timedelta(n) for n in range(DAYS)], dtype=object)
    return pd.DataFrame(
        {
            "day": days[rng.integers(0, DAYS, rows)],
            "id": np.arange(rows, dtype=np.int64),
            "a": rng.random(rows),
            "b": rng.normal(size=rows),
            "c": rng.random(rows) * 1e6,
            "name": pd.Series([f"sym{i}" for i in rng.integers(0, 5000, rows)], dtype="str"),
        }
    )


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def measure(
    contenders: dict[str, tuple[Callable[[], None], Callable[[], None]]], repeat: int
) -> dict[str, list[float]]:
    """Run each (reset, write) pair `repeat` times, interleaved; return seconds per write."""
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeat):
        for name, (reset, write) in contenders.items():
            reset()
            seconds[name].append(timed(write))
    return seconds


def report(title: str, rows: int, seconds: dict[str, list[float]], floor: str) -> dict[str, float]:
    print(f"\n{title} — {rows:,} rows x 6 columns")
    medians = {name: statistics.median(times) for name, times in seconds.items()}
    width = max(map(len, medians))
    for name, median in medians.items():
        runs = ", ".join(f"{t:.2f}" for t in seconds[name])
        speed = rows / median
        ratio = medians[floor] / median
        print(
            f"  {name:<{width}}  {median:7.2f} s  {speed / 1e3:8.0f} k rows/s  "
            f"{ratio:5.2f}x {floor}'s speed   (runs: {runs})"
        )
    return medians


# --------------------------------------------------------------------------------- PostgreSQL


def bench_postgres(url: str, frame: pd.DataFrame, repeat: int, to_sql: bool) -> bool:
    """Everything happens in a throwaway schema, dropped even when a measurement fails."""
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(url, autocommit=True)
    admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        return _bench_postgres(url, admin, schema, frame, repeat, to_sql)
    finally:
        admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        admin.close()


def _bench_postgres(
    url: str, admin: Any, schema: str, frame: pd.DataFrame, repeat: int, to_sql: bool
) -> bool:
    import psycopg
    import sqlalchemy as sa

    from conveyor.db.database import Database, normalize_url
    from conveyor.db.writes import write_table

    scoped = f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"
    db = Database(scoped)
    db.ensure_schema()
    raw = psycopg.connect(scoped)
    engine = sa.create_engine(normalize_url(scoped))
    end = START + timedelta(DAYS - 1)
    names = list(frame.columns)

    def drop(table: str) -> Callable[[], None]:
        def reset() -> None:
            admin.execute(f'DROP TABLE IF EXISTS "{schema}"."{table}"')
            admin.execute(f"DELETE FROM \"{schema}\".conveyor_tables WHERE name = '{table}'")

        return reset

    def recreate(table: str) -> Callable[[], None]:
        def reset() -> None:
            drop(table)()
            admin.execute(f'CREATE TABLE "{schema}"."{table}" ({COLUMNS})')

        return reset

    def conveyor_write() -> None:
        write_table(db, frame, "bench_conveyor", START, end, "day")

    def raw_copy(fmt: str, index: bool = False) -> Callable[[], None]:
        table = f"bench_raw_{fmt}{'_indexed' if index else ''}"
        options = " (FORMAT BINARY)" if fmt == "binary" else ""

        def write() -> None:
            columns = [frame[c].tolist() for c in names]  # Python values, as psycopg needs
            with raw.transaction(), raw.cursor() as cursor:
                with cursor.copy(f'COPY "{table}" FROM STDIN{options}') as copy:
                    if fmt == "binary":
                        copy.set_types(["date", "int8", "float8", "float8", "float8", "text"])
                    for row in zip(*columns, strict=True):
                        copy.write_row(row)
                if index:  # the state write_table leaves: the partition column indexed
                    cursor.execute(f'CREATE INDEX ON "{table}" ("day")')

        return write

    contenders = {
        "write_table": (drop("bench_conveyor"), conveyor_write),
        "raw COPY binary": (recreate("bench_raw_binary"), raw_copy("binary")),
        "raw COPY binary + index": (
            recreate("bench_raw_binary_indexed"),
            raw_copy("binary", index=True),
        ),
        "raw COPY text": (recreate("bench_raw_text"), raw_copy("text")),
    }
    seconds = measure(contenders, repeat)
    # write_table replacing a full partition: the realistic re-run (delete + insert)
    seconds["write_table, rewrite"] = [timed(conveyor_write) for _ in range(repeat)]
    tables = ["bench_conveyor", "bench_raw_binary", "bench_raw_binary_indexed", "bench_raw_text"]
    if to_sql:
        contenders = {
            "to_sql defaults": (
                drop("bench_to_sql"),
                lambda: frame.to_sql("bench_to_sql", engine, index=False),
            )
        }
        seconds.update(measure(contenders, 1))  # tens of seconds; once is enough
        tables.append("bench_to_sql")
    for table in tables:
        count = admin.execute(f'SELECT count(*) FROM "{schema}"."{table}"').fetchone()
        assert count == (len(frame),), (table, count)
    medians = report("PostgreSQL", len(frame), seconds, "raw COPY binary")
    floor = medians["raw COPY binary"] / medians["write_table"]
    ok = floor >= 0.7
    print(f"  target: write_table >= 0.7x raw COPY: {floor:.2f}x  {'OK' if ok else 'MISSED'}")
    if to_sql:
        versus = medians["to_sql defaults"] / medians["write_table"]
        verdict = "OK" if versus >= 5 else "MISSED"
        print(f"  target: write_table >= 5x to_sql: {versus:.1f}x  {verdict}")
        ok = ok and versus >= 5
    raw.close()
    engine.dispose()
    db.close()
    return ok


# --------------------------------------------------------------------------------- SQLite


def bench_sqlite(frame: pd.DataFrame, repeat: int, to_sql: bool) -> None:
    import sqlite3

    import sqlalchemy as sa

    from conveyor.db.database import Database
    from conveyor.db.writes import write_table

    folder = Path(tempfile.mkdtemp(prefix="conveyor-bench-"))
    path = folder / "bench.db"
    db = Database(f"sqlite:///{path}")
    db.ensure_schema()
    engine = sa.create_engine(f"sqlite:///{path}")
    raw = sqlite3.connect(path, isolation_level=None)
    end = START + timedelta(DAYS - 1)

    def drop(table: str, create: bool = False) -> Callable[[], None]:
        def reset() -> None:
            raw.execute(f'DROP TABLE IF EXISTS "{table}"')
            raw.execute("DELETE FROM conveyor_tables WHERE name = ?", (table,))
            if create:
                raw.execute(f'CREATE TABLE "{table}" ({COLUMNS})')

        return reset

    def raw_executemany() -> None:
        columns = [frame[c].tolist() for c in frame.columns]
        columns[0] = [d.isoformat() for d in columns[0]]  # sqlite3 has no date type
        raw.execute("BEGIN")
        rows = zip(*columns, strict=True)
        raw.executemany('INSERT INTO "bench_raw" VALUES (?, ?, ?, ?, ?, ?)', rows)
        raw.execute("COMMIT")

    contenders = {
        "write_table": (
            drop("bench_conveyor"),
            lambda: write_table(db, frame, "bench_conveyor", START, end, "day"),
        ),
        "raw executemany": (drop("bench_raw", create=True), raw_executemany),
    }
    if to_sql:
        contenders["to_sql defaults"] = (
            drop("bench_to_sql"),
            lambda: frame.to_sql("bench_to_sql", engine, index=False),
        )
    seconds = measure(contenders, repeat)
    medians = report("SQLite", len(frame), seconds, "raw executemany")
    if to_sql:
        print(
            f"  write_table vs to_sql: {medians['to_sql defaults'] / medians['write_table']:.1f}x"
        )
    raw.close()
    engine.dispose()
    db.close()
    for file in folder.iterdir():
        file.unlink()
    folder.rmdir()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--postgres", default=DEFAULT_PG, help="PostgreSQL URL ('' to skip)")
    parser.add_argument("--no-to-sql", action="store_true", help="skip the slow to_sql runs")
    parser.add_argument("--no-sqlite", action="store_true")
    args = parser.parse_args()
    frame = make_frame(args.rows)
    print(f"python {sys.version.split()[0]}, pandas {pd.__version__}, {os.cpu_count()} CPUs")
    ok = True
    if args.postgres:
        ok = bench_postgres(args.postgres, frame, args.repeat, not args.no_to_sql)
    if not args.no_sqlite:
        bench_sqlite(frame, args.repeat, not args.no_to_sql)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
