"""Runners: where a step's process lives (in-process, a uv venv, a docker container)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from conveyor.engine.settings import RUNNERS

if TYPE_CHECKING:
    from conveyor.engine.settings import Settings
    from conveyor.engine.tasks import Runner

__all__ = ["RUNNERS", "get_runner"]


def get_runner(name: str, settings: Settings) -> Runner:
    """A runner by name: `inprocess`, `venv` or `docker`."""
    if name == "inprocess":
        from conveyor.runners.inprocess import InProcessRunner

        return InProcessRunner()
    if name == "venv":
        from conveyor.runners.venv import VenvRunner

        return VenvRunner(settings)
    if name == "docker":
        from conveyor.runners.docker import DockerRunner

        return DockerRunner(settings)
    from conveyor.errors import ConveyorError

    raise ConveyorError(f"unknown runner {name!r}; choose one of {', '.join(RUNNERS)}")
