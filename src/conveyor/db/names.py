"""Table and column names: validated as plain SQL identifiers, then always quoted.

Names are never formatted into SQL unchecked: a name is letters, digits and underscores, starts
with a letter or underscore, and fits PostgreSQL's 63-byte limit. Values are always bound.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from conveyor.errors import TableSchemaError

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_LENGTH = 63
# conveyor's own tables and Alembic's version table share the database with user tables.
RESERVED_PREFIXES = ("conveyor_", "alembic_")
# The column conveyor adds to hold the partition date when write_table gets no partition_col.
PARTITION_COLUMN = "conveyor_partition"


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


def quote(name: str) -> str:
    """Quote a checked identifier (quoting keeps its case and allows reserved words)."""
    return f'"{name}"'


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
        import hashlib

        base = f"ix_{self.name}_{column}"
        if len(base) <= MAX_LENGTH:
            return base
        digest = hashlib.sha256(base.encode()).hexdigest()[:8]
        return f"{base[: MAX_LENGTH - 9]}_{digest}"


def check_columns(columns: list[object], table: TableName) -> list[str]:
    """Validate a frame's column names: identifiers, unique regardless of case."""
    names = [check_identifier(c, f"table {str(table)!r}: column name") for c in columns]
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
