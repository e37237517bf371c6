"""The Alembic revision conveyor's models describe (standard library only, so the embedded
recorder can check a database without importing SQLAlchemy).

Changing a model in `models.py` means adding a migration under `migrations/versions/` and
bumping this (a test checks both agree).
"""

SCHEMA_REVISION = "0002"
