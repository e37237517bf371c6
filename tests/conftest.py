"""Shared fixtures: throwaway projects, and skips that CI turns into failures.

`.ci/run` sets CONVEYOR_CI_STRICT=1: there a test that would skip because a real part (docker,
postgres, chromium, prefect) is missing fails instead, so CI cannot pass by skipping.
"""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conveyor.engine.settings import Settings

STRICT = os.environ.get("CONVEYOR_CI_STRICT") == "1"

# Fixtures of the database tests (SQLite and PostgreSQL variants); imports nothing heavy.
pytest_plugins = [
    "tests.db_support",
    "tests.integration.prefect_support",
    "tests.integration.s3_support",
]
FIXTURES = Path(__file__).parent / "fixtures"


def need(ok: bool, reason: str) -> None:
    """Skip the test when `ok` is false, or fail it when running under CI's strict mode."""
    if ok:
        return
    if STRICT:
        pytest.fail(f"required under CONVEYOR_CI_STRICT=1 but missing: {reason}")
    pytest.skip(reason)


@dataclass
class Project:
    """A temporary conveyor project: files under `root`, state under `root/.conveyor`."""

    root: Path

    def write(self, relative: str, text: str) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
        for parent in path.relative_to(self.root).parents:
            if str(parent) != "." and not (self.root / parent / "__init__.py").exists():
                (self.root / parent / "__init__.py").write_text("")
        return path

    @property
    def settings(self) -> Settings:
        return Settings.load(self.root)


def _forget_modules(root: Path) -> None:
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None) or ""
        if file.startswith(str(root)):
            del sys.modules[name]
    while str(root) in sys.path:
        sys.path.remove(str(root))


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    """An empty project with `[tool.conveyor]`, as the working directory."""
    root = tmp_path / "proj"
    root.mkdir()
    (root / "pyproject.toml").write_text('[tool.conveyor]\nflows = ["flows"]\n')
    (root / "flows").mkdir()
    (root / "flows" / "__init__.py").write_text("")
    monkeypatch.chdir(root)
    monkeypatch.delenv("CONVEYOR_HOME", raising=False)
    monkeypatch.delenv("CONVEYOR_DATABASE_URL", raising=False)
    # importing test modules by the same name from different projects must not share a cache
    for name in ("steps", "flows", "components"):
        sys.modules.pop(name, None)
        for key in [k for k in sys.modules if k.startswith(name + ".")]:
            del sys.modules[key]
    yield Project(root)
    _forget_modules(root)
