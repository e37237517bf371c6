"""Step images: one docker image per environment key, built once and reused everywhere.

An image is the base image (a component's `image=`, else `settings.base_image`) plus one uv
virtual environment synced from the lock of the step's requirements, built from the template
`containers/step.Dockerfile` and tagged `conveyor-env:<key>`. The key hashes the Python version
actually inside the base image, the base image's id, the template, the lock and the executor
protocol, so every step, pipeline and project with the same dependencies shares one image. Builds
run under a file lock next to the venv environments, so concurrent runs build an image once; a
failed build leaves no tag behind. This module and `runners/docker.py` alone import the docker
SDK.

Images in a registry: `conveyor images push` pushes a step image as `<registry>/conveyor-env:<key>`
and records what it pushed, by digest, in the artifact store as `images/<key>.json`. The record,
not the registry's tag, is what another machine trusts: a tag can be pushed over by anyone, a
record is written only after a completed push and names immutable content. A machine that lacks
`conveyor-env:<key>` pulls the recorded digest, checks the image's `conveyor.env-key` label and
tags it; without a record it builds (the registry is not asked), and a failed pull falls back to
building.
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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor._runtime.files import write_text_atomic
from conveyor._runtime.hashing import sha256_text
from conveyor.engine.environments import EnvironmentSpec, environment_key
from conveyor.engine.progress import waiting
from conveyor.engine.settings import DEFAULT_BASE_IMAGE, Settings
from conveyor.engine.store import ArtifactStore
from conveyor.errors import ArtifactError, ConveyorError, EnvironmentBuildError
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
# How the legacy builder reports a RUN step that exited non-zero: in the template the only RUN
# is the install (uv, then the import check). Any other build error is the engine's own.
_RUN_FAILED = re.compile(r"^The command .* returned a non-zero code", re.S)
# Install stages younger than this may belong to a build still running, of this project or of
# another project or process on the same engine (a finished build removes its own stages).
STAGE_MIN_AGE = 3600.0
# Host variables a build may need to reach the package index (uv reads the UV_* ones; the proxy
# ones are docker's predefined build arguments).
BUILD_PASSTHROUGH = (
    "UV_INDEX_URL", "UV_EXTRA_INDEX_URL", "UV_DEFAULT_INDEX", "UV_INDEX",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
)  # fmt: skip


# HOST[:PORT] then lower-case path components, as docker's reference grammar has them
_REGISTRY = re.compile(
    r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]+)?"
    r"(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$"
)
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


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


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """What `conveyor images push` stored as `images/<key>.json`: the pushed image, by digest."""

    key: str
    reference: str  # <registry>/conveyor-env@sha256:...
    registry: str
    pushed_at: str  # ISO 8601, UTC
    image_id: str = ""  # the pushing engine's image id (its config digest: equal on every engine)

    @property
    def digest(self) -> str:
        """`sha256:...`, the manifest digest the registry stored."""
        return self.reference.rsplit("@", 1)[1]

    def to_json(self) -> str:
        """The record as the JSON document the store keeps."""
        return json.dumps(
            {"key": self.key, "reference": self.reference, "registry": self.registry,
             "pushed_at": self.pushed_at, "image_id": self.image_id},
            indent=1,
        )  # fmt: skip

    @classmethod
    def from_json(cls, text: str) -> ImageRecord:
        """Parse a record; ValueError when it is not one (hand-edited, truncated)."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        try:
            record = cls(
                key=str(data["key"]),
                reference=str(data["reference"]),
                registry=str(data["registry"]),
                pushed_at=str(data.get("pushed_at", "")),
                image_id=str(data.get("image_id", "")),
            )
        except KeyError as exc:
            raise ValueError(f"no {exc.args[0]!r} field") from exc
        name, at, digest = record.reference.rpartition("@")
        if not at or not _DIGEST.match(digest) or not name.endswith(f"/{REPOSITORY}"):
            raise ValueError(
                f"reference {record.reference!r} is not <registry>/{REPOSITORY}@sha256:..."
            )
        return record


