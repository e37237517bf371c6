"""conveyor's database layer: the only code that imports SQLAlchemy, Alembic or psycopg.

    database.py    URLs, engines (SQLite file by default, PostgreSQL via psycopg 3), upgrades,
                   one shared engine per database and process
    models.py      conveyor's own tables; migrations/ holds their Alembic history
    names.py       table and column names, validated as identifiers
    columns.py     column types: frame dtypes <-> conveyor's types <-> SQL
    values.py      values between frames and drivers, through Arrow
    tables.py      user tables: columns, creation, partition columns
    bulk.py        PostgreSQL binary COPY and SQLite executemany
    copy_format.py PostgreSQL's binary COPY format, encoded column-wise
    writes.py      write_table: replace one partition in one transaction
    reads.py       load_table: a date range as a frame with stable dtypes and order
    registry.py    model versions, stages and their history; promote and roll back
    recorder.py    run hooks recording runs, steps, attempts, partitions, heartbeats
                   (SQLAlchemy: PostgreSQL, and SQLite URLs the next one does not take)
    sqlite_recorder.py  the same hooks on the embedded SQLite file through sqlite3: a run's
                   hot path imports no SQLAlchemy
    sqlite_file.py the SQLite file's busy timeout and its errors explained (standard library)
    revision.py    the schema revision the models describe (standard library)
    lineage.py     reading runs back: what ran, what it read and wrote, which model it used
    host_steps.py  the host-step implementations the engine is handed
    api.py         the public face: conveyor.Registry and conveyor.read_table

Nothing here is imported unless a run, a host step or a CLI command needs the database, and
SQLAlchemy only when a statement is about to go through it: `api.py` and `host_steps.py` import
their database modules on first use, so `conveyor plan` and a cached re-run never load it.
"""
