"""Declared tables (`conveyor.Table`) on real SQLite and PostgreSQL: the first write creates the
table from the declaration, every write is checked against it before anything is written, a
table that differs from its declaration names the migration, and `conveyor db tables` /
`conveyor db drop-table` show and drop tables."""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

import conveyor
from conveyor import Table
from conveyor.db.database import Database
from conveyor.db.names import TableName
from conveyor.db.reads import load_table
from conveyor.db.tables import drop_user_table, primary_key, table_columns
from conveyor.db.writes import write_table
from conveyor.errors import DatabaseError, TableSchemaError
from tests.conftest import Project

D1 = date(2024, 3, 1)
D2 = D1 + timedelta(1)

PRICES = Table(
    "prices",
    columns={"day": "date", "symbol": str, "close": float, "volume": "bigint", "note": str},
    key=("day", "symbol"),
    nullable=("note",),
)


def prices(day: date = D1, **changes: list) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "day": [day, day, day],
            "symbol": ["AAA", "BBB", "CCC"],
            "close": [10.0, 20.5, 30.25],
            "volume": [100, 200, 300],
            "note": [None, "halted", None],
        }
    )
    return frame.assign(**changes)


def columns_of(db: Database, table: str) -> dict[str, tuple[str | None, bool, int]]:
    with db.read() as conn:
        found = table_columns(conn, db.dialect, TableName(table))
    assert found is not None, f"no table {table}"
    return {c.name: (c.kind, c.nullable, c.key) for c in found}


def exists(db: Database, table: str) -> bool:
    with db.read() as conn:
        return table_columns(conn, db.dialect, TableName(table)) is not None


# ----------------------------------------------------------------------------- creation


def test_the_first_write_creates_the_table_from_the_declaration_not_the_frame(
    db: Database,
) -> None:
    # the frame's own dtypes would say: volume float (a whole-number double would not fit the
    # declaration, so it is integers here), note all-missing (no type at all)
    first = prices(note=[None, None, None], volume=[1, 2, 3])
    assert write_table(db, first, PRICES, D1, partition_col="day") == 3
    assert columns_of(db, "prices") == {
        "day": ("date", False, 1),
        "symbol": ("text", False, 2),
        "close": ("double", False, 0),
        "volume": ("bigint", False, 0),
        "note": ("text", True, 0),
    }
    back = load_table(db, PRICES, start=D1, end=D1)
    assert back["symbol"].tolist() == ["AAA", "BBB", "CCC"] and back["note"].isna().all()


def test_an_empty_first_write_still_creates_the_declared_table(db: Database) -> None:
    assert write_table(db, prices().iloc[:0], PRICES, D1, partition_col="day") == 0
    assert columns_of(db, "prices")["close"] == ("double", False, 0)


def test_a_bad_first_day_creates_nothing_and_good_days_then_write(db: Database) -> None:
    """The issue: a bad first day used to create `close` as TEXT and fail every later day."""
    bad = prices(close=["n/a", "20.5", "30.25"])  # one unparsable cell: the column is text
    with pytest.raises(TableSchemaError) as caught:
        write_table(db, bad, PRICES, D1, partition_col="day")
    text = str(caught.value)
    assert text.startswith("write_table('prices'): column 'close' is declared double precision")
    assert "the first value that is not double precision: 'n/a' (str)" in text
    assert "on partition date 2024-03-01 (row 0)" in text and "Nothing was written." in text
    assert not exists(db, "prices")
    write_table(db, prices(D2), PRICES, D2, partition_col="day")
    assert columns_of(db, "prices")["close"] == ("double", False, 0)
    assert load_table(db, "prices")["close"].tolist() == [10.0, 20.5, 30.25]


def test_a_managed_partition_leads_the_key(db: Database) -> None:
    table = Table("ticks", columns={"symbol": str, "price": float}, key="symbol")
    frame = pd.DataFrame({"symbol": ["A", "B"], "price": [1.0, 2.0]})
    write_table(db, frame, table, D1)
    write_table(db, frame, table, D2)  # the same symbols on another date: a different key
    found = columns_of(db, "ticks")
    assert found["conveyor_partition"] == ("date", False, 1) and found["symbol"][2] == 2
    assert len(load_table(db, table)) == 4