def record_key(key: str) -> str:
    """The store document holding the push record of environment `key`."""
    return f"images/{key}.json"


def resolve_registry(registry: str | None, settings: Settings) -> str:
    """The registry to push to: `registry`, else the project's, checked; a clear error if none."""
    chosen = (registry or settings.registry or "").strip().rstrip("/")
    if not chosen:
        raise ConveyorError(
            "no registry to push step images to: pass --registry HOST[:PORT]/prefix, or set one "
            "for the project with CONVEYOR_REGISTRY=HOST[:PORT]/prefix or "
            '[tool.conveyor] registry = "HOST[:PORT]/prefix" in pyproject.toml'
        )
    if "://" in chosen or not _REGISTRY.match(chosen):
        raise ConveyorError(
            f"registry {chosen!r} is not a docker repository prefix: write it as "
            f"HOST[:PORT]/prefix without a scheme, in lower case (e.g. registry.example.com/ml "
            f"or 127.0.0.1:5000/conveyor)"
        )
    return chosen


@dataclass(frozen=True, slots=True)
class Pushed:
    """One step image after `ImageBuilder.push`: its digest reference, and whether it moved."""

    key: str
    reference: str
    pushed: bool  # False: the registry already had this image under its tag
    seconds: float  # the upload, or the look-up that found it there


