"""The database as the public API shows it: the model registry and table reads, outside a run.

`conveyor.Registry` and `conveyor.read_table` are what flows, reports and notebooks use; inside a
run a host step gets the same registry as `ctx.registry`. Both talk to the project's database
(the embedded SQLite, or CONVEYOR_DATABASE_URL).

Importing this module loads no SQLAlchemy: a run hands every host step a Registry, and a run
whose steps never touch it (a cached re-run, `conveyor plan`) should not pay for the import.
The registry's modules are imported on first use.
"""

from __future__ import annotations

from dataclasses import fields
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from conveyor._runtime.tables import Table
from conveyor.engine.settings import Settings

if TYPE_CHECKING:
    from conveyor.db.database import Database
    from conveyor.db.registry import ModelRecord, ModelSummary, StageSpan

__all__ = ["ModelRecord", "ModelSummary", "Registry", "StageSpan", "read_table"]
_FROM_REGISTRY = ("ModelRecord", "ModelSummary", "NewModel", "StageSpan")


def __getattr__(name: str) -> Any:
    if name in _FROM_REGISTRY:
        from conveyor.db import registry

        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
        from conveyor.db.database import using

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
        from conveyor.db import registry

        return registry.resolve(self._target, name, stage=stage, version=version, as_of=as_of)

    def versions(self, name: str) -> list[ModelRecord]:
        """Every version of `name`, newest first."""
        from conveyor.db import registry

        return registry.versions(self._target, name)

    def models(self) -> list[ModelSummary]:
        """Every registered model name with its latest and its production version."""
        from conveyor.db import registry

        return registry.models(self._target)

    def history(self, name: str) -> list[StageSpan]:
        """The stages every version of `name` held, in the order they began."""
        from conveyor.db import registry

        return registry.history(self._target, name)

    def copy(self, name: str, version: int, *, to: str, at: datetime | None = None) -> int:
        """Register version `version` of `name` as a new version of model `to`; its number.

        The copy keeps the artifact and its lineage (metrics, params, training range, code and
        environment), so a candidate can become the production model of another name.
        """
        from conveyor.db import registry
        from conveyor.db.registry import NewModel

        source = self.get(name, version=version)
        copied = {f.name: getattr(source, f.name) for f in fields(NewModel) if f.name != "name"}
        return registry.register(self._target, NewModel(name=to, **copied), at=at)

    def promote(
        self, name: str, version: int, *, at: datetime | None = None, note: str = "promoted"
    ) -> ModelRecord:
        """Make `version` the production version of `name`; the previous one is archived."""
        from conveyor.db import registry

        return registry.promote(self._target, name, version, at=at, note=note)

    def rollback(self, name: str, *, at: datetime | None = None) -> ModelRecord:
        """Re-promote the version that was in production before the current one."""
        from conveyor.db import registry

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
    from conveyor.db import reads
    from conveyor.db.database import using

    with using(settings or Settings.load()) as db:
        return reads.load_table(db, table, start=start, end=end, days=days, columns=columns)