# ----------------------------------------------------------------------------- frame checks


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (
            prices().drop(columns=["note"]),
            "the frame does not match the table's declaration: column 'note' (text) is "
            "declared but missing from the frame",
        ),
        (
            prices(extra=[1, 2, 3]),
            "the frame does not match the table's declaration: column 'extra' is in the frame "
            "but not declared",
        ),
        (
            prices(volume=[1.0, 2.5, 3.0]),
            "column 'volume' is declared bigint, but the frame holds double precision (dtype "
            "float64); the first value that is not bigint: 1.0 (float64) on partition date "
            "2024-03-01 (row 0)",
        ),
        (
            prices(close=[1.0, "bad", 3.0]),
            "column 'close' is declared double precision, but the frame holds values of several "
            "types (dtype object); the first value that is not double precision: 'bad' (str) "
            "on partition date 2024-03-01 (row 1)",
        ),
        (
            prices(close=[1.0, 2.0, None]),
            "column 'close' may not hold missing values (it is NOT NULL), but 1 row(s) do, the "
            "first on partition date 2024-03-01 (row 2)",
        ),
        (
            prices(symbol=["AAA", "BBB", "BBB"]),
            "key (day, symbol) is not unique: day=2024-03-01, symbol='BBB' appears 2 times, "
            "first on partition date 2024-03-01 (row 1)",
        ),
    ],
    ids=["missing", "extra", "double-for-bigint", "mixed", "null", "duplicate-key"],
)
def test_a_frame_that_does_not_fit_its_declaration_writes_nothing(
    db: Database, frame: pd.DataFrame, message: str
) -> None:
    write_table(db, prices(), PRICES, D1, partition_col="day")
    before = load_table(db, "prices")
    with pytest.raises(TableSchemaError) as caught:
        write_table(db, frame, PRICES, D1, partition_col="day")
    assert str(caught.value).startswith("write_table('prices'): ")
    assert message in str(caught.value)
    assert "Nothing was written." in str(caught.value)
    pd.testing.assert_frame_equal(load_table(db, "prices"), before)


def test_a_key_used_by_another_partition_is_refused_by_the_database(db: Database) -> None:
    table = Table("accounts", columns={"day": "date", "account": int}, key="account")
    write_table(db, pd.DataFrame({"day": [D1], "account": [7]}), table, D1, partition_col="day")
    with pytest.raises(DatabaseError) as caught:
        write_table(db, pd.DataFrame({"day": [D2], "account": [7]}), table, D2, partition_col="day")
    assert "write_table('accounts'), partition 2024-03-02:" in str(caught.value)
    assert "a row of another partition has the same key" in str(caught.value)
    assert load_table(db, "accounts")["account"].tolist() == [7]


def test_a_write_by_name_keeps_to_the_declared_tables_constraints(db: Database) -> None:
    write_table(db, prices(), PRICES, D1, partition_col="day")
    with pytest.raises(TableSchemaError, match="column 'close' may not hold missing values"):
        write_table(db, prices(close=[None, 1.0, 2.0]), "prices", D1, partition_col="day")
    with pytest.raises(TableSchemaError, match="key \\(day, symbol\\) is not unique"):
        write_table(db, prices(symbol=["A", "A", "B"]), "prices", D1, partition_col="day")
    assert len(load_table(db, "prices")) == 3


# ----------------------------------------------------------------------------- migrations


def test_a_table_that_differs_from_its_declaration_names_the_migration(
    db: Database, database_url: str
) -> None:
    # created before the declaration existed, from a frame: close as text, all nullable
    old = prices().drop(columns=["note"]).assign(close=["10.0", "20.5", "30.25"])
    write_table(db, old, "prices", D1, partition_col="day")
    with pytest.raises(TableSchemaError) as caught:
        write_table(db, prices(), PRICES, D1, partition_col="day")
    text = str(caught.value)
    assert text.startswith("write_table('prices'): the table differs from its declaration: ")
    for problem in (
        "column 'close' is text in the table but declared double precision",
        "column 'day' allows missing values in the table but is declared NOT NULL",
        "column 'note' (text) is declared but not in the table",
        "the table's key is none but the declared key is (day, symbol)",
    ):
        assert problem in text
    assert "Nothing was written." in text
    assert "`conveyor db drop-table prices --yes`" in text and "--reprocess all" in text
    assert load_table(db, "prices")["close"].tolist() == ["10.0", "20.5", "30.25"]
    if db.dialect == "postgresql":
        statements = text.split("Migrate it with: ", 1)[1].split("; or drop it:", 1)[0]
        assert 'ALTER TABLE "prices" ALTER COLUMN "close" TYPE DOUBLE PRECISION' in statements
        with db.write() as conn:  # run the migration as printed
            for statement in statements.split("; "):
                conn.exec_driver_sql(statement)
    else:
        assert "SQLite cannot change a column's type or NOT NULL" in text
        assert drop_user_table(db, "prices") == 3
    write_table(db, prices(), PRICES, D1, partition_col="day")
    assert load_table(db, "prices")["close"].tolist() == [10.0, 20.5, 30.25]
    with db.read() as conn:
        found = table_columns(conn, db.dialect, TableName("prices"))
    assert found is not None and primary_key(found) == ("day", "symbol")