class _PullFailed(Exception):
    """A pull that did not produce an image: the caller builds instead."""


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

    def __init__(
        self, settings: Settings, client: DockerClient, store: ArtifactStore | None = None
    ) -> None:
        self.settings = settings
        self.client = client
        self.store = store  # where push records live; None: never pull, always build
        self._lock = threading.Lock()
        self._bases: dict[str, BaseImage] = {}
        self._uv_fits: bool | None = None
        self._template: str | None = None
        self.builds = 0  # images this builder had to build (the benchmark reports it)
        self.pulled: set[str] = set()  # keys whose image this builder pulled instead of building

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
            record = self.record(key)
            pull_error = None
            if record is not None:
                try:
                    self._pull(record, tag, who)
                    return key, tag, False
                except _PullFailed as exc:
                    pull_error = str(exc)
                    log.warning(
                        "could not pull %s for %s from registry %s: %s; building it here "
                        "instead", record.reference, who, record.registry, pull_error,
                    )  # fmt: skip
            started = time.perf_counter()
            try:
                self._build(key, tag, spec, base, lock, who)
            except EnvironmentBuildError as exc:
                if record is None:
                    raise
                raise EnvironmentBuildError(
                    f"{exc}\n--- and the pushed image could not be pulled instead ---\n"
                    f"{record.reference} from registry {record.registry}: {pull_error}. Make the "
                    f"registry reachable from this machine (try: docker pull {record.reference}; "
                    f"docker login {record.registry.split('/')[0]} if it needs credentials), or "
                    f"fix the build"
                ) from exc
            log.info("built image %s for %s (%s) in %.1fs", tag, who, spec.describe(),
                     time.perf_counter() - started)  # fmt: skip
        with self._lock:
            self.builds += 1
        return key, tag, True

    # ------------------------------------------------------------------------------ registries

    def record(self, key: str) -> ImageRecord | None:
        """The push record of `key` in the artifact store, or None (no store, none, unreadable)."""
        if self.store is None:
            return None
        where = f"{self.store.url}/{record_key(key)}"
        try:
            text = self.store.read_document(record_key(key))
        except (OSError, ArtifactError) as exc:
            # a store this machine cannot read must not stop a build that works without it
            log.warning("cannot read the image record %s (%s); building instead", where, exc)
            return None
        if text is None:
            return None
        try:
            record = ImageRecord.from_json(text)
        except ValueError as exc:
            log.warning("ignoring the image record %s: %s; `conveyor images push` rewrites it",
                        where, exc)  # fmt: skip
            return None
        if record.key != key:
            log.warning("ignoring the image record %s: it is for environment %s", where,
                        record.key)  # fmt: skip
            return None
        return record

    def _pull(self, record: ImageRecord, tag: str, who: str) -> None:
        """Pull the recorded image by digest, check its key label, tag it `tag`."""
        import docker
        import requests

        started = time.perf_counter()
        repository = record.reference.rsplit("@", 1)[0]
        log.info("pulling %s for %s, as the artifact store records it", record.reference, who)
        try:
            # the SDK's images.pull drops errors reported inside the stream: read it here
            with waiting(f"pulling image {record.key[:12]} for {who}") as detail:
                for chunk in self.client.api.pull(
                    repository, tag=record.digest, stream=True, decode=True
                ):
                    if "error" in chunk:
                        raise _PullFailed(str(chunk.get("error", "")).strip())
                    detail(f"{chunk.get('id', '')} {chunk.get('status', '')}")
            image = self.client.images.get(record.reference)
        except (docker.errors.DockerException, requests.RequestException) as exc:
            raise _PullFailed(str(exc)) from exc
        label = (image.labels or {}).get(LABEL_KEY)
        if label != record.key:
            self._untag(record.reference)
            store = self.store.url if self.store is not None else "the artifact store"
            raise EnvironmentBuildError(
                f"refusing the image recorded for environment {record.key} ({who}): "
                f"{record.reference} from registry {record.registry} is labelled "
                f"{LABEL_KEY}={label or '(none)'}, so it was built for another environment. "
                f"The record {store}/{record_key(record.key)} is wrong: push the right image "
                f"with `conveyor images push` (it rewrites the record), or delete the record to "
                f"build the image here"
            )
        image.tag(REPOSITORY, record.key)
        with self._lock:
            self.pulled.add(record.key)
        log.info("pulled %s for %s by digest %s in %.1fs (not built)", tag, who,
                 record.digest[:19], time.perf_counter() - started)  # fmt: skip

    def _untag(self, reference: str) -> None:
        import docker

        try:
            self.client.images.remove(reference)
        except docker.errors.APIError as exc:
            log.debug("could not remove %s: %s", reference, exc)

    def push(self, key: str, registry: str) -> Pushed:
        """Push `conveyor-env:<key>` as `<registry>/conveyor-env:<key>` and record its digest.

        Skips the upload when the registry's tag already names this image's digest.
        """
        import docker

        repository = f"{registry}/{REPOSITORY}"
        try:
            image = self.client.images.get(f"{REPOSITORY}:{key}")
        except docker.errors.ImageNotFound as exc:
            raise EnvironmentBuildError(
                f"image {REPOSITORY}:{key} is not on this engine; build it first "
                f"(`conveyor images build`)"
            ) from exc
        started = time.perf_counter()
        known = self.record(key)
        digest = self._registry_has(image, repository, key, known)
        pushed = digest is None
        if digest is None:
            digest = self._upload(image, repository, key, registry)
        record = ImageRecord(
            key=key,
            reference=f"{repository}@{digest}",
            registry=registry,
            pushed_at=datetime.now(UTC).isoformat(timespec="seconds"),
            image_id=_id_of(image),
        )
        seconds = time.perf_counter() - started
        if known is not None and (known.reference, known.image_id) == (
            record.reference,
            record.image_id,
        ):
            return Pushed(key, record.reference, pushed, seconds)  # recorded already: keep its date
        if self.store is None:
            raise ConveyorError(f"pushed {record.reference}, but there is no artifact store "
                                f"to record it in")  # fmt: skip
        try:
            self.store.write_document(record_key(key), record.to_json())
        except (OSError, ArtifactError) as exc:
            raise ConveyorError(
                f"pushed {record.reference}, but could not record it in the artifact store "
                f"{self.store.url} ({exc}); other machines will build the image instead of "
                f"pulling it until `conveyor images push` succeeds"
            ) from exc
        return Pushed(key, record.reference, pushed, seconds)

    def _registry_has(
        self, image: Image, repository: str, key: str, known: ImageRecord | None
    ) -> str | None:
        """The digest of `image` if the registry's tag `key` already names it, else None."""
        import docker
        import requests

        # digests this image is known by in that repository: from this engine (a pull or a push
        # it remembers) or from the record of an earlier push of this very image
        candidates = {
            ref.rsplit("@", 1)[1]
            for ref in image.attrs.get("RepoDigests") or []
            if ref.rsplit("@", 1)[0] == repository
        }
        if (
            known is not None
            and known.image_id == image.id
            and known.reference.startswith(f"{repository}@")
        ):
            candidates.add(known.digest)
        if not candidates:
            return None
        try:
            api: Any = self.client.api  # the stubs leave inspect_distribution untyped
            found = api.inspect_distribution(f"{repository}:{key}")
        except (docker.errors.DockerException, requests.RequestException):
            return None  # not there, or not reachable: the push says which
        digest = str(found.get("Descriptor", {}).get("digest", ""))
        return digest if digest in candidates else None

    def _upload(self, image: Image, repository: str, key: str, registry: str) -> str:
        """Tag and push `image`; returns the manifest digest the registry stored."""
        import docker
        import requests

        target = f"{repository}:{key}"
        tagged_before = target in image.tags
        image.tag(repository, key)
        digest = ""
        started = time.perf_counter()
        try:
            for chunk in self.client.api.push(repository, tag=key, stream=True, decode=True):
                if "error" in chunk:
                    raise ConveyorError(
                        f"pushing {target} to registry {registry} failed: "
                        f"{str(chunk.get('error', '')).strip()}. Check the registry is "
                        f"reachable and accepts pushes (docker login {registry.split('/')[0]})"
                    )
                digest = str((chunk.get("aux") or {}).get("Digest", "")) or digest
            if not digest:  # older engines: the digest is only in the image's RepoDigests
                image.reload()
                digest = next(
                    (
                        ref.rsplit("@", 1)[1]
                        for ref in image.attrs.get("RepoDigests") or []
                        if ref.rsplit("@", 1)[0] == repository
                    ),
                    "",
                )
        except (docker.errors.DockerException, requests.RequestException) as exc:
            raise ConveyorError(
                f"pushing {target} to registry {registry} failed: {exc}. Check the registry is "
                f"reachable from the Docker engine and accepts pushes"
            ) from exc
        finally:
            if not tagged_before:  # the registry's name is for the push; the engine keeps ours
                self._untag(target)
        if not _DIGEST.match(digest):
            raise ConveyorError(
                f"pushed {target} to registry {registry}, but the engine reported no digest "
                f"for it ({digest or 'none'}); push again"
            )
        log.debug("pushed %s@%s in %.1fs", repository, digest, time.perf_counter() - started)
        return digest

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
        import docker
        import requests

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
            title = f"building image {key[:12]} for {who} ({len(lock.pins)} packages)"
            try:
                with waiting(title) as detail:
                    for chunk in self.client.api.build(
                        path=context, tag=tag, buildargs=buildargs, labels=labels, rm=True,
                        forcerm=True, pull=False, network_mode="bridge", decode=True,
                    ):  # fmt: skip
                        *lines, partial = (partial + str(chunk.get("stream", ""))).split("\n")
                        for line in (_ANSI.sub("", raw) for raw in lines):
                            log.debug("build %s: %s", key[:12], line)
                            if line.startswith("Step "):  # the build's own steps: progress
                                detail(line)
                            elif line.strip() and not _BUILDER_NOISE.match(line):
                                tail.append(line)
                                detail(line)
                        if "error" in chunk:
                            if partial.strip():
                                tail.append(_ANSI.sub("", partial))
                            error = _ANSI.sub("", str(chunk.get("error", ""))).strip()
                            break
            except (docker.errors.DockerException, requests.RequestException) as exc:
                error = str(exc).strip() or type(exc).__name__  # the engine refused the build
            finally:
                self._remove_stage_images(key)
        if error is not None and any(IMPORT_CHECK_MARKER in line for line in tail):
            raise import_check_error("\n".join(tail), lock.pins, who, lock.path)
        if error is not None and _RUN_FAILED.match(error):
            # the builder echoes the whole RUN command; the installer's own words come before it
            output = (
                "\n".join(tail)
                + "\n"
                + re.sub(
                    r"^The command .* returned", "the install step returned", error, flags=re.S
                )
            )
            raise installer_error("build the image", spec.requirements, output, who)
        if error is not None:
            raise engine_error("build the image", error, tail, who)

    def _remove_stage_images(self, key: str) -> None:
        """Drop the install stage's image: the legacy builder keeps it, nothing reuses it."""
        import docker

        for image in self.client.images.list(filters={"label": f"{LABEL_STAGE}={key}"}):
            try:
                self.client.images.remove(_id_of(image), force=True)
            except docker.errors.APIError as exc:
                log.debug("could not remove build stage %s: %s", image.id, exc)


