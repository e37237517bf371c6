"""Which projects use a built environment: recorded in it, so a prune in one project never
removes what another existing project still needs.

The environment cache is shared by every project on the machine (environments are content-
addressed), so "this project's locks" cannot decide what is unused: each use records the
project's root and lock folder in `<env>/conveyor-users.json`, and an environment stays needed
while any recorded project still exists and one of its locks resolves to the environment's key.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from conveyor._runtime.files import atomic_write
from conveyor._runtime.hashing import sha256_text
from conveyor.engine.environments import environment_key
from conveyor.engine.settings import Settings
from conveyor.runners.locks import pinned_text

USERS = "conveyor-users.json"


@dataclass(frozen=True, slots=True)
class EnvUser:
    """A project that used an environment, and when it last did."""

    root: str
    lock_dir: str
    last_used: float


# A project's use is written again only when the last note of it is older than this: every run
# plans its environments, and a cached re-run should not pay for a lock and a write each time.
# Ages that matter (`envs prune --older-than DAYS`) are counted in days.
RECORD_EVERY = 3600.0


def record_use(env_path: Path, settings: Settings) -> None:
    """Note that `settings`' project uses the environment at `env_path` (now, or within the
    last RECORD_EVERY seconds)."""
    root = str(settings.project_root)
    noted = next((u for u in env_users(env_path) if u.root == root), None)
    fresh = noted is not None and time.time() - noted.last_used < RECORD_EVERY
    if fresh and noted is not None and noted.lock_dir == str(settings.lock_dir):
        return
    from filelock import FileLock

    with FileLock(str(env_path.parent / f".{env_path.name}.users.lock"), timeout=60):
        users = {u.root: u for u in env_users(env_path)}
        users[root] = EnvUser(root, str(settings.lock_dir), time.time())
        with atomic_write(env_path / USERS, "w") as out:
            json.dump([asdict(u) for u in users.values()], out, indent=1)


def env_users(env_path: Path) -> list[EnvUser]:
    """The projects recorded as users of an environment (none for one built before this)."""
    try:
        return [EnvUser(**entry) for entry in json.loads((env_path / USERS).read_text())]
    except (FileNotFoundError, json.JSONDecodeError, TypeError):
        return []


def lock_keys(lock_dir: Path, kind: str, python: str) -> set[str]:
    """The environment keys the lock files in `lock_dir` resolve to for this interpreter."""
    keys = set()
    for lock in lock_dir.glob("*.txt"):
        try:
            text = lock.read_text()
        except OSError:
            continue
        keys.add(environment_key(kind, python, sha256_text(pinned_text(text))))
    return keys


def needed_by(env: dict[str, object], users: list[EnvUser]) -> list[str]:
    """Roots of the existing projects whose locks still name environment `env` (a
    list_environments entry)."""
    roots = []
    for user in users:
        if not Path(user.root).is_dir():
            continue  # the project is gone
        if env["key"] in lock_keys(Path(user.lock_dir), "venv", str(env.get("python", ""))):
            roots.append(user.root)
    return roots
