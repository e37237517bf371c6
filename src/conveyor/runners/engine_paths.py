"""Where the Docker engine finds this process's files, when this process itself runs in a container.

A bind mount names a path on the engine's machine. The docker runner on a host gives its own
paths; a docker runner inside a container that talks to the host's engine through its socket (the
compose stack's workers, "docker-out-of-docker") would name paths the engine cannot see. There,
each path is translated through the container's own mounts: `/project/.conveyor/runs/...` of a
worker whose `/project` is the host's `/srv/app` becomes `/srv/app/.conveyor/runs/...` (a named
volume's source is its folder under the engine's data root, which binds the same way). A path in
the container's own layer cannot be mounted anywhere else: that is an error naming the path.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from conveyor.errors import ConveyorError

log = logging.getLogger("conveyor.docker")

# Docker bind-mounts /etc/hostname, /etc/hosts and /etc/resolv.conf from the container's folder
# under its data root: the id in those sources names this container whatever its hostname is.
_CONTAINER_FOLDER = re.compile(r"/containers/([0-9a-f]{64})/")


def own_container_id(mountinfo: str | None = None) -> str | None:
    """The id of the Docker container this process runs in, or None outside one."""
    if mountinfo is None:
        if not Path("/.dockerenv").exists():
            return None
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return None
    found = _CONTAINER_FOLDER.search(mountinfo)
    return found.group(1) if found else None


@dataclass(frozen=True, slots=True)
class EnginePaths:
    """Paths as this process sees them -> paths as the engine sees them."""

    container: str | None = None  # None: this process sees the engine's filesystem
    # (path in this container, its source on the engine's machine), deepest first
    mounts: tuple[tuple[PurePosixPath, PurePosixPath], ...] = ()

    def source(self, path: Path) -> Path:
        """Where the engine finds `path` (itself when this process is not in a container)."""
        if self.container is None:
            return path
        posix = PurePosixPath(path)
        for inside, source in self.mounts:
            if posix.is_relative_to(inside):
                return Path(source / posix.relative_to(inside))
        raise ConveyorError(
            f"{path} is in the filesystem of container {self.container[:12]}, where this "
            f"docker runner runs, and the Docker engine cannot mount it into a step's container; "
            f"put it on a volume or bind mount of this container (in docker-compose.yml: the "
            f"project at /project, CONVEYOR_ENV_DIR on a volume), or run the runner on the host"
        )


def engine_paths(api: Any) -> EnginePaths:
    """How this process's paths map onto the engine's machine (asks the engine once)."""
    container = own_container_id()
    if container is None:
        return EnginePaths()
    import docker

    try:
        mounts = api.inspect_container(container).get("Mounts") or []
    except docker.errors.NotFound:
        # in a container, but not one of this engine's (docker-in-docker, another host's
        # engine over TCP): that engine sees the paths of wherever it runs, assume ours
        log.debug("container %s is not known to the engine: paths used as they are", container)
        return EnginePaths()
    pairs = [
        (PurePosixPath(m["Destination"]), PurePosixPath(m["Source"]))
        for m in mounts
        if m.get("Source") and m.get("Destination")
    ]
    pairs.sort(key=lambda pair: -len(pair[0].parts))
    log.debug("docker runner in container %s; mounts %s", container[:12], pairs)
    return EnginePaths(container, tuple(pairs))
