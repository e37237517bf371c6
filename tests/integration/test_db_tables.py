"""write_table and load_table against real SQLite and real PostgreSQL: idempotent partitions,
concurrent writers, a writer killed mid-write, schema and identifier checks, ranged writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conveyor.db.database import Database
from conveyor.db.names import TableName
from conveyor.db.reads import load_table
from conveyor.db.tables import table_columns
from conveyor.db.writes import write_table
from conveyor.dsl.artifacts import Codec
from conveyor.engine.store import ArtifactStore
from conveyor.errors import DatabaseError, TableSchemaError

WRITER = Path(__file__).with_name("db_writer.py")
D1 = date(2024, 3, 1)


def frame(n: int = 5, day: date | None = None, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    data = {
        "id": np.arange(n, dtype=np.int64),
        "x": rng.random(n),
        "name": pd.Series([f"n{i}" for i in range(n)], dtype="str"),
    }
    if day is not None:
        data = {"day": [day] * n, **data}
    return pd.DataFrame(data)


def rows(database: Database, table: str, day: date | None = None) -> pd.DataFrame:
    return load_table(database, table, start=day, end=day)


def content_hash(df: pd.DataFrame, tmp_path: Path) -> str:
    return ArtifactStore(tmp_path / "store").put(df, Codec("parquet")).sha256


# ----------------------------------------------------------------------------- idempotence


def test_writing_the_same_partition_twice_leaves_one_copy(db: Database) -> None:
    assert write_table(db, frame(5), "feats", D1) == 5
    assert write_table(db, frame(5), "feats", D1) == 5
    write_table(db, frame(3, seed=1), "feats", D1 + timedelta(1))
    assert len(rows(db, "feats", D1)) == 5
    assert len(rows(db, "feats")) == 8
    write_table(db, frame(2, seed=2), "feats", D1)  # a smaller rewrite replaces, never merges
    day = rows(db, "feats", D1)
    assert list(day["id"]) == [0, 1]
    assert day["x"].tolist() == frame(2, seed=2)["x"].tolist()
    assert len(rows(db, "feats", D1 + timedelta(1))) == 3


def test_a_key_partition_replaces_only_its_key(db: Database) -> None:
    # per-model predictions: each model's rows are rewritten without touching the others'
    write_table(db, frame(3), "preds", key={"model": "lda"})
    write_table(db, frame(2, seed=1), "preds", key={"model": "qda"})
    write_table(db, frame(1, seed=2), "preds", key={"model": "lda"})  # lda again, smaller
    table = rows(db, "preds").sort_values(["model", "id"])
    assert table["model"].tolist() == ["lda", "qda", "qda"]
    assert table[table.model == "qda"]["x"].tolist() == frame(2, seed=1)["x"].tolist()
    assert table[table.model == "lda"]["x"].tolist() == frame(1, seed=2)["x"].tolist()


def test_a_date_and_key_partition_replaces_that_day_of_that_key(db: Database) -> None:
    d2 = D1 + timedelta(1)
    for day, model, seed in ((D1, "lda", 0), (D1, "qda", 1), (d2, "lda", 2)):
        write_table(db, frame(3, day, seed), "preds", day, partition_col="day",
                    key={"model": model})  # fmt: skip
    write_table(db, frame(1, D1, 9), "preds", D1, partition_col="day", key={"model": "lda"})
    table = rows(db, "preds")
    counts = table.groupby([table["day"].astype(str), "model"]).size().to_dict()
    assert counts == {(str(D1), "lda"): 1, (str(D1), "qda"): 3, (str(d2), "lda"): 3}


def test_a_frame_holding_other_keys_is_refused_and_writes_nothing(db: Database) -> None:
    write_table(db, frame(2), "preds", key={"model": "lda"})
    wrong = frame(3).assign(model=["qda", "qda", "nb"])
    with pytest.raises(TableSchemaError, match=r"model='qda'.*1 row\(s\) of column 'model' hold"
                       r" other values \('nb'\)"):  # fmt: skip
        write_table(db, wrong, "preds", key={"model": "qda"})
    with pytest.raises(DatabaseError, match="a key value is a string or an integer"):
        write_table(db, frame(1), "preds", key={"model": 1.5})
    assert rows(db, "preds")["model"].tolist() == ["lda", "lda"]


def test_empty_frame_clears_its_partition(db: Database) -> None:
    write_table(db, frame(4), "feats", D1)
    write_table(db, frame(0), "feats", D1)
    assert rows(db, "feats", D1).empty


def test_a_new_table_needs_known_column_types(db: Database) -> None:
    untyped = pd.DataFrame(
        {"id": pd.Series([], dtype="int64"), "note": pd.Series([], dtype=object)}
    )
    assert write_table(db, untyped, "notes", D1) == 0  # nothing to write: no table yet
    with db.read() as conn:
        assert table_columns(conn, db.dialect, TableName("notes")) is None
    with pytest.raises(TableSchemaError, match="column 'note' holds only missing values"):
        write_table(db, pd.DataFrame({"id": [1], "note": [None]}), "notes", D1)
    write_table(db, pd.DataFrame({"id": [1], "note": ["typed"]}), "notes", D1)
    write_table(db, pd.DataFrame({"id": [2], "note": [None]}), "notes", D1)  # fits any type
    assert load_table(db, "notes")["note"].isna().all()


def test_unpartitioned_write_replaces_the_whole_table(db: Database) -> None:
    write_table(db, frame(4), "lookup")
    write_table(db, frame(2, seed=3), "lookup")
    assert list(load_table(db, "lookup")["id"]) == [0, 1]


# ----------------------------------------------------------------------------- processes


def _writer(url: str, table: str, day: date | str, n: int, tag: str, go: Path | None = None):
    args = [sys.executable, str(WRITER), url, table, str(day), str(n), tag]
    if go is not None:
        args.append(str(go))
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("table_exists", [True, False], ids=["replace", "create"])
def test_concurrent_writers_of_one_partition_leave_one_copy(
    db: Database, database_url: str, tmp_path: Path, table_exists: bool
) -> None:
    db.ensure_schema()
    if table_exists:
        write_table(db, frame(10), "feats", D1)  # an old copy the writers replace
    go = tmp_path / "go"
    procs = [_writer(database_url, "feats", D1, 40_000, f"w{i}", go) for i in range(3)]
    for proc in procs:  # every writer is connected and waiting before any starts
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    go.touch()
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert "written 40000" in out
    day = rows(db, "feats", D1)
    assert len(day) == 40_000
    assert day["name"].nunique() == 1  # one writer's rows, whole; the others replaced
    assert sorted(day["id"]) == list(range(40_000))


def test_concurrent_overlapping_ranges_never_duplicate_a_date(
    db: Database, database_url: str, tmp_path: Path
) -> None:
    db.ensure_schema()
    days = [D1 + timedelta(n) for n in range(7)]
    for round_ in range(3):
        go = tmp_path / f"go{round_}"
        spans = [f"{days[0]}..{days[4]}", f"{days[2]}..{days[6]}", f"{days[3]}..{days[3]}"]
        procs = [
            _writer(database_url, "ranged", span, 7_000, f"w{i}", go)
            for i, span in enumerate(spans)
        ]
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        go.touch()
        for proc in procs:
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err
        table = load_table(db, "ranged")
        per_day = table.groupby("day")["name"].agg(["nunique", "size"])
        assert (per_day["nunique"] == 1).all(), per_day  # each date from one writer only
        assert set(per_day.index) == set(days)
        for day, row in per_day.iterrows():  # and whole: all of that writer's rows for the date
            writer = table.loc[table["day"] == day, "name"].iloc[0]
            span = spans[int(writer[1:])].split("..")
            width = (date.fromisoformat(span[-1]) - date.fromisoformat(span[0])).days + 1
            assert row["size"] == -(-7_000 // width) or row["size"] == 7_000 // width


def test_writer_killed_mid_write_leaves_the_old_partition(
    db: Database, database_url: str, tmp_path: Path
) -> None:
    old = frame(1000, seed=7)
    write_table(db, old, "feats", D1)
    before = rows(db, "feats", D1)
    marker = f"killme_{uuid.uuid4().hex[:8]}"
    url = database_url
    if db.dialect == "postgresql":
        url = f"{database_url}&application_name={marker}"
    proc = _writer(url, "feats", D1, 3_000_000, "new")
    try:
        _wait_until_writing(db, proc, marker)
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert "written" not in out  # killed before its transaction committed
    after = rows(db, "feats", D1)
    pd.testing.assert_frame_equal(after, before)
    # its locks died with it: the partition can be rewritten at once
    started = time.monotonic()
    write_table(db, frame(3), "feats", D1)
    assert len(rows(db, "feats", D1)) == 3
    assert time.monotonic() - started < 30


def _wait_until_writing(db: Database, proc: subprocess.Popen, marker: str) -> None:
    """Block until the writer process is inside its bulk insert."""
    import sqlalchemy as sa

    deadline = time.monotonic() + 120
    wal = Path(db.engine.url.database or "").with_name(
        Path(db.engine.url.database or "x").name + "-wal"
    )
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"writer ended early: {proc.communicate()}"
        if db.dialect == "postgresql":
            with db.engine.connect() as conn:
                query = conn.execute(
                    sa.text(
                        "SELECT query FROM pg_stat_activity WHERE application_name = :m "
                        "AND state = 'active'"
                    ),
                    {"m": marker},
                ).scalar()
            if query and query.startswith("COPY"):
                time.sleep(0.3)  # well into the stream
                return
        elif wal.exists() and wal.stat().st_size > 20_000_000:
            return  # 20 MB of a ~100 MB uncommitted transaction are in the log
        time.sleep(0.02)
    raise AssertionError("the writer never started writing")


# ----------------------------------------------------------------------------- ranges


def test_a_range_written_at_once_equals_its_dates_written_one_by_one(
    db: Database, tmp_path: Path
) -> None:
    days = [D1 + timedelta(n) for n in range(5)]
    whole = pd.concat([frame(3, d, seed=i) for i, d in enumerate(days)], ignore_index=True)
    write_table(db, whole, "ranged", days[0], days[-1], "day")
    for day in days:
        write_table(db, whole[whole["day"] == day], "by_day", day, day, "day")
    write_table(db, whole[whole["day"] <= days[2]], "grouped", days[0], days[2], "day")
    write_table(db, whole[whole["day"] > days[2]], "grouped", days[3], days[4], "day")
    loaded = [load_table(db, t) for t in ("ranged", "by_day", "grouped")]
    pd.testing.assert_frame_equal(loaded[0], loaded[1])
    pd.testing.assert_frame_equal(loaded[0], loaded[2])
    assert len({content_hash(df, tmp_path) for df in loaded}) == 1
    # rewriting a sub-range replaces exactly those dates
    write_table(db, frame(1, days[1], seed=9), "ranged", days[1], days[2], "day")
    counts = load_table(db, "ranged")["day"].value_counts().to_dict()
    assert counts == {days[0]: 3, days[1]: 1, days[3]: 3, days[4]: 3}


def test_ranged_write_with_rows_outside_the_range_is_refused(db: Database) -> None:
    write_table(db, frame(2, D1), "ranged", D1, D1, "day")
    stray = pd.concat([frame(2, D1), frame(1, D1 + timedelta(5))], ignore_index=True)
    with pytest.raises(TableSchemaError) as caught:
        write_table(db, stray, "ranged", D1, D1 + timedelta(1), "day")
    assert "rows of 'day' run from 2024-03-01 to 2024-03-06, outside the partition " in str(
        caught.value
    )
    assert len(load_table(db, "ranged")) == 2


def test_ranged_write_without_partition_col_is_refused(db: Database) -> None:
    with pytest.raises(DatabaseError, match="needs partition_col, the frame's date column"):
        write_table(db, frame(2), "feats", D1, D1 + timedelta(1))


def test_partition_column_must_match_how_the_table_was_created(db: Database) -> None:
    write_table(db, frame(2, D1), "feats", D1, partition_col="day")
    with pytest.raises(TableSchemaError) as caught:
        write_table(db, frame(2, D1), "feats", D1)
    assert "the table was created with partition_col='day'; this write uses " in str(caught.value)


# ----------------------------------------------------------------------------- checks


def _unchanged(db: Database, table: str, before: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(load_table(db, table), before)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda f: f.drop(columns=["x"]),
            "column 'x' (double precision) is in the table but missing from the frame",
        ),
        (
            lambda f: f.assign(extra=1),
            "column 'extra' (bigint) is in the frame but not in the table",
        ),
        (
            lambda f: f.assign(x=f["name"]),
            "column 'x' is text in the frame (dtype str) but double precision in the table",
        ),
        (
            lambda f: f.assign(id=f["id"].astype(float) + 0.5),
            "column 'id' is double precision in the frame (dtype float64) but bigint in the table",
        ),
    ],
    ids=["missing", "extra", "text-for-double", "double-for-bigint"],
)
def test_schema_mismatch_fails_clearly_and_writes_nothing(db: Database, change, message) -> None:
    write_table(db, frame(4), "feats", D1)
    before = load_table(db, "feats")
    with pytest.raises(TableSchemaError) as caught:
        write_table(db, change(frame(4, seed=5)), "feats", D1)
    text = str(caught.value)
    assert text.startswith("write_table('feats'): the frame does not match the table: ")
    assert message in text
    assert "Nothing was written." in text
    _unchanged(db, "feats", before)


def test_integers_widen_into_a_double_column(db: Database) -> None:
    write_table(db, frame(2), "feats", D1)
    write_table(db, frame(2).assign(x=[1, 2]), "feats", D1)
    assert load_table(db, "feats")["x"].tolist() == [1.0, 2.0]


@pytest.mark.parametrize(
    ("table", "columns", "message"),
    [
        ("feats; DROP TABLE feats", None, "table name 'feats; DROP TABLE feats' is not a valid"),
        ('feats"', None, "table name 'feats\"' is not a valid identifier"),
        ("a.b.c", None, "has more than one dot"),
        ("conveyor_runs", None, "table name 'conveyor_runs' is reserved"),
        ("feats", ["id", "ID"], "columns 'id' and 'ID' differ only in case"),
        ("feats", ["id", "x" * 64], "is longer than 63 bytes"),
        ("feats", ["id", " "], "column name ' ' is empty"),
        ("feats", ["id", "a\x00b"], "column name 'a\\x00b' contains a NUL character"),
    ],
)
def test_bad_identifiers_are_refused_and_nothing_changes(
    db: Database, table: str, columns: list[str] | None, message: str
) -> None:
    write_table(db, frame(3), "feats", D1)
    before = load_table(db, "feats")
    bad = frame(3)
    if columns is not None:
        bad = pd.DataFrame({c: [1, 2, 3] for c in columns})
    with pytest.raises(TableSchemaError) as caught:
        write_table(db, bad, table, D1)
    assert message in str(caught.value)
    _unchanged(db, "feats", before)


def test_partition_col_and_load_columns_are_names_never_sql(db: Database) -> None:
    write_table(db, frame(3), "feats", D1)
    with pytest.raises(TableSchemaError, match="partition_col 'day; --' is not a column of"):
        write_table(db, frame(3, D1), "other", D1, partition_col="day; --")
    with pytest.raises(DatabaseError, match="no column 'x; DROP TABLE feats'; the table has"):
        load_table(db, "feats", columns=["x; DROP TABLE feats"])
    with db.read() as conn:
        assert table_columns(conn, db.dialect, TableName("other")) is None
    assert len(load_table(db, "feats")) == 3


# Column names as datasets spell them (scikit-learn's breast cancer and iris data), and the
# characters that mean something to SQL, SQLAlchemy's text() or psycopg's client-side binding.
ODD_NAMES = [
    "mean radius", "worst concave points", "sepal length (cm)", "od280/od315", "growth %",
    "ratio:b", "a :b", 'say "hi"', "x\") --", "select", "Ünïcode ✓",
]  # fmt: skip


def test_column_names_that_are_not_identifiers_are_quoted_and_round_trip(db: Database) -> None:
    day = "trade day"  # the partition column is one of them too
    data = {name: [float(i), float(i) + 0.5] for i, name in enumerate(ODD_NAMES)}
    first = pd.DataFrame({day: [D1, D1], **data})
    write_table(db, first, "cancer", D1, partition_col=day)
    second = first.assign(**{day: [D1 + timedelta(1)] * 2})
    write_table(db, second, "cancer", D1 + timedelta(1), partition_col=day)
    write_table(db, first.assign(**{"growth %": [9.0, 9.5]}), "cancer", D1, partition_col=day)
    with db.read() as conn:
        stored = table_columns(conn, db.dialect, TableName("cancer"))
    assert stored is not None and [c.name for c in stored] == [day, *ODD_NAMES]
    back = load_table(db, "cancer", start=D1, end=D1)  # a bounded read binds parameters
    assert list(back.columns) == [day, *ODD_NAMES]
    assert back["growth %"].tolist() == [9.0, 9.5]
    assert back['x") --'].tolist() == data['x") --']
    chosen = load_table(db, "cancer", columns=["a :b", 'say "hi"'], days=2, end=D1 + timedelta(1))
    assert list(chosen.columns) == ["a :b", 'say "hi"'] and len(chosen) == 4
    assert len(load_table(db, "cancer")) == 4


def test_unsupported_dtype_is_named(db: Database) -> None:
    bad = frame(2).assign(gap=pd.to_timedelta([1, 2], unit="s"))
    with pytest.raises(TableSchemaError) as caught:
        write_table(db, bad, "feats", D1)
    assert "column 'gap' has dtype timedelta64" in str(caught.value)
    assert "which conveyor cannot store" in str(caught.value)


def test_values_are_bound_not_formatted(db: Database) -> None:
    nasty = "'); DROP TABLE feats; --"
    write_table(db, frame(1).assign(name=[nasty]), "feats", D1)
    assert load_table(db, "feats")["name"].tolist() == [nasty]


# ----------------------------------------------------------------------------- load_table


def test_load_table_dates_columns_dtypes_and_order(db: Database, tmp_path: Path) -> None:
    days = [D1 + timedelta(n) for n in range(10)]
    for i, day in enumerate(days):
        shuffled = frame(4, seed=i).sample(frac=1, random_state=i)  # insertion order varies
        write_table(db, shuffled, "feats", day)
    window = load_table(db, "feats", end=days[-1], days=3)
    assert list(window.columns) == ["id", "x", "name"]  # conveyor's partition key stays out
    assert window.dtypes.astype(str).tolist() == ["Int64", "float64", "str"]
    keyed = load_table(db, "feats", end=days[-1], days=3,
                       columns=["id", "x", "name", "conveyor_partition"])  # fmt: skip
    assert sorted(set(keyed["conveyor_partition"])) == days[-3:]
    assert list(keyed["conveyor_partition"]) == sorted(keyed["conveyor_partition"])
    again = load_table(db, "feats", start=days[-3], end=days[-1])
    lookback = load_table(db, "feats", start=days[-1], end=days[-1], days=2,
                          columns=["conveyor_partition"])  # 2 days before  # fmt: skip
    assert sorted(set(lookback["conveyor_partition"])) == days[-3:]
    assert content_hash(window, tmp_path) == content_hash(again, tmp_path)
    subset = load_table(db, "feats", start=days[2], end=days[2], columns=["x", "id"])
    assert list(subset.columns) == ["x", "id"]
    assert sorted(subset["id"]) == [0, 1, 2, 3]
    assert subset["x"].is_monotonic_increasing  # then ordered by the columns asked for
    empty = load_table(db, "feats", start=date(2030, 1, 1))
    assert empty.empty and empty.dtypes.astype(str).tolist() == window.dtypes.astype(str).tolist()


def test_load_table_errors(db: Database) -> None:
    write_table(db, frame(2), "feats", D1)
    with pytest.raises(DatabaseError, match="load_table\\('nope'\\): there is no such table"):
        load_table(db, "nope")
    with pytest.raises(DatabaseError, match="no column 'zz'; the table has id, x, name"):
        load_table(db, "feats", columns=["zz"])
    with pytest.raises(DatabaseError, match="days=3 counts back from end="):
        load_table(db, "feats", days=3)
    with pytest.raises(DatabaseError, match="days must be a positive integer"):
        load_table(db, "feats", end=D1, days=0)


def test_round_trip_of_every_type(db: Database) -> None:
    data = pd.DataFrame(
        {
            "flag": pd.array([True, None, False], dtype="boolean"),
            "count": pd.array([1, None, -(2**62)], dtype="Int64"),
            "value": [1.25, np.nan, -np.inf],
            "label": pd.Series(["a", None, ""], dtype="str"),
            "day": [date(2024, 1, 1), None, date(1999, 12, 31)],
            "moment": pd.to_datetime(
                ["2024-01-01 10:00:00.123456", None, "1970-01-01 00:00:00"], format="ISO8601"
            ),
            "aware": pd.to_datetime(["2024-01-01 10:00", "2024-06-01 00:00", None]).tz_localize(
                "Europe/Paris"
            ),
            "blob": [b"\x00\xff", None, b""],
        }
    )
    write_table(db, data, "every", D1)
    back = load_table(db, "every")
    back = back.sort_values("value", na_position="last").reset_index(drop=True)
    expected = data.sort_values("value", na_position="last").reset_index(drop=True)
    assert back["flag"].tolist() == expected["flag"].tolist()
    assert back["count"].tolist() == expected["count"].tolist()
    assert back["value"].tolist()[:2] == [-np.inf, 1.25] and np.isnan(back["value"][2])
    assert back["label"].fillna("<NA>").tolist() == expected["label"].fillna("<NA>").tolist()
    assert back["day"].tolist() == expected["day"].tolist()
    assert back["moment"].tolist() == expected["moment"].tolist()
    assert back["aware"].tolist() == expected["aware"].dt.tz_convert("UTC").tolist()
    assert back["blob"].tolist() == expected["blob"].tolist()


@pytest.mark.parametrize(
    "shape",
    [
        {"a": [1, 2, 3], "s": ["x", "yy", ""], "t": ["p", "q", "r"], "f": [0.5, 1.5, 2.5]},
        {"s": ["x", None, "z"], "a": [1, 2, 3], "f": [np.nan, 1.0, 2.0]},
        {"b": [b"\x00", b"", b"\xff" * 300], "d": [date(1900, 1, 1), D1, date(2100, 12, 31)]},
        {"flag": [True, False, True], "only": [7, 8, 9]},
    ],
    ids=["text-after-record", "nulls-everywhere", "bytes-and-far-dates", "fixed-only"],
)
def test_column_layouts_round_trip(db: Database, shape: dict) -> None:
    data = pd.DataFrame(shape)
    for column in data.columns:
        if data[column].dtype == object and isinstance(data[column].dropna().iloc[0], str):
            data[column] = data[column].astype("str")
    write_table(db, data, "layout", D1)
    back = load_table(db, "layout")
    for column in data.columns:
        expected = [None if pd.isna(v) else v for v in data[column]]
        actual = [None if pd.isna(v) else v for v in back[column]]
        assert sorted(actual, key=repr) == sorted(expected, key=repr), column