def engine_error(action: str, error: str, tail: Iterable[str], who: str) -> EnvironmentBuildError:
    """A build the docker engine failed (not the installer): what it said and what to do."""
    lowered = error.lower()
    if "no such image" in lowered:
        fix = (
            "An image the build used was removed while it ran: a `docker image prune`, `docker "
            "rmi` or another project's prune on the same engine. Run again"
        )
    elif "no space left" in lowered:
        fix = "The engine ran out of disk space: free some (docker system df), then run again"
    else:
        fix = "Check the docker engine (docker info), then run again"
    shown = "\n".join(list(tail)[-25:])
    where = f" for {who}" if who else ""
    return EnvironmentBuildError(
        f"could not {action}{where}: the docker engine failed: {error}. The requirements were "
        f"not at fault (the install step did not fail). {fix}.\n--- build output ---\n{shown}"
    )


def _repository(name: str) -> str:
    """The repository in an image name: `host:5000/a/b` of `host:5000/a/b:tag` or `...@sha256:`."""
    if "@" in name:
        return name.split("@", 1)[0]
    repository, _, tag = name.rpartition(":")
    return repository if repository and "/" not in tag else name


def _id_of(image: Image) -> str:
    # the stubs allow None, but the SDK reads it from the engine's answer, which always has one
    assert image.id is not None
    return image.id


