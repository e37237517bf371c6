"""The runner contract: what the engine hands a runner, and what it needs back.

A runner owns isolation and timeouts; the engine owns ordering, caching and retries. Every runner
runs the same executor protocol (`python -m conveyor._runtime.executor SPEC`), so a step behaves
the same in-process, in a venv, in a container and on Kubernetes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from conveyor.dsl.component import ComponentSpec
from conveyor.engine.environments import EnvironmentSpec, PreparedEnvironment


@dataclass(frozen=True, slots=True)
class Task:
    """One attempt of one step, as the engine hands it to a runner."""

    step: str
    component: ComponentSpec
    spec: dict[str, Any]
    workdir: Path
    environment: PreparedEnvironment
    project_root: Path
    log: Callable[[str], None]
    code: Path | None = None  # the step's code bundle, unpacked (runners that ship code)

    @property
    def spec_path(self) -> Path:
        return self.workdir / "task.json"

    @property
    def result_path(self) -> Path:
        return Path(self.spec["result"])


class Runner(Protocol):
    """What the engine needs from a runner."""

    name: str
    # whether steps get their code as a bundle (they do not see the project, e.g. containers)
    uses_bundles: bool

    def environment_spec(self, component: ComponentSpec) -> EnvironmentSpec: ...

    def prepare(
        self, needs: Mapping[EnvironmentSpec, Sequence[str]]
    ) -> dict[EnvironmentSpec, PreparedEnvironment]: ...

    def run(self, task: Task) -> dict[str, Any]: ...

    def limitations(self, component: ComponentSpec) -> list[str]: ...

    def close(self) -> None: ...