def test_a_changed_declaration_is_an_error_until_the_table_is_migrated(db: Database) -> None:
    write_table(db, prices(), PRICES, D1, partition_col="day")
    wider = Table(
        "prices",
        columns={**dict(PRICES.columns), "volume": "double", "source": str},
        key=PRICES.key,
        nullable=("note", "source"),
    )
    frame = prices(volume=[1.5, 2.5, 3.5], source=["x", None, "y"])
    with pytest.raises(TableSchemaError) as caught:
        write_table(db, frame, wider, D1, partition_col="day")
    text = str(caught.value)
    assert "column 'volume' is bigint in the table but declared double precision" in text
    assert "column 'source' (text) is declared but not in the table" in text
    if db.dialect == "postgresql":
        assert 'ALTER TABLE "prices" ADD COLUMN "source" TEXT' in text
        assert 'ALTER TABLE "prices" ALTER COLUMN "volume" TYPE DOUBLE PRECISION USING ' in text


def test_a_table_dropped_by_drop_table_is_created_anew(db: Database) -> None:
    write_table(db, prices(), PRICES, D1, partition_col="day")
    assert drop_user_table(db, "prices") == 3
    assert not exists(db, "prices")
    with pytest.raises(DatabaseError, match="there is no table 'prices'"):
        drop_user_table(db, "prices")
    write_table(db, prices(D2), PRICES, D2, partition_col="day")
    assert load_table(db, "prices")["day"].tolist() == [D2] * 3


# ----------------------------------------------------------------------------- the CLI


def cli(*args: str) -> tuple[int, str]:
    from conveyor.cli import _register, app

    _register()
    result = CliRunner().invoke(app, list(args), terminal_width=200)
    return result.exit_code, result.output


def test_db_tables_lists_schemas_and_drop_table_needs_yes(
    project: Project, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_DATABASE_URL", database_url)
    db = Database(database_url)
    try:
        write_table(db, prices(), PRICES, D1, partition_col="day")
        write_table(db, pd.DataFrame({"mean radius": [1.0]}), "cancer")
    finally:
        db.close()
    code, out = cli("db", "tables")
    assert code == 0, out
    assert "prices · partition column day · key day, symbol · created " in out
    assert "cancer · partition column - · key - · created" in out
    lines = {line.split("│")[1].strip(): line for line in out.splitlines() if "│" in line}
    assert "double" in lines["close"] and "NOT NULL" in lines["close"]
    assert "text" in lines["note"] and "allowed" in lines["note"]
    assert lines["symbol"].rstrip("│ ").endswith("2")
    assert "mean radius" in lines
    code, out = cli("db", "drop-table", "prices")
    assert code == 1
    assert "nothing was dropped. Run again with --yes to drop it." in " ".join(out.split())
    code, out = cli("db", "tables", "prices")
    assert code == 0 and "key day, symbol" in out
    code, out = cli("db", "drop-table", "prices", "--yes")
    assert code == 0 and "dropped table prices (3 rows)" in out
    code, out = cli("db", "tables")
    assert "prices" not in out and "cancer" in out


# ----------------------------------------------------------------------------- in a pipeline

FLOW = """
from datetime import date

import pandas as pd

from conveyor import Table, component, load_table, pipeline, write_table

QUOTES = Table(
    "quotes", columns={"day": "date", "symbol": str, "close": float}, key=("day", "symbol")
)


@component
def quotes(day: date, close: str) -> pd.DataFrame:
    value = float(close) if close != "n/a" else close
    return pd.DataFrame({"day": [day], "symbol": ["AAA"], "close": [value]})


@pipeline(name="quotes", partition="day")
def quotes_pipeline(day: date, close: str = "1.5"):
    written = write_table(quotes(day, close), QUOTES, partition=day, partition_col="day")
    return written
"""


def test_a_pipeline_writes_through_its_declaration(project: Project, database_url: str) -> None:
    project.write("flows/quotes.py", FLOW)
    settings = project.settings.with_changes(database_url=database_url)
    bad = conveyor.run("quotes", {"day": D1, "close": "n/a"}, runner="inprocess",
                       settings=settings)  # fmt: skip
    assert not bad.ok
    error = bad.steps["write_table"].error or ""
    assert "write_table('quotes'): column 'close' is declared double precision" in error
    assert "'n/a' (str) on partition date 2024-03-01 (row 0)" in error
    good = conveyor.run("quotes", {"day": D2}, runner="inprocess", settings=settings)
    assert good.ok, good.error
    db = Database(database_url)
    try:
        assert columns_of(db, "quotes")["close"] == ("double", False, 0)
        with db.read() as conn:  # the run recorded the declaration it wrote through
            inputs = conn.execute(
                sa.text("SELECT inputs FROM conveyor_step_runs WHERE step = 'write_table' "
                        "AND run_id = :run"),
                {"run": good.run_id},
            ).scalar_one()  # fmt: skip
    finally:
        db.close()
    recorded = inputs if isinstance(inputs, dict) else __import__("json").loads(inputs)
    assert Table.from_json(recorded["table"]).key == ("day", "symbol")
