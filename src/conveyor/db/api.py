"""The database as the public API shows it: the model registry and table reads, outside a run.

`conveyor.Registry` and `conveyor.read_table` are what flows, reports and notebooks use; inside a
run a host step gets the same registry as `ctx.registry`. Both talk to the project's database
(the embedded SQLite, or CONVEYOR_DATABASE_URL).
"""

from __future__ import annotations

from dataclasses import fields
from datetime import date, datetime
from typing import Any

from conveyor._runtime.tables import Table
from conveyor.db import reads, registry
from conveyor.db.database import Database, using
from conveyor.db.registry import ModelRecord, ModelSummary, NewModel, StageSpan
from conveyor.engine.settings import Settings

__all__ = ["ModelRecord", "ModelSummary", "Registry", "StageSpan", "read_table"]


class Registry:
    """The model registry: versions of named models, the stage each held when, promotion.

    Times are effective times: `at=` records a registration or promotion as of that moment
    (a backfill registers at its training cutoff), and `as_of=` reads the registry as it was
    at the end of that day.

    Args:
        target: the project's Settings (default: the project of the working directory) or an
            open Database.
    """

    def __init__(self, target: Settings | Database | None = None) -> None:
        self._target = target if target is not None else Settings.load()

    def __repr__(self) -> str:
        with using(self._target) as db:
            return f"Registry({db.display_url})"

    def get(
        self,
        name: str,
        *,
        version: int | None = None,
        stage: str | None = "production",
        as_of: date | None = None,
    ) -> ModelRecord:
        """Version `version` of `name`, else the latest one holding `stage` (at `as_of`)."""
        return registry.resolve(self._target, name, stage=stage, version=version, as_of=as_of)

    def versions(self, name: str) -> list[ModelRecord]:
        """Every version of `name`, newest first."""
        return registry.versions(self._target, name)

    def models(self) -> list[ModelSummary]:
        """Every registered model name with its latest and its production version."""
        return registry.models(self._target)

    def history(self, name: str) -> list[StageSpan]:
        """The stages every version of `name` held, in the order they began."""
        return registry.history(self._target, name)

    def copy(self, name: str, version: int, *, to: str, at: datetime | None = None) -> int:
        """Register version `version` of `name` as a new version of model `to`; its number.

        The copy keeps the artifact and its lineage (metrics, params, training range, code and
        environment), so a candidate can become the production model of another name.
        """
        source = self.get(name, version=version)
        copied = {f.name: getattr(source, f.name) for f in fields(NewModel) if f.name != "name"}
        return registry.register(self._target, NewModel(name=to, **copied), at=at)

    def promote(
        self, name: str, version: int, *, at: datetime | None = None, note: str = "promoted"
    ) -> ModelRecord:
        """Make `version` the production version of `name`; the previous one is archived."""
        return registry.promote(self._target, name, version, at=at, note=note)

    def rollback(self, name: str, *, at: datetime | None = None) -> ModelRecord:
        """Re-promote the version that was in production before the current one."""
        return registry.rollback(self._target, name, at=at)


def read_table(
    table: str | Table,
    start: date | None = None,
    end: date | None = None,
    days: int | None = None,
    columns: list[str] | None = None,
    *,
    settings: Settings | None = None,
) -> Any:
    """Rows of a table as a DataFrame, outside a run (reports, notebooks); in a pipeline use
    the `load_table` host step, whose content hash drives the cache."""
    with using(settings or Settings.load()) as db:
        return reads.load_table(db, table, start=start, end=end, days=days, columns=columns)
