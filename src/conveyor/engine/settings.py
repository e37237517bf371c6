"""Where a project lives and where conveyor keeps its state.

The project root is the nearest directory upward holding a `pyproject.toml` with a
`[tool.conveyor]` table, else the working directory. Paths can be moved with variables:
`CONVEYOR_HOME` (state, default `<root>/.conveyor`), `CONVEYOR_ENV_DIR` (built environments,
shared between projects because they are content-addressed), `CONVEYOR_DATABASE_URL` (default:
an SQLite file in the home; `none` for no database at all, e.g. quick experiments).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from conveyor.errors import ConveyorError

RUNNERS = ("inprocess", "venv", "docker")  # the names `conveyor.runners.get_runner` knows

DEFAULT_BASE_IMAGE = "conveyor/python-base:3.11"


def find_project_root(start: str | Path | None = None) -> Path:
    """Return the nearest directory upward with `[tool.conveyor]` in its pyproject.toml."""
    here = Path(start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        pyproject = candidate / "pyproject.toml"
        if pyproject.is_file() and "conveyor" in _read_pyproject(pyproject).get("tool", {}):
            return candidate
    return here


def _read_pyproject(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConveyorError(f"{path}: cannot read it as TOML ({exc}); fix the file") from exc


def _isolation(value: Any, pyproject: Path) -> str:
    if value not in ("default", "strict"):
        raise ConveyorError(
            f'{pyproject}: [tool.conveyor] isolation = {value!r} is not known; use "strict" '
            f'(refuse to run steps that cannot be sandboxed) or "default"'
        )
    return str(value)


def _source(variable: str, pyproject: Path, key: str) -> str:
    """Where a setting came from: its environment variable when set, else pyproject's key."""
    return variable if os.environ.get(variable) else f"{pyproject} [tool.conveyor] {key}"


def _runner(value: Any, pyproject: Path) -> str:
    if value not in RUNNERS:
        source = _source("CONVEYOR_RUNNER", pyproject, "runner")
        raise ConveyorError(f"{source} is {value!r}; choose one of {', '.join(RUNNERS)}")
    return str(value)


WARM_VARIABLE = "CONVEYOR_WARM"
_ON, _OFF = ("on", "1", "true", "yes"), ("off", "0", "false", "no")


def _warm(value: Any, pyproject: Path) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _ON or text in _OFF:
        return text in _ON
    source = _source(WARM_VARIABLE, pyproject, "warm")
    raise ConveyorError(f"{source} is {value!r}; use on or off (or true / false)")


def warm_source(pyproject: Path) -> str:
    """Where the `warm` setting came from, for messages."""
    value = os.environ.get(WARM_VARIABLE)
    return f"{WARM_VARIABLE}={value}" if value else f"{pyproject} [tool.conveyor] warm = false"


def _user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "conveyor"


@dataclass(frozen=True, slots=True)
class Settings:
    """Resolved locations and options for one project."""

    project_root: Path
    home: Path
    env_dir: Path
    flows: tuple[str, ...] = ("flows",)
    demo: str | None = None
    database_url: str | None = None
    base_image: str = DEFAULT_BASE_IMAGE
    artifacts: str | None = None  # the artifact store's URL; None: <home>/artifacts
    registry: str | None = None  # where step images are pushed and pulled (HOST[:PORT]/prefix)
    # "strict": a runner that cannot isolate its steps (no sandbox) refuses to run them
    isolation: str = "default"
    prefect_api: str | None = None  # the Prefect API serve/worker/backfill --pool use
    # where steps run when a command or deployment names no runner: the compose stack's workers
    # set CONVEYOR_RUNNER=docker, so the flow runs they take run each step in its own container
    runner: str = "venv"
    # steps forked from a warm server per environment (venv) or run in a warm container (docker)
    warm: bool = True

    @classmethod
    def load(cls, start: str | Path | None = None) -> Settings:
        """Read settings for the project containing `start` (default: the working directory)."""
        root = find_project_root(start)
        pyproject = root / "pyproject.toml"
        config: dict[str, Any] = {}
        if pyproject.is_file():
            config = dict(_read_pyproject(pyproject).get("tool", {}).get("conveyor", {}))
        flows = config.get("flows", ["flows"])
        if isinstance(flows, str):
            flows = [flows]
        home = Path(os.environ.get("CONVEYOR_HOME") or root / ".conveyor")
        env_dir = Path(os.environ.get("CONVEYOR_ENV_DIR") or _user_cache_dir() / "envs")
        return cls(
            project_root=root,
            home=home.resolve(),
            env_dir=env_dir.resolve(),
            flows=tuple(flows),
            demo=config.get("demo"),
            database_url=os.environ.get("CONVEYOR_DATABASE_URL") or config.get("database_url"),
            base_image=os.environ.get("CONVEYOR_BASE_IMAGE")
            or config.get("base_image", DEFAULT_BASE_IMAGE),
            artifacts=os.environ.get("CONVEYOR_ARTIFACTS") or config.get("artifacts"),
            registry=os.environ.get("CONVEYOR_REGISTRY") or config.get("registry"),
            isolation=_isolation(config.get("isolation", "default"), pyproject),
            prefect_api=os.environ.get("PREFECT_API_URL") or config.get("prefect_api"),
            runner=_runner(
                os.environ.get("CONVEYOR_RUNNER") or config.get("runner", "venv"), pyproject
            ),
            warm=_warm(os.environ.get(WARM_VARIABLE) or config.get("warm", True), pyproject),
        )

    @property
    def uses_database(self) -> bool:
        """False when CONVEYOR_DATABASE_URL=none: runs are not recorded, host steps unavailable."""
        return (self.database_url or "").strip().lower() != "none"

    def with_changes(self, **changes: Any) -> Settings:
        """Return a copy with some fields replaced."""
        return replace(self, **changes)

    @property
    def artifact_store(self) -> str:
        """The artifact store: CONVEYOR_ARTIFACTS / `artifacts =`, else `<home>/artifacts`."""
        return self.artifacts or str(self.home / "artifacts")

    @property
    def bundle_cache(self) -> Path:
        """Code bundles unpacked on this machine, shared by projects (content-addressed)."""
        return self.env_dir.parent / "bundles"

    @property
    def artifact_cache(self) -> Path:
        """Local copies of a remote store's values, shared by projects (content-addressed)."""
        return self.env_dir.parent / "artifacts"

    @property
    def lock_dir(self) -> Path:
        return self.home / "locks"

    @property
    def run_dir(self) -> Path:
        return self.home / "runs"

    @property
    def runtime_dir(self) -> Path:
        return self.env_dir.parent / "runtime"
