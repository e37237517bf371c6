"""Step images: one docker image per environment key, built once and reused everywhere.

An image is the base image (a component's `image=`, else `settings.base_image`) plus one uv
virtual environment synced from the lock of the step's requirements, built from the template
`containers/step.Dockerfile` and tagged `conveyor-env:<key>`. The key hashes the Python version
actually inside the base image, the base image's id, the template, the lock and the executor
protocol, so every step, pipeline and project with the same dependencies shares one image. Builds
run under a file lock next to the venv environments, so concurrent runs build an image once; a
failed build leaves no tag behind. This module and `runners/docker.py` alone import the docker
SDK.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import shutil
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor._runtime.files import write_text_atomic
from conveyor._runtime.hashing import sha256_text
from conveyor.engine.environments import EnvironmentSpec, environment_key
from conveyor.engine.settings import DEFAULT_BASE_IMAGE, Settings
from conveyor.errors import ConveyorError, EnvironmentBuildError
from conveyor.runners.locks import (
    IMPORT_CHECK,
    IMPORT_CHECK_MARKER,
    Lock,
    codec_imports,
    find_uv,
    import_check_error,
    installer_error,
)

if TYPE_CHECKING:  # the SDK itself is imported where used: it is an optional extra
    from docker import DockerClient
    from docker.models.images import Image

log = logging.getLogger("conveyor.docker")

REPOSITORY = "conveyor-env"
ENV_PREFIX = "/opt/conveyor/env"  # where the template puts the environment inside the image
IMAGE_PATH = f"{ENV_PREFIX}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LABEL_KEY = "conveyor.env-key"
LABEL_STAGE = "conveyor.build-stage"
BUILD_LOCK_TIMEOUT = 1800
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# the legacy builder's bookkeeping lines: not what a user needs to see when an install fails
_BUILDER_NOISE = re.compile(r"^( ---> |Step \d+/\d+ : |Removing intermediate container )")
# Host variables a build may need to reach the package index (uv reads the UV_* ones; the proxy
# ones are docker's predefined build arguments).
BUILD_PASSTHROUGH = (
    "UV_INDEX_URL", "UV_EXTRA_INDEX_URL", "UV_DEFAULT_INDEX", "UV_INDEX",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class DockerEnvironmentSpec(EnvironmentSpec):
    """An EnvironmentSpec on a particular base image: equal requirements on two bases differ."""

    image: str = DEFAULT_BASE_IMAGE

    def describe(self) -> str:
        return f"{EnvironmentSpec.describe(self)} on {self.image}"


@dataclass(frozen=True, slots=True)
class BaseImage:
    """A base image as found on the engine: its id and the Python inside it."""

    reference: str
    id: str
    python: str  # full version, e.g. "3.11.2"

    @property
    def python_minor(self) -> str:
        return ".".join(self.python.split(".")[:2])


def connect() -> DockerClient:
    """A docker client for the local engine (DOCKER_HOST etc. respected), or a clear error."""
    try:
        import docker
    except ImportError as exc:
        raise ConveyorError(
            "the docker runner needs the Docker SDK for Python: pip install 'conveyor[docker]'"
        ) from exc
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        raise EnvironmentBuildError(
            f"cannot reach the Docker engine ({exc}). Start it (on Debian: "
            f"containers/ensure-docker.sh), or run with --runner venv"
        ) from exc
    return client


def template_path() -> Path:
    """The step Dockerfile: packaged next to this module in a wheel, in `containers/` in a clone."""
    packaged = Path(__file__).with_name("step.Dockerfile")
    if packaged.is_file():
        return packaged
    return Path(__file__).resolve().parents[3] / "containers" / "step.Dockerfile"


class ImageBuilder:
    """Finds base images and builds step images; safe to share between threads."""

    def __init__(self, settings: Settings, client: DockerClient) -> None:
        self.settings = settings
        self.client = client
        self._lock = threading.Lock()
        self._bases: dict[str, BaseImage] = {}
        self._uv_fits: bool | None = None
        self._template: str | None = None
        self.builds = 0  # images this builder had to build (the benchmark reports it)

    # ------------------------------------------------------------------------------ base images

    @property
    def _cache_file(self) -> Path:
        return self.settings.env_dir.parent / "docker-base-images.json"

    def base(self, reference: str) -> BaseImage:
        """The base image `reference`, with the version of the Python inside it (cached by id)."""
        with self._lock:
            if reference in self._bases:
                return self._bases[reference]
        image_id = self._image_id(reference)
        try:
            known = json.loads(self._cache_file.read_text())
        except (OSError, json.JSONDecodeError):
            known = {}
        python = known.get(image_id) or self._probe_python(reference)
        if known.get(image_id) != python:
            known[image_id] = python
            self._cache_file.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self._cache_file, json.dumps(known, indent=1))
        base = BaseImage(reference, image_id, python)
        with self._lock:
            self._bases[reference] = base
        return base

    def _image_id(self, reference: str) -> str:
        import docker

        try:
            return _id_of(self.client.images.get(reference))
        except docker.errors.ImageNotFound:
            pass
        if reference == DEFAULT_BASE_IMAGE:  # built locally, never published: say how to build
            raise EnvironmentBuildError(
                f"the base image {reference} does not exist on this Docker engine. Build it "
                f"offline with containers/build-base-image.sh, or choose another base with "
                f"CONVEYOR_BASE_IMAGE / [tool.conveyor] base_image / @component(image=...), "
                f"e.g. python:3.11-slim where a registry is reachable"
            )
        log.info("pulling base image %s", reference)
        try:
            return _id_of(self.client.images.pull(reference))
        except docker.errors.DockerException as exc:
            raise EnvironmentBuildError(
                f"base image {reference} is not on this engine and cannot be pulled ({exc}); "
                f"pull or build it first, or pick another with @component(image=...)"
            ) from exc

    def _probe_python(self, reference: str) -> str:
        import docker

        code = "import platform; print(platform.python_version())"
        try:
            out = self.client.containers.run(
                reference, ["python3", "-c", code], remove=True, network_mode="none",
                user="1000:1000", labels={"conveyor.probe": "python"},
            )  # fmt: skip
        except docker.errors.DockerException as exc:
            raise EnvironmentBuildError(
                f"base image {reference} has no working `python3` ({exc}); conveyor needs a base "
                f"image with Python 3 (python:3.11-slim, or containers/build-base-image.sh)"
            ) from exc
        return out.decode().strip()

    # ------------------------------------------------------------------------------ step images

    def key(self, base: BaseImage, lock: Lock) -> str:
        # the template shapes the image as much as the base does: a changed template is a new key
        return environment_key("docker", base.python, lock.sha256, f"{base.id} {self.template}")

    @property
    def template(self) -> str:
        """Content hash of the step Dockerfile template."""
        if self._template is None:
            self._template = sha256_text(template_path().read_text())[:16]
        return self._template

    def exists(self, tag: str) -> bool:
        import docker

        try:
            self.client.images.get(tag)
        except docker.errors.ImageNotFound:
            return False
        return True

    def ensure(
        self, spec: EnvironmentSpec, base: BaseImage, lock: Lock, who: str
    ) -> tuple[str, str, bool]:
        """(key, tag, built): the step image for `lock` on `base`, built unless it exists."""
        from filelock import FileLock

        key = self.key(base, lock)
        tag = f"{REPOSITORY}:{key}"
        if self.exists(tag):
            return key, tag, False
        self.settings.env_dir.mkdir(parents=True, exist_ok=True)
        # the same folder and key as venv builds use for their locks: one build per machine
        with FileLock(str(self.settings.env_dir / f".docker-{key}.lock"), BUILD_LOCK_TIMEOUT):
            if self.exists(tag):
                return key, tag, False
            started = time.perf_counter()
            self._build(key, tag, spec, base, lock, who)
            log.info("built image %s for %s (%s) in %.1fs", tag, who, spec.describe(),
                     time.perf_counter() - started)  # fmt: skip
        with self._lock:
            self.builds += 1
        return key, tag, True

    def _uv_runs_inside(self) -> bool:
        """Whether the host's uv binary runs in a container: a Linux host of the same arch."""
        if self._uv_fits is None:
            engine_arch = str(self.client.info().get("Architecture", "")).lower()
            same = {"amd64": "x86_64", "arm64": "aarch64"}
            host_arch = same.get(platform.machine().lower(), platform.machine().lower())
            self._uv_fits = sys.platform == "linux" and same.get(engine_arch, engine_arch) == (
                host_arch
            )
        return self._uv_fits

    def _build(
        self, key: str, tag: str, spec: EnvironmentSpec, base: BaseImage, lock: Lock, who: str
    ) -> None:
        labels = {
            LABEL_KEY: key,
            "conveyor.requirements": json.dumps(list(spec.requirements)),
            "conveyor.python": base.python,
            "conveyor.base-image": base.reference,
            "conveyor.base-image-id": base.id,
            "conveyor.lock-sha256": lock.sha256,
            "conveyor.template": self.template,
        }
        buildargs = {
            "BASE_IMAGE": base.id,
            "ENV_KEY": key,
            "IMPORT_CHECK_MODULES": " ".join(codec_imports(lock.pins)),
        }
        buildargs.update({k: os.environ[k] for k in BUILD_PASSTHROUGH if os.environ.get(k)})
        tail: deque[str] = deque(maxlen=60)
        error = None
        with tempfile.TemporaryDirectory(prefix="conveyor-image-") as context:
            root = Path(context)
            shutil.copyfile(template_path(), root / "Dockerfile")
            (root / "tools").mkdir()
            if self._uv_runs_inside():
                shutil.copy2(find_uv(), root / "tools" / "uv")
            (root / "tools" / "import_check.py").write_text(IMPORT_CHECK)
            (root / "requirements.lock").write_text(lock.pinned_text.strip() + "\n")
            partial = ""  # chunks are not lines: a line can arrive in pieces
            try:
                for chunk in self.client.api.build(
                    path=context, tag=tag, buildargs=buildargs, labels=labels, rm=True,
                    forcerm=True, pull=False, network_mode="bridge", decode=True,
                ):  # fmt: skip
                    *lines, partial = (partial + str(chunk.get("stream", ""))).split("\n")
                    for line in (_ANSI.sub("", raw) for raw in lines):
                        log.debug("build %s: %s", key[:12], line)
                        if line.strip() and not _BUILDER_NOISE.match(line):
                            tail.append(line)
                    if "error" in chunk:
                        if partial.strip():
                            tail.append(_ANSI.sub("", partial))
                        error = _ANSI.sub("", str(chunk.get("error", ""))).strip()
                        break
            finally:
                self._remove_stage_images(key)
        if error is not None and any(IMPORT_CHECK_MARKER in line for line in tail):
            raise import_check_error("\n".join(tail), lock.pins, who, lock.path)
        if error is not None:
            # the builder echoes the whole RUN command; the installer's own words come before it
            output = (
                "\n".join(tail)
                + "\n"
                + re.sub(
                    r"^The command .* returned", "the install step returned", error, flags=re.S
                )
            )
            raise installer_error("build the image", spec.requirements, output, who)

    def _remove_stage_images(self, key: str) -> None:
        """Drop the install stage's image: the legacy builder keeps it, nothing reuses it."""
        import docker

        for image in self.client.images.list(filters={"label": f"{LABEL_STAGE}={key}"}):
            try:
                self.client.images.remove(_id_of(image), force=True)
            except docker.errors.APIError as exc:
                log.debug("could not remove build stage %s: %s", image.id, exc)


