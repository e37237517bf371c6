"""`conveyor envs prune` on a cache shared by two projects: each environment knows its users."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.venv

PLAIN = """
from conveyor import component, pipeline

@component
def plain(n: int) -> int:
    return n + 1

@pipeline
def shared(n: int = 1):
    return plain(n)
"""

PINNED = """
from conveyor import component, pipeline

@component(packages=["six==1.16.0"])
def pinned() -> str:
    import six
    return six.__version__

@pipeline
def only_a():
    return pinned()
"""


def _project(root: Path, flows: dict[str, str]) -> Path:
    (root / "flows").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[tool.conveyor]\nflows = ["flows"]\n')
    (root / "flows" / "__init__.py").write_text("")
    for name, text in flows.items():
        (root / "flows" / f"{name}.py").write_text(text)
    return root


def _conveyor(root: Path, env_dir: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env["CONVEYOR_ENV_DIR"] = str(env_dir)
    proc = subprocess.run([sys.executable, "-m", "conveyor.cli", *args], cwd=root, env=env,
                          capture_output=True, text=True, check=False, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_a_prune_in_one_clone_keeps_what_another_existing_project_uses(tmp_path: Path) -> None:
    env_dir = tmp_path / "envs"
    a = _project(tmp_path / "a", {"shared": PLAIN, "pinned": PINNED})
    b = _project(tmp_path / "b", {"shared": PLAIN})
    _conveyor(a, env_dir, "run", "shared")
    _conveyor(a, env_dir, "run", "only_a")
    _conveyor(b, env_dir, "run", "shared")
    built = sorted(p.name for p in env_dir.iterdir() if not p.name.startswith("."))
    assert len(built) == 2  # the plain environment is shared; six's is a's alone

    listed = _conveyor(b, env_dir, "envs", "list")
    assert str(a) in listed and "this project" in listed

    dry = _conveyor(b, env_dir, "envs", "prune", "--dry-run")
    assert "would remove" not in dry, dry
    assert f"used by {a}" in dry  # six's environment: a's locks still name it
    assert "0 environment(s) to remove" in dry

    shutil.rmtree(a)  # the only user of six's environment is gone
    pruned = _conveyor(b, env_dir, "envs", "prune")
    assert "removed" in pruned and "six==1.16.0" in pruned, pruned
    left = sorted(p.name for p in env_dir.iterdir() if not p.name.startswith("."))
    assert len(left) == 1
    assert "plain" not in pruned
    again = _conveyor(b, env_dir, "run", "shared")  # b's environment is still there: no build
    assert "built environment" not in again


def test_an_environment_whose_lock_changed_is_no_longer_needed(tmp_path: Path) -> None:
    env_dir = tmp_path / "envs"
    a = _project(tmp_path / "a", {"pinned": PINNED})
    _conveyor(a, env_dir, "run", "only_a")
    (a / "flows" / "pinned.py").write_text(PINNED.replace("1.16.0", "1.17.0"))
    for lock in (a / ".conveyor" / "locks").glob("*.txt"):
        lock.unlink()  # as `conveyor envs lock` after a pin changed
    _conveyor(a, env_dir, "run", "only_a")
    pruned = _conveyor(a, env_dir, "envs", "prune")
    assert "removed" in pruned and "six==1.16.0" in pruned, pruned
    assert "1 environment(s) removed" in pruned
