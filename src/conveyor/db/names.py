"""Table and column names: checked, then always quoted; values are always bound.

A table name (and a schema name) is a plain identifier: letters, digits and underscores,
starting with a letter or underscore. A column name may be any text that fits PostgreSQL's
63-byte limit (`mean radius`, `growth %`, `sepal length (cm)`, as datasets name them): it goes
into SQL only through `quote`, which doubles any `"` in it, or `text_quote` inside SQLAlchemy's
`text()`, which also escapes `:` so it is never read as a bind parameter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from conveyor._runtime.tables import MAX_NAME_BYTES, PARTITION_COLUMN, column_name_problem
from conveyor.errors import TableSchemaError

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_LENGTH = MAX_NAME_BYTES
# conveyor's own tables and Alembic's version table share the database with user tables.
RESERVED_PREFIXES = ("conveyor_", "alembic_")
__all__ = [
    "IDENTIFIER", "MAX_LENGTH", "PARTITION_COLUMN", "RESERVED_PREFIXES", "TableName",
    "check_column", "check_columns", "check_identifier", "quote", "text_quote",
]  # fmt: skip


def check_identifier(name: object, what: str) -> str:
    """Return `name` if it is a plain SQL identifier, else raise TableSchemaError saying why."""
    if not isinstance(name, str):
        raise TableSchemaError(f"{what} must be a string, got {type(name).__name__} ({name!r})")
    if not IDENTIFIER.match(name):
        raise TableSchemaError(
            f"{what} {name!r} is not a valid identifier: use letters, digits and underscores, "
            f"starting with a letter or underscore"
        )
    if len(name.encode()) > MAX_LENGTH:
        raise TableSchemaError(f"{what} {name!r} is longer than {MAX_LENGTH} bytes; shorten it")
    return name


def check_column(name: object, what: str) -> str:
    """Return `name` if it can name a column (any text up to 63 bytes), else raise saying why."""
    problem = column_name_problem(name)
    if problem:  # (a name that is not a string is shown in the problem itself)
        shown = f" {name!r}" if isinstance(name, str) else ""
        raise TableSchemaError(f"{what}{shown} {problem}")
    assert isinstance(name, str)  # column_name_problem refuses anything else
    return name


def quote(name: str) -> str:
    """A name as a quoted SQL identifier (keeps its case, allows spaces and reserved words)."""
    return '"' + name.replace('"', '""') + '"'


def text_quote(name: str) -> str:
    """`quote` for SQLAlchemy's `text()`, where `:word` would be read as a bind parameter."""
    return quote(name).replace(":", "\\:")


@dataclass(frozen=True, slots=True)
class TableName:
    """A user table: `name`, or `schema.name` on PostgreSQL."""

    name: str
    schema: str | None = None

    @classmethod
    def parse(cls, text: object, *, dialect: str) -> TableName:
        """Validate a table name as written by the user (`features` or `analytics.features`)."""
        if not isinstance(text, str):
            raise TableSchemaError(f"table name must be a string, got {type(text).__name__}")
        parts = text.split(".")
        if len(parts) > 2:
            raise TableSchemaError(
                f"table name {text!r} has more than one dot; write `table` or `schema.table`"
            )
        name = check_identifier(parts[-1], "table name")
        schema = check_identifier(parts[0], "schema name") if len(parts) == 2 else None
        if schema is not None and dialect == "sqlite":
            raise TableSchemaError(
                f"table name {text!r}: SQLite has no schemas; write the table name alone"
            )
        if name.lower().startswith(RESERVED_PREFIXES):
            raise TableSchemaError(
                f"table name {text!r} is reserved: names starting with "
                f"{' or '.join(RESERVED_PREFIXES)} belong to conveyor's own tables"
            )
        return cls(name, schema)

    @property
    def sql(self) -> str:
        """The quoted, possibly schema-qualified name for SQL text."""
        return f"{quote(self.schema)}.{quote(self.name)}" if self.schema else quote(self.name)

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name

    def index_name(self, column: str) -> str:
        """A name for the index on `column`, within PostgreSQL's 63-byte limit."""
        return self._derived(f"ix_{self.name}_{column}")

    @property
    def key_name(self) -> str:
        """A name for the table's primary key constraint (PostgreSQL's own default spelling)."""
        return self._derived(f"{self.name}_pkey")

    def _derived(self, base: str) -> str:
        import hashlib

        if len(base.encode()) <= MAX_LENGTH:
            return base
        digest = hashlib.sha256(base.encode()).hexdigest()[:8]
        head = base.encode()[: MAX_LENGTH - 9].decode(errors="ignore")  # whole characters
        return f"{head}_{digest}"


def check_columns(columns: list[object], table: TableName) -> list[str]:
    """Validate a frame's column names: text up to 63 bytes, unique regardless of case."""
    names = [check_column(c, f"table {str(table)!r}: column name") for c in columns]
    seen: dict[str, str] = {}
    for name in names:
        other = seen.setdefault(name.lower(), name)
        if other == name and names.count(name) > 1:
            raise TableSchemaError(f"table {str(table)!r}: column {name!r} appears twice")
        if other != name:
            raise TableSchemaError(
                f"table {str(table)!r}: columns {other!r} and {name!r} differ only in case; "
                f"SQLite cannot tell them apart, so rename one"
            )
    return names
