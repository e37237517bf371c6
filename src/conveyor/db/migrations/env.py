"""Alembic environment for conveyor's schema.

conveyor runs migrations itself (`Database.upgrade`, `conveyor db upgrade`) and hands Alembic an
open connection inside a locked transaction. Running `alembic` by hand also works: set
`sqlalchemy.url` in the config, or CONVEYOR_DATABASE_URL.
"""

from __future__ import annotations

import os

import sqlalchemy as sa
from alembic import context

from conveyor.db.models import Base

config = context.config


def _run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters by copying tables
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    from conveyor.db.database import normalize_url

    url = config.get_main_option("sqlalchemy.url") or os.environ["CONVEYOR_DATABASE_URL"]
    engine = sa.create_engine(normalize_url(url))
    with engine.connect() as conn:
        _run(conn)
        conn.commit()