def list_images(client: Any, *, one_per_key: bool = True) -> list[dict[str, Any]]:
    """Every conveyor step image on the engine, one per key: the one tagged `conveyor-env:<key>`
    (else the newest), with `copies` = how many other images carry the same key (an image
    rebuilt with --refresh leaves its predecessor untagged until a prune). `one_per_key=False`:
    every image, copies included (what a prune removes)."""
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
                "digests": list(image.attrs.get("RepoDigests") or []),
                "python": labels.get("conveyor.python", "?"),
                "base": labels.get("conveyor.base-image", "?"),
                "requirements": requirements,
                "size": image.attrs.get("Size", 0),
                "created": image.attrs.get("Created", ""),
            }
        )
    if not one_per_key:
        return sorted(found, key=lambda image: image["created"], reverse=True)
    by_key: dict[str, list[dict[str, Any]]] = {}
    for image in sorted(found, key=lambda image: image["created"], reverse=True):
        by_key.setdefault(image["key"], []).append(image)
    listed = []
    for key, images in by_key.items():
        tagged = [i for i in images if f"{REPOSITORY}:{key}" in i["tags"]]
        chosen = (tagged or images)[0]
        listed.append({**chosen, "copies": len(images) - 1})
    return sorted(listed, key=lambda image: image["created"], reverse=True)


