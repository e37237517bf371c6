"""Step environments: what one must contain, and the key it is built and found under.

An environment is identified by the interpreter inside it, the base image (docker), the lock of
its requirements and the executor-protocol version. Runners resolve the locks and build the
environments (`conveyor.runners.locks`); the engine only sees these specs and keys.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from packaging.utils import canonicalize_name

from conveyor._runtime.hashing import sha256_json
from conveyor.version import EXECUTOR_PROTOCOL


def requirement_name(requirement: str) -> str:
    """The normalized project name of a requirement string (PEP 503)."""
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        return canonicalize_name(Requirement(requirement).name)
    except InvalidRequirement:
        return canonicalize_name(requirement.strip().split()[0] if requirement.strip() else "")


def merge_requirements(declared: Iterable[str], implied: Iterable[str]) -> tuple[str, ...]:
    """Declared requirements plus implied ones the user did not already name, sorted by name."""
    declared = [r.strip() for r in declared]
    named = {requirement_name(r) for r in declared}
    extra = [r for r in implied if requirement_name(r) not in named]
    unique = dict.fromkeys(declared + extra)
    return tuple(sorted(unique, key=lambda r: (requirement_name(r), r)))


@dataclass(frozen=True, slots=True)
class EnvironmentSpec:
    """What an environment must contain: requirement strings for one Python version."""

    requirements: tuple[str, ...]
    python: str

    @property
    def lock_id(self) -> str:
        """Stable id of this requirement set; names its lock file."""
        return sha256_json({"requirements": list(self.requirements), "python": self.python})[:16]

    def describe(self) -> str:
        return ", ".join(self.requirements) or "(no packages)"


def environment_key(
    kind: str, interpreter: str, lock_sha256: str, base_image_digest: str | None = None
) -> str:
    """The key an environment is built and found under."""
    return sha256_json(
        {
            "kind": kind,
            "interpreter": interpreter,
            "lock": lock_sha256,
            "base_image": base_image_digest,
            "protocol": EXECUTOR_PROTOCOL,
        }
    )[:24]


@dataclass(frozen=True, slots=True)
class PreparedEnvironment:
    """A built environment a task can run in."""

    key: str
    spec: EnvironmentSpec
    location: str  # a venv folder, an image tag, or "inprocess"
    interpreter: str  # full version of the Python inside, e.g. "3.11.7"
    lock_path: str | None = None
    pins: tuple[str, ...] = ()
    build_seconds: float = 0.0
    built: bool = False  # True when this plan had to build it (False: reused)
