"""`conveyor init` in a folder outside this repository: run, test and check it with no edits."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import need
from tests.integration.test_compose_stack import compose_command

REPO = Path(__file__).resolve().parents[2]
CONVEYOR = [sys.executable, "-m", "conveyor.cli"]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVEYOR_", "PYTEST_"))}
    env["CONVEYOR_ENV_DIR"] = os.environ.get("CONVEYOR_ENV_DIR", "")  # the shared env cache
    if not env["CONVEYOR_ENV_DIR"]:
        del env["CONVEYOR_ENV_DIR"]
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False,
                          timeout=900)  # fmt: skip


def test_a_new_project_runs_tests_and_checks_without_edits(tmp_path: Path) -> None:
    root = tmp_path / "weather"
    assert REPO not in root.parents
    made = _run([*CONVEYOR, "init", str(root)], cwd=tmp_path)
    assert made.returncode == 0, made.stdout + made.stderr
    assert "wrote flows/sensors.py" in made.stdout

    ran = _run([*CONVEYOR, "run", "sensors", "-p", "day=2026-01-05"], cwd=root)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "sensors succeeded" in ran.stdout
    assert "returned spread: spread=" in ran.stdout
    shown = _run([*CONVEYOR, "runs", "show"], cwd=root)
    assert "summarize: DataFrame 3 rows × 5 columns" in shown.stdout, shown.stdout
    assert (root / ".conveyor" / "conveyor.db").is_file()

    tested = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=root)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "2 passed" in tested.stdout

    checked = _run([*CONVEYOR, "deploy", "--check"], cwd=root)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "ok sensors-daily (deployments/sensors.toml): sensors on '0 6 * * *' (UTC)" in (
        checked.stdout
    )
    assert checked.stdout.count("    next ") == 3

    command = compose_command()
    need(command is not None, "docker-compose is not installed (apt-get install docker-compose)")
    assert command is not None
    config = _run([*command, "-f", "docker-compose.yml", "config", "-q"], cwd=root)
    assert config.returncode == 0, config.stdout + config.stderr

    # what the project's .gitignore leaves for git: code, and the locks the run resolved
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    status = subprocess.run(["git", "status", "--porcelain", "-uall"], cwd=root,
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    untracked = sorted(line[3:] for line in status.splitlines())
    assert [p for p in untracked if p.startswith(".conveyor/")]  # the locks, to commit
    assert all(p.startswith(".conveyor/locks/") and p.endswith(".txt")
               for p in untracked if p.startswith(".conveyor/"))  # fmt: skip
    assert not [p for p in untracked if "__pycache__" in p or p.endswith(".db")]
