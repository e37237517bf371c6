"""A separate writer process for the database tests (run as a script, never collected).

    python db_writer.py URL TABLE DAY|START..END ROWS TAG [GO_FILE]

Builds ROWS rows (columns id, x, name; name = TAG), prints `ready`, waits until GO_FILE exists
(so several writers start together), writes them as partition DAY of TABLE with write_table (a
range START..END spreads them over its dates in a `day` column), and prints `written N`.
"""

from __future__ import annotations

import sys
import time
import zlib
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from conveyor.db.database import Database
from conveyor.db.writes import write_table


def frame(rows: int, tag: str) -> pd.DataFrame:
    rng = np.random.default_rng(zlib.crc32(tag.encode()))
    return pd.DataFrame(
        {
            "id": np.arange(rows, dtype=np.int64),
            "x": rng.random(rows),
            "name": pd.Series([tag] * rows, dtype="str"),
        }
    )


def main() -> None:
    url, table, day, rows, tag = sys.argv[1:6]
    go = Path(sys.argv[6]) if len(sys.argv) > 6 else None
    data = frame(int(rows), tag)
    first, _, last = day.partition("..")
    start = date.fromisoformat(first)
    end = date.fromisoformat(last) if last else None
    partition_col = None
    if end is not None:  # a range: spread the rows over its dates, written with partition_col
        span = (end - start).days + 1
        data.insert(0, "day", [start + timedelta(i % span) for i in range(len(data))])
        partition_col = "day"
    db = Database(url)
    db.ensure_schema()
    print("ready", flush=True)
    while go is not None and not go.exists():
        time.sleep(0.005)
    written = write_table(db, data, table, start, end, partition_col)
    print(f"written {written}", flush=True)


if __name__ == "__main__":
    main()