def _id_of(image: Image) -> str:
    # the stubs allow None, but the SDK reads it from the engine's answer, which always has one
    assert image.id is not None
    return image.id


def list_images(client: Any) -> list[dict[str, Any]]:
    """Every conveyor step image on the engine: key, tag, labels, size, creation time."""
    found = []
    for image in client.images.list(filters={"label": LABEL_KEY}):
        labels = image.labels or {}
        try:
            requirements = json.loads(labels.get("conveyor.requirements", "[]"))
        except json.JSONDecodeError:
            requirements = []
        found.append(
            {
                "key": labels.get(LABEL_KEY, ""),
                "id": image.id,
                "tags": list(image.tags),
                "python": labels.get("conveyor.python", "?"),
                "base": labels.get("conveyor.base-image", "?"),
                "requirements": requirements,
                "size": image.attrs.get("Size", 0),
                "created": image.attrs.get("Created", ""),
            }
        )
    return sorted(found, key=lambda image: image["created"], reverse=True)


def prune_images(
    client: Any, *, keep: set[str], dry_run: bool = False
) -> Iterator[tuple[str, str | None]]:
    """Remove step images whose key is not in `keep`: yields (image, why it was kept or None).

    Install stages left by interrupted builds go first; an image a container still uses is kept.
    """
    import docker

    for stage in client.images.list(filters={"label": LABEL_STAGE}):
        if not dry_run:
            client.images.remove(stage.id, force=True)
    for image in list_images(client):
        if image["key"] in keep:
            continue
        what = f"{image['key']} ({', '.join(image['requirements']) or 'no packages'})"
        if not dry_run:
            try:
                client.images.remove(image["id"], force=False)
            except docker.errors.APIError as exc:
                yield what, str(exc.explanation or exc)
                continue
        yield what, None
