"""Unpacking a code bundle: a tar of project files, named by its sha256, safe to extract.

Used on both sides: the orchestrator unpacks a bundle it built for the containers it starts,
and the executor unpacks one it fetched from the artifact store (`--bundle SHA --store URL`).
Each bundle lands once per machine in a folder named by its hash; a step puts it on sys.path.
"""

from __future__ import annotations

import os
import shutil
import tarfile

TYPE_CHECKING = False  # not `from typing import ...`: step processes should not pay for typing

if TYPE_CHECKING:
    from pathlib import Path


def unpack(archive: str | Path, folder: str | Path) -> str:
    """Extract `archive` into `folder` (once; readers never see a partial folder); returns it."""
    folder = os.fspath(folder)
    if os.path.isdir(folder):
        return folder
    parent = os.path.dirname(folder) or "."
    os.makedirs(parent, exist_ok=True)
    staging = os.path.join(parent, f".unpack-{os.getpid()}-{os.urandom(4).hex()}")
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for member in members:  # regular files under the folder only: no links, no escapes
                name = os.path.normpath(member.name)
                if not member.isfile() or name.startswith(("/", "..")) or os.path.isabs(name):
                    raise ValueError(f"code bundle {archive}: refusing member {member.name!r}")
            for member in members:
                target = os.path.join(staging, os.path.normpath(member.name))
                os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
                source = tar.extractfile(member)
                assert source is not None  # a regular file, checked above
                with source, open(target, "wb") as out:
                    shutil.copyfileobj(source, out)
                os.chmod(target, 0o644)
        os.makedirs(staging, exist_ok=True)
        os.chmod(staging, 0o755)
        os.rename(staging, folder)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not os.path.isdir(folder):  # another process may have made it first
            raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder
