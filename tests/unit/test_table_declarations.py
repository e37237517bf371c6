"""`conveyor.Table`: what a declaration accepts and refuses, how it travels through a DAG, and
that a step can import it (it is stdlib-only)."""

from __future__ import annotations

import subprocess
import sys
from datetime import date, datetime
from pathlib import Path

import pytest

import conveyor
from conveyor import Table, TableSchemaError

ROOT = Path(__file__).resolve().parents[2]


def test_types_are_conveyors_or_python_and_order_is_kept() -> None:
    table = Table(
        "analytics.trades",
        columns={
            "at": datetime,
            "day": date,
            "n": int,
            "x": "Double Precision",
            "ok": bool,
            "tz": "timestamptz",
            "raw": bytes,
            "who": str,
        },
        key=["day", "n"],
        nullable="raw",
    )
    assert table.columns == (
        ("at", "timestamp"), ("day", "date"), ("n", "bigint"), ("x", "double"),
        ("ok", "boolean"), ("tz", "timestamptz"), ("raw", "bytes"), ("who", "text"),
    )  # fmt: skip
    assert table.key == ("day", "n") and table.nullable == ("raw",)
    assert table.names[0] == "at" and table.type_of("x") == "double"
    assert Table.from_json(table.to_json()) == table
    assert hash(table) == hash(Table.from_json(table.to_json()))
    assert "key=('day', 'n')" in repr(table)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "bad name"}, "Table('bad name'): the table name must be `table` or"),
        ({"columns": {}}, "columns must be a non-empty mapping of column name -> type"),
        ({"columns": {"x": "float64"}}, "column 'x': type 'float64' is not one conveyor stores"),
        ({"columns": {"x": list}}, "column 'x': type list is not one conveyor stores"),
        ({"columns": {"x": int, "X": int}}, "columns 'x' and 'X' differ only in case"),
        ({"columns": {"conveyor_partition": date}}, "'conveyor_partition' is conveyor's own"),
        ({"columns": {"": int}}, "column name '' is empty"),
        ({"key": "nope"}, "key names 'nope', which is not a declared column; the columns are"),
        ({"key": ("x", "x")}, "key names a column twice (x, x)"),
        ({"key": "x", "nullable": "x"}, "column 'x' is in the key and in nullable"),
    ],
)
def test_a_bad_declaration_fails_when_it_is_written(kwargs: dict, message: str) -> None:
    arguments = {"name": "t", "columns": {"x": int, "y": str}, **kwargs}
    with pytest.raises(TableSchemaError) as caught:
        Table(arguments.pop("name"), arguments.pop("columns"), **arguments)
    assert message in str(caught.value)


def test_a_declaration_travels_through_the_dag_as_json_and_reads_as_its_name() -> None:
    from conveyor.dsl.render import render_text

    table = Table("prices", columns={"day": date, "close": float}, key="day")

    @conveyor.pipeline(name="declared", partition="day")
    def declared(day: date):
        frame = conveyor.load_table(table, start=day, end=day)
        conveyor.write_table(frame, table, partition=day, partition_col="day")

    write = declared.step("write_table").inputs["table"]
    assert write.kind == "literal" and Table.from_json(write.value) == table
    assert declared.step("load_table").inputs["table"].value == "prices"
    assert "table=Table('prices')" in render_text(declared)


def test_a_step_imports_the_real_table_class() -> None:
    """Inside a step `conveyor.Table` is the class itself, not a refusing stand-in, so a
    component module may declare tables (and read their columns)."""
    code = (
        "from conveyor._runtime.step_mode import IN_STEP\n"
        "IN_STEP.set(True)\n"
        "import sys\n"
        "from conveyor import Table\n"
        "t = Table('t', columns={'x': float}, key='x')\n"
        "print(t.names, 'conveyor.db' in sys.modules, 'conveyor.dsl' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["('x',)", "False", "False"]
