"""The step runtime: conveyor's stdlib-only core, copied once into a folder put on a step's path.

conveyor is never pip-installed into a step environment. Editing the project never rebuilds an
environment, and a step sees only what it declared plus this core: the `conveyor._runtime`
package whole, and the three top-level modules it and a component module need at import time
(`conveyor/__init__.py`, whose lazy exports become pass-throughs inside a step, `errors.py` and
`version.py`). The import contract in pyproject.toml keeps all of them on the standard library.
"""

from __future__ import annotations

import compileall
import hashlib
import os
import secrets
import shutil
from pathlib import Path

TOP_LEVEL = ("__init__.py", "errors.py", "version.py")


def package_dir() -> Path:
    return Path(__file__).resolve().parent.parent


def runtime_files() -> list[str]:
    """Paths, relative to the `conveyor` package, of every file a step process may import."""
    source = package_dir()
    runtime = sorted(str(path.relative_to(source)) for path in (source / "_runtime").rglob("*.py"))
    return [*TOP_LEVEL, *runtime]


def runtime_bundle(root: str | Path) -> Path:
    """The folder to put on a step's PYTHONPATH (it contains `conveyor/`), created if missing."""
    source = package_dir()
    files = runtime_files()
    digest = hashlib.sha256()
    for name in files:
        digest.update(name.encode() + b"\0" + (source / name).read_bytes())
    target = Path(root) / digest.hexdigest()[:16]
    if (target / "conveyor" / "_runtime" / "executor.py").is_file():
        return target
    staging = Path(root) / f".staging-{os.getpid()}-{secrets.token_hex(4)}"
    for name in files:
        (staging / "conveyor" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / name, staging / "conveyor" / name)
    # byte-compile now: containers mount this folder read-only and could not cache bytecode
    compileall.compile_dir(staging, quiet=1)
    try:
        staging.rename(target)
    except OSError:  # another process made it first
        shutil.rmtree(staging, ignore_errors=True)
    return target
