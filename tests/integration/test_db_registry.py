"""The model registry on SQLite and PostgreSQL: register, promote, roll back, resolve as_of."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from conveyor.db import registry
from conveyor.db.database import Database
from conveyor.dsl.artifacts import ArtifactRef, Codec
from conveyor.errors import RegistryError


def at(day: int, hour: int = 12) -> datetime:
    return datetime(2024, 5, day, hour, tzinfo=UTC)


def model(name: str, n: int, **extra) -> registry.NewModel:
    sha = f"{n:064x}"
    return registry.NewModel(
        name=name,
        artifact=ArtifactRef(sha, Codec("joblib"), 100 + n),
        location=f"/store/{sha}",
        **extra,
    )


def stages(db: Database, name: str) -> dict[int, str]:
    return {r.version: r.stage for r in registry.versions(db, name)}


def test_register_numbers_versions_and_is_idempotent(db: Database) -> None:
    first = model(
        "churn", 1, metrics={"auc": 0.8}, params={"alpha": 1}, git_sha="abc", git_dirty=True,
        code_hash="c0de", environment_key="env1", environment_lock="numpy==2.0.0\npandas==2.2.0",
        train_start=date(2024, 1, 1), train_end=date(2024, 4, 30), run_id="run-1",
    )  # fmt: skip
    assert registry.register(db, first, at=at(1)) == 1
    assert registry.register(db, first, at=at(2)) == 1  # same artifact: same version
    assert registry.register(db, model("churn", 2), at=at(3)) == 2
    assert registry.register(db, model("other", 1), at=at(3)) == 1  # numbering is per name
    record = registry.resolve(db, "churn", version=1)
    assert record.stage == "candidate"
    assert record.artifact == ArtifactRef(f"{1:064x}", Codec("joblib"), 101)
    assert record.metrics == {"auc": 0.8} and record.params == {"alpha": 1}
    assert (record.git_sha, record.git_dirty, record.code_hash) == ("abc", True, "c0de")
    assert record.pins == ("numpy==2.0.0", "pandas==2.2.0")
    assert (record.train_start, record.train_end) == (date(2024, 1, 1), date(2024, 4, 30))
    assert abs(record.created_at - datetime.now(UTC)).total_seconds() < 60  # wall clock
    assert registry.history(db, "churn")[0].started_at == at(1)  # effective time
    summary = {m.name: m for m in registry.models(db)}
    assert (summary["churn"].versions, summary["churn"].latest) == (2, 2)
    assert summary["churn"].production is None


def test_promote_archives_the_previous_production_and_rollback_restores_it(db: Database) -> None:
    for n in (1, 2, 3):
        registry.register(db, model("churn", n), at=at(1))
    registry.promote(db, "churn", 1, at=at(2))
    assert stages(db, "churn") == {1: "production", 2: "candidate", 3: "candidate"}
    registry.promote(db, "churn", 2, at=at(4))
    assert stages(db, "churn") == {1: "archived", 2: "production", 3: "candidate"}
    registry.promote(db, "churn", 3, at=at(6))
    assert registry.rollback(db, "churn", at=at(8)).version == 2
    assert stages(db, "churn") == {1: "archived", 2: "production", 3: "archived"}
    assert registry.rollback(db, "churn", at=at(9)).version == 3  # back again: the one before
    assert registry.resolve(db, "churn").version == 3
    spans = [(s.version, s.stage, s.note) for s in registry.history(db, "churn")]
    assert spans[-2:] == [(2, "archived", "replaced by v3"), (3, "production", "rollback from v2")]


def test_resolve_as_of_answers_which_version_was_in_production_that_day(db: Database) -> None:
    for n in (1, 2, 3):
        registry.register(db, model("churn", n), at=at(1, 0))
    registry.promote(db, "churn", 1, at=at(2, 9))
    registry.promote(db, "churn", 2, at=at(5, 15))
    registry.promote(db, "churn", 3, at=at(10, 0))
    registry.rollback(db, "churn", at=at(12, 8))  # v2 again from May 12

    def on(day: int) -> int:
        return registry.resolve(db, "churn", as_of=date(2024, 5, day)).version

    assert [on(d) for d in (2, 4, 5, 6, 9, 10, 11, 12, 20)] == [1, 1, 2, 2, 2, 3, 3, 2, 2]
    with pytest.raises(RegistryError) as caught:
        on(1)
    assert "no version was production on 2024-05-01" in str(caught.value)
    assert "its first production version, v1, took the stage on 2024-05-02 09:00 UTC" in str(
        caught.value
    )
    candidate = registry.resolve(db, "churn", stage="candidate", as_of=date(2024, 5, 1))
    assert candidate.version == 3  # all three were candidates; the latest wins


def test_registry_errors_are_clear(db: Database) -> None:
    with pytest.raises(RegistryError, match=r"no model named 'nope' is registered \(registered: "):
        registry.resolve(db, "nope")
    registry.register(db, model("churn", 1), at=at(1))
    with pytest.raises(RegistryError, match="model 'churn' has no production version; promote"):
        registry.resolve(db, "churn")
    with pytest.raises(RegistryError, match="model 'churn' has no version 9; its versions are v1"):
        registry.promote(db, "churn", 9)
    with pytest.raises(RegistryError, match="has no production version to roll back"):
        registry.rollback(db, "churn")
    registry.promote(db, "churn", 1, at=at(2))
    with pytest.raises(RegistryError, match="v1 is the first production version"):
        registry.rollback(db, "churn")
    registry.register(db, model("churn", 2), at=at(3))
    with pytest.raises(RegistryError, match="cannot be promoted before that"):
        registry.promote(db, "churn", 2, at=at(2))
    with pytest.raises(RegistryError, match="stage 'staging' is not one of"):
        registry.resolve(db, "churn", stage="staging")
