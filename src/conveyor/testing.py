"""Test pipelines the way they run: `run_isolated` runs one on a database and store of its own.

    from conveyor.testing import run_isolated

    def test_greeting(tmp_path):
        run = run_isolated("hello", {"name": "Ada"}, home=tmp_path)
        assert run.ok, run.error
        assert run.output == "Hello, Ada!"
        assert run.steps["greet"].status == "succeeded"
        assert run.table("greetings")["text"].tolist() == ["Hello, Ada!"]

Nothing the test does touches the project's own database, artifacts or run folders: they all
live under `home`. Environments stay in the shared, content-addressed cache, and the project's
locks are copied in, so a step runs on the same pinned packages as in `conveyor run`.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from conveyor.engine.results import RunResult, StepResult
from conveyor.engine.settings import Settings
from conveyor.ops.run import run

if TYPE_CHECKING:
    from conveyor.dsl.pipeline import Pipeline


@dataclass(frozen=True)
class IsolatedRun:
    """A finished run and the private settings it ran with; read its steps, output and tables."""

    result: RunResult
    settings: Settings

    @property
    def ok(self) -> bool:
        return self.result.ok

    @property
    def error(self) -> str | None:
        return self.result.error

    @property
    def output(self) -> Any:
        """What the pipeline returned, loaded."""
        return self.result.output

    @property
    def steps(self) -> MappingProxyType[str, StepResult]:
        return self.result.steps

    def table(self, name: str, columns: list[str] | None = None) -> Any:
        """The rows the run wrote to table `name`, as a DataFrame."""
        from conveyor.db.api import read_table

        return read_table(name, columns=columns, settings=self.settings)


def isolated_settings(
    home: str | Path | None = None, project: str | Path | None = None
) -> Settings:
    """The project's settings with database, artifacts and run folders under `home`."""
    base = Settings.load(project)
    state = Path(home) if home is not None else Path(tempfile.mkdtemp(prefix="conveyor-test-"))
    state = state.resolve() / "conveyor-home"
    state.mkdir(parents=True, exist_ok=True)
    if base.lock_dir.is_dir():
        (state / "locks").mkdir(exist_ok=True)
        for lock in base.lock_dir.glob("*.txt"):
            shutil.copy2(lock, state / "locks" / lock.name)
    return base.with_changes(
        home=state,
        database_url=f"sqlite:///{state / 'conveyor.db'}",
        artifacts=str(state / "artifacts"),
    )


def run_isolated(
    pipeline: Pipeline | str,
    params: Mapping[str, Any] | None = None,
    *,
    home: str | Path | None = None,
    runner: str = "inprocess",
    project: str | Path | None = None,
    **options: Any,
) -> IsolatedRun:
    """Run a pipeline on the local engine with its own database and store under `home`.

    `runner="inprocess"` (the default) runs steps in the test's interpreter, which needs the
    steps' packages; `"venv"` or `"docker"` run them as `conveyor run` does. Other keyword
    options go to `conveyor.run` (cache, force_steps, max_parallel, hooks).
    """
    settings = isolated_settings(home, project)
    result = run(pipeline, params, runner=runner, engine="local", settings=settings, **options)
    return IsolatedRun(result=result, settings=settings)