def prune_images(
    client: Any, *, keep: set[str], dry_run: bool = False, lock_dir: Path | None = None
) -> Iterator[tuple[str, str | None]]:
    """Remove step images whose key is not in `keep`: yields (image, why it was kept or None).

    Install stages left by interrupted builds go first, but only those no build may still be
    using: older than `STAGE_MIN_AGE` (a build of any project or process on the engine removes
    its own stages when it ends, so a younger one may be in progress), and whose key's build
    lock in `lock_dir` (this project's environments folder) is free. An image a container
    still uses is kept.
    """
    import docker

    for stage in client.images.list(filters={"label": LABEL_STAGE}):
        key = (stage.labels or {}).get(LABEL_STAGE, "")
        what = f"build stage {key[:24] or stage.id} (an interrupted build's leftover)"
        busy = _stage_in_use(stage, key, lock_dir)
        if busy:
            yield what, busy
            continue
        if not dry_run:
            try:
                client.images.remove(stage.id, force=True)
            except docker.errors.APIError as exc:
                yield what, str(exc.explanation or exc)
                continue
        yield what, None
    for image in list_images(client, one_per_key=False):
        if image["key"] in keep:
            continue
        what = f"{image['key']} ({', '.join(image['requirements']) or 'no packages'})"
        refused = None if dry_run else remove_image(client, image)
        yield what, refused


def _stage_in_use(stage: Any, key: str, lock_dir: Path | None) -> str | None:
    """Why an install stage may belong to a build in progress (None: it cannot)."""
    age = _age_seconds(str(stage.attrs.get("Created", "")))
    if age is None or age < STAGE_MIN_AGE:
        shown = "of unknown age" if age is None else f"{age / 60:.0f} minutes old"
        return (
            f"{shown}, so a build on this engine (of any project) may still be using it; "
            f"stages older than {STAGE_MIN_AGE / 3600:.0f} hour(s) are removed"
        )
    if lock_dir is not None and key:
        from filelock import FileLock, Timeout

        try:
            with FileLock(str(lock_dir / f".docker-{key}.lock"), timeout=0):
                pass
        except Timeout:
            return "a build of this project holds its lock: it is in progress"
    return None


def _age_seconds(created: str) -> float | None:
    """Seconds since an engine timestamp (`2024-03-01T12:00:00.123456789Z`), or None."""
    match = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", created)
    if match is None:
        return None
    zone = "+00:00" if match.group(3) == "Z" else match.group(3)
    fraction = (match.group(2) or ".0")[:7]  # microseconds at most: Python parses no more
    moment = datetime.fromisoformat(match.group(1) + fraction + zone)
    return (datetime.now(UTC) - moment).total_seconds()


def remove_image(client: Any, image: dict[str, Any]) -> str | None:
    """Remove a step image (an entry of `list_images`); returns why the engine refused, or None.

    An image pulled from (or left tagged for) a registry also has a `<registry>/conveyor-env`
    name, and the engine refuses to remove an image by id while it has names in several
    repositories: those names are conveyor's own and go first, while any other name (a user's
    tag) still keeps the image, as does a container using it.
    """
    import docker

    try:
        _drop_registry_names(client, image)
        client.images.remove(image["id"], force=False)
    except docker.errors.APIError as exc:
        return str(exc.explanation or exc)
    return None


def _drop_registry_names(client: Any, image: dict[str, Any]) -> None:
    import docker

    names = [*image["digests"], *image["tags"]]
    if {_repository(name) for name in names} <= {REPOSITORY}:
        return
    if client.containers.list(all=True, filters={"ancestor": image["id"]}, sparse=True):
        return  # in use: removing by id refuses and says so; keep its names meanwhile
    for name in names:
        if _repository(name).endswith(f"/{REPOSITORY}"):
            try:
                client.images.remove(name)
            except docker.errors.ImageNotFound:
                pass  # untagging a repository's tag drops its digest names too
