"""Fast checks of the database layer: URLs, names, column types, the shipped migrations, and what
the hot path imports. SQLite in temporary folders only."""

from __future__ import annotations

import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conveyor.db.columns import NULL, database_kind, fits, frame_column
from conveyor.db.database import MIGRATIONS, Database, default_url, normalize_url
from conveyor.db.models import SCHEMA_REVISION, Base
from conveyor.db.names import TableName, check_columns, quote, text_quote
from conveyor.db.reads import resolve_range
from conveyor.db.writes import Partition
from conveyor.engine.settings import Settings
from conveyor.errors import DatabaseError, TableSchemaError


def test_urls() -> None:
    assert normalize_url("postgresql://u:p@h/db").startswith("postgresql+psycopg://u:p@h/db")
    assert normalize_url("postgres://h/db").startswith("postgresql+psycopg://")
    assert normalize_url("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
    with pytest.raises(DatabaseError, match="through psycopg 3"):
        normalize_url("postgresql+psycopg2://h/db")
    with pytest.raises(DatabaseError, match="supports SQLite"):
        normalize_url("mysql://h/db")
    settings = Settings.load(Path("/nonexistent-project"))
    assert default_url(settings) == f"sqlite:///{settings.home / 'conveyor.db'}"
    assert "secret" not in Database("postgresql://u:secret@h/db").display_url


def test_table_and_column_names() -> None:
    assert TableName.parse("a.b", dialect="postgresql").sql == '"a"."b"'
    with pytest.raises(TableSchemaError, match="SQLite has no schemas"):
        TableName.parse("a.b", dialect="sqlite")
    long = TableName("t" * 60)
    assert len(long.index_name("c" * 60)) <= 63
    with pytest.raises(TableSchemaError, match=r"column name must be a string, got int \(7\)"):
        check_columns([7], TableName("t"))
    with pytest.raises(TableSchemaError, match="column 'a' appears twice"):
        check_columns(["a", "b", "a"], TableName("t"))
    # any text names a column; it reaches SQL quoted, and escaped for SQLAlchemy's text()
    assert check_columns(["mean radius", "growth %"], TableName("t")) == ["mean radius", "growth %"]
    assert quote('say "hi"') == '"say ""hi"""'
    assert text_quote("a :b") == '"a \\:b"'
    assert len(TableName("t").index_name("é" * 40).encode()) <= 63


@pytest.mark.parametrize(
    ("values", "kind"),
    [
        (pd.Series([1, 2]), "bigint"),
        (pd.Series([1, None], dtype="Int64"), "bigint"),
        (pd.Series([1.5]), "double"),
        (pd.Series([True]), "boolean"),
        (pd.Series(["a"], dtype="str"), "text"),
        (pd.Series(["a", None], dtype=object), "text"),
        (pd.Series(pd.Categorical(["a"])), "text"),
        (pd.Series([date(2024, 1, 1)]), "date"),
        (pd.Series(pd.to_datetime(["2024-01-01"])), "timestamp"),
        (pd.Series(pd.to_datetime(["2024-01-01"]).tz_localize("UTC")), "timestamptz"),
        (pd.Series([b"x"]), "bytes"),
        (pd.Series([None, np.nan], dtype=object), NULL),
    ],
)
def test_frame_column_kinds(values: pd.Series, kind: str) -> None:
    assert frame_column(values, "c", "t").kind == kind


def test_unsupported_frame_columns_are_named() -> None:
    for bad in (pd.Series([2**64 - 1], dtype="uint64"), pd.Series([{"a": 1}])):
        with pytest.raises(TableSchemaError, match="column 'c' has dtype"):
            frame_column(bad, "c", "t")


def test_database_types_map_back_and_fit() -> None:
    assert database_kind("postgresql", "timestamp with time zone") == "timestamptz"
    assert database_kind("sqlite", "DOUBLE PRECISION") == "double"
    assert database_kind("sqlite", "VARCHAR(20)") == "text"
    assert database_kind("postgresql", "jsonb") is None
    assert fits("bigint", "double") and not fits("double", "bigint")
    assert fits(NULL, "date") and not fits("text", None)


def test_partition_and_range_rules() -> None:
    d1, d2 = date(2024, 1, 1), date(2024, 1, 3)
    table = TableName("t")
    assert Partition.build(table, d1, None, None).managed
    assert Partition.build(table, d1, d2, "day").dates() == [d1, date(2024, 1, 2), d2]
    assert Partition.build(table, None, None, None).whole_table
    with pytest.raises(DatabaseError, match="ends \\(2024-01-01\\) before it starts"):
        Partition.build(table, d2, d1, "day")
    with pytest.raises(DatabaseError, match="needs a partition"):
        Partition.build(table, None, None, "day")
    assert resolve_range(None, d2, 3) == (d1, d2)  # calendar days, both ends included
    assert resolve_range(d1, None, None) == (d1, None)
    assert resolve_range(d2, d2, 2) == (d1, d2)  # with start=: a lookback of 2 days before it
    with pytest.raises(DatabaseError, match="days must be a positive integer"):
        resolve_range(None, d2, 0)


def test_shipped_migrations_reach_the_models(tmp_path: Path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.config import Config
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_current_head() == SCHEMA_REVISION
    db = Database(f"sqlite:///{tmp_path / 'fresh.db'}")
    db.ensure_schema()  # created on first use
    assert db.stored_revision() == SCHEMA_REVISION
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
    db.close()


def test_migrations_ship_inside_the_package() -> None:
    # hatch packages src/conveyor whole; the migrations are plain files under it
    assert (MIGRATIONS / "env.py").is_file()
    assert list((MIGRATIONS / "versions").glob("0002_*.py"))
    assert MIGRATIONS.is_relative_to(Path(__import__("conveyor").__file__).parent)


def test_an_up_to_date_database_opens_without_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    Database(url).ensure_schema()
    code = (
        "import sys; from conveyor.db.database import Database; "
        "import conveyor.db.host_steps, conveyor.db.recorder; "
        f"Database({url!r}).ensure_schema(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    db = Database(url)
    db.ensure_schema()
    with db.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(DatabaseError, match="upgraded by a newer conveyor"):
        Database(url).ensure_schema()
    with pytest.raises(DatabaseError, match="run `conveyor db upgrade`"):
        Database(url, upgrade=False).ensure_schema()
