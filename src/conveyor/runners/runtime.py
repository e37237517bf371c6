"""The step runtime: conveyor's stdlib-only core, copied once into a folder put on a step's path.

conveyor is never pip-installed into a step environment. Editing the project never rebuilds an
environment, and a step sees only what it declared plus these modules.
"""

from __future__ import annotations

import compileall
import hashlib
import os
import secrets
import shutil
from pathlib import Path

# The modules a step process may import: what `from conveyor import component, pipeline, ...`
# and `python -m conveyor.executor` need. All import only the standard library at module level.
RUNTIME_MODULES = (
    "__init__.py",
    "_codecs.py",
    "_hashing.py",
    "_step_mode.py",
    "artifacts.py",
    "component_spec.py",
    "dag.py",
    "errors.py",
    "executor.py",
    "host.py",
    "partitions.py",
    "placeholders.py",
    "version.py",
)


def package_dir() -> Path:
    return Path(__file__).resolve().parent.parent


def runtime_bundle(root: str | Path) -> Path:
    """The folder to put on a step's PYTHONPATH (it contains `conveyor/`), created if missing."""
    source = package_dir()
    digest = hashlib.sha256()
    for name in RUNTIME_MODULES:
        digest.update(name.encode() + b"\0" + (source / name).read_bytes())
    target = Path(root) / digest.hexdigest()[:16]
    if (target / "conveyor" / "executor.py").is_file():
        return target
    staging = Path(root) / f".staging-{os.getpid()}-{secrets.token_hex(4)}"
    (staging / "conveyor").mkdir(parents=True)
    for name in RUNTIME_MODULES:
        shutil.copyfile(source / name, staging / "conveyor" / name)
    # byte-compile now: containers mount this folder read-only and could not cache bytecode
    compileall.compile_dir(staging, quiet=1)
    try:
        staging.rename(target)
    except OSError:  # another process made it first
        shutil.rmtree(staging, ignore_errors=True)
    return target
