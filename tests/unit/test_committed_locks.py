"""The reference flows' locks are committed: a fresh clone's demo resolves nothing new."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conveyor.engine.settings import Settings
from conveyor.ops.discovery import discover
from conveyor.runners.base import requirement_spec
from conveyor.runners.locks import Locker

ROOT = Path(__file__).resolve().parents[2]


def test_every_step_environment_of_the_shipped_flows_has_a_committed_lock() -> None:
    settings = Settings.load(ROOT).with_changes(home=ROOT / ".conveyor")
    locker = Locker(settings.lock_dir)
    committed = set(
        subprocess.run(["git", "ls-files", ".conveyor/locks"], cwd=ROOT, capture_output=True,
                       text=True, check=True).stdout.split()
    )  # fmt: skip
    missing = {}
    for name, found in discover(settings).pipelines.items():
        for pipeline, _ in found:
            for step in pipeline.steps:
                if step.component is None or step.component.spec is None:
                    continue
                path = locker.path_for(requirement_spec(step.component.spec))
                if str(path.relative_to(ROOT)) not in committed:
                    missing[f"{name}:{step.name}"] = path.name
    assert not missing, f"lock these and commit them (conveyor envs lock NAME): {missing}"
    assert not [f for f in committed if f.endswith(".lock")], "file locks are not locks"
