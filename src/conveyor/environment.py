"""Step environments: requirement sets, their locks, and the keys environments are built under.

An environment is identified by the interpreter inside it, the base image (docker), the lock of
its requirements and the executor-protocol version. Locks are resolved once with
`uv pip compile` and kept under `.conveyor/locks/` so they can be committed; `conveyor envs lock`
refreshes them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from conveyor._hashing import sha256_json, sha256_text
from conveyor.errors import EnvironmentBuildError
from conveyor.version import EXECUTOR_PROTOCOL

SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def requirement_name(requirement: str) -> str:
    """The normalized project name of a requirement string (PEP 503)."""
    match = _NAME.match(requirement)
    if not match:
        return requirement.strip().lower()
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


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


@dataclass(frozen=True, slots=True)
class Lock:
    """The pinned, fully resolved requirements of an EnvironmentSpec."""

    spec: EnvironmentSpec
    path: Path
    text: str

    @property
    def sha256(self) -> str:
        return sha256_text(self.pinned_text)

    @property
    def pinned_text(self) -> str:
        """The pins alone, without comments (what the key hashes)."""
        lines = (line.split("#", 1)[0].strip() for line in self.text.splitlines())
        return "\n".join(line for line in lines if line) + "\n"

    @property
    def pins(self) -> tuple[str, ...]:
        return tuple(self.pinned_text.split())


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


def find_uv() -> str:
    """Path of the uv binary (the `uv` wheel conveyor depends on, else PATH)."""
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if found:
            return found
    raise EnvironmentBuildError("uv is not installed; run `pip install uv` (conveyor needs it)")


def uv_environment() -> dict[str, str]:
    """The variables uv runs with: TLS against the system CA bundle, which proxies need."""
    env = dict(os.environ)
    if "SSL_CERT_FILE" not in env and SYSTEM_CA_BUNDLE.is_file():
        env["SSL_CERT_FILE"] = str(SYSTEM_CA_BUNDLE)
    return env


def installer_error(
    action: str, requirements: Iterable[str], output: str, who: str = ""
) -> EnvironmentBuildError:
    """An error naming the requirements the installer complained about, with its output tail."""
    requirements = list(requirements)
    lowered = output.lower()
    blamed = [r for r in requirements if requirement_name(r) in lowered] or requirements
    tail = "\n".join(output.strip().splitlines()[-25:])
    where = f" for {who}" if who else ""
    return EnvironmentBuildError(
        f"could not {action}{where}: the installer rejected {', '.join(blamed) or '(nothing)'}.\n"
        f"Fix the requirement (a typo, a version that does not exist, conflicting pins) in "
        f"@component(packages=[...]).\n--- installer output ---\n{tail}"
    )


class Locker:
    """Resolves requirement sets into lock files with `uv pip compile`, once each."""

    def __init__(self, lock_dir: str | Path) -> None:
        self.lock_dir = Path(lock_dir)

    def path_for(self, spec: EnvironmentSpec) -> Path:
        return self.lock_dir / f"{spec.lock_id}.txt"

    def existing(self, spec: EnvironmentSpec) -> Lock | None:
        path = self.path_for(spec)
        try:
            return Lock(spec, path, path.read_text())
        except FileNotFoundError:
            return None

    def lock(self, spec: EnvironmentSpec, *, refresh: bool = False, who: str = "") -> Lock:
        """Return the lock for `spec`, resolving it first if there is none (or `refresh`)."""
        from filelock import FileLock

        self.lock_dir.mkdir(parents=True, exist_ok=True)
        path = self.path_for(spec)
        with FileLock(str(path) + ".lock", timeout=600):
            if not refresh and (found := self.existing(spec)) is not None:
                return found
            pinned = self._compile(spec, who)
            header = (
                f"# conveyor lock; python {spec.python}\n"
                f"# requirements: {spec.describe()}\n"
                "# resolved by `uv pip compile`; refresh with `conveyor envs lock`\n"
            )
            tmp = path.with_suffix(".tmp")
            tmp.write_text(header + pinned)
            os.replace(tmp, path)
            return Lock(spec, path, header + pinned)

    def _compile(self, spec: EnvironmentSpec, who: str) -> str:
        if not spec.requirements:
            return ""
        cmd = [
            find_uv(), "pip", "compile", "-", "--quiet", "--no-header",
            "--python-version", spec.python,
        ]  # fmt: skip
        proc = subprocess.run(
            cmd,
            input="\n".join(spec.requirements) + "\n",
            capture_output=True,
            text=True,
            env=uv_environment(),
            check=False,
        )
        if proc.returncode != 0:
            raise installer_error("resolve requirements", spec.requirements, proc.stderr, who)
        return proc.stdout
