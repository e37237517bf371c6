"""What executing a run needs, gathered once per engine and handed down as one frozen object.

The run state and the step runner depend on this, never on the engine that built it, so the
local thread driver and the Prefect driver run steps through the same code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from conveyor.engine.bundles import Bundler
from conveyor.engine.cache import CacheIndex
from conveyor.engine.files import FileHasher
from conveyor.engine.fingerprint import Fingerprinter
from conveyor.engine.hooks import RunHooks
from conveyor.engine.planning import CachePolicy
from conveyor.engine.retry import RetryPolicy
from conveyor.engine.settings import Settings
from conveyor.engine.store import ArtifactStore
from conveyor.engine.tasks import Runner


@dataclass(frozen=True, slots=True)
class EngineServices:
    """The project's settings, the runner, the hooks, host-step implementations and policies."""

    settings: Settings
    runner: Runner
    hooks: RunHooks
    host_impls: Mapping[str, Callable[..., Any]]
    policy: CachePolicy
    retry: RetryPolicy
    store: ArtifactStore
    index: CacheIndex
    fingerprinter: Fingerprinter
    bundler: Bundler
    files: FileHasher
    registry: Any = None  # the model registry host steps see (conveyor.db supplies it)
