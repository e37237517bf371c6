"""Step images in a registry: `conveyor images push` records each image by digest in the shared
artifact store, and a machine lacking the image pulls that digest instead of building it.

A real registry (Debian's `docker-registry`, i.e. distribution 2.x) runs on loopback for the
module; the Docker engine allows plain HTTP to 127.0.0.0/8 registries without configuration.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from conveyor.errors import EnvironmentBuildError
from tests.conftest import Project, need
from tests.integration.test_docker_runner import _engine

pytestmark = [pytest.mark.docker, pytest.mark.slow]

LABEL = "conveyor.env-key"
# A pin no other test uses: this module removes and pulls the image, which must not pull the
# rug from under another test (or another checkout) sharing the engine.
SIX = """
from conveyor import component

@component(packages=["six==1.14.0"])
def six_version() -> str:
    import six
    return six.__version__
"""

FLOW = """
from conveyor import pipeline
from steps.sixes import six_version

@pipeline
def sixes():
    return six_version()
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _answers(url: str) -> bool:
    # no proxy: a proxy from the environment would answer for (or refuse) loopback addresses
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as response:
            return int(response.status) == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    client, reason = _engine()
    need(client is not None, reason)
    from conveyor.engine.settings import Settings

    base = Settings.load().base_image
    try:
        client.images.get(base)
    except Exception:
        need(False, f"base image {base} is missing; build it with containers/build-base-image.sh")
    yield client
    client.close()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The artifact store every project (every "machine") of this module shares."""
    return tmp_path_factory.mktemp("shared-store")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, engine: Any, store: Path) -> Iterator[str]:
    """A registry on a free loopback port, storing in a temporary folder: `127.0.0.1:PORT`."""
    binary = shutil.which("docker-registry")
    need(binary is not None, "docker-registry is not installed (apt-get install docker-registry)")
    assert binary is not None
    root = tmp_path_factory.mktemp("registry")
    proc = None
    for _ in range(3):  # the free port can be taken between the probe and the bind: try again
        port = _free_port()
        (root / "config.yml").write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n"
            f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
            "  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{port}\n"
        )
        log = (root / "registry.log").open("w")
        proc = subprocess.Popen(
            [binary, "serve", str(root / "config.yml")], stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None:
            if _answers(f"http://127.0.0.1:{port}/v2/"):
                break
            time.sleep(0.1)
        if proc.poll() is None:
            break
    assert proc is not None and proc.poll() is None, (root / "registry.log").read_text()
    host = f"127.0.0.1:{port}"
    try:
        yield host
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        names = [f"conveyor-env:{r.stem}" for r in (store / "images").glob("*.json")]
        for image in engine.images.list():  # every name this module gave an image
            names += [
                name
                for name in [*image.tags, *(image.attrs.get("RepoDigests") or [])]
                if name.startswith(f"{host}/")
            ]
        for name in names:  # the pushed images themselves first, then their registry names
            try:
                _drop(engine, name)
            except Exception as exc:  # tidying up must not hide the tests' own outcome
                logging.getLogger(__name__).warning("could not remove %s: %s", name, exc)


@pytest.fixture
def shared(project: Project, store: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    monkeypatch.setenv("CONVEYOR_ARTIFACTS", str(store))
    monkeypatch.delenv("CONVEYOR_REGISTRY", raising=False)
    project.write("steps/sixes.py", SIX)
    project.write("flows/sixes.py", FLOW)
    return project


def _cli(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "CONVEYOR_REGISTRY"}
    environment.update(COLUMNS="250", **env)  # log lines unwrapped
    return subprocess.run(
        [sys.executable, "-m", "conveyor.cli", *args],
        cwd=root, env=environment, capture_output=True, text=True, timeout=900,
    )  # fmt: skip


def _drop(engine: Any, name: str) -> None:
    import docker

    try:
        engine.images.remove(name)
    except docker.errors.ImageNotFound:
        pass


def _runner(settings: Any) -> Any:
    from conveyor.runners.docker import DockerRunner

    return DockerRunner(settings)


def test_push_records_the_digest_and_other_machines_pull_it_instead_of_building(
    shared, store, registry, engine, tmp_path
):
    target = f"{registry}/conveyor"
    started = time.perf_counter()
    pushed = _cli(shared.root, "images", "push", "--registry", target,
                  CONVEYOR_ARTIFACTS=str(store))  # fmt: skip
    push_seconds = time.perf_counter() - started
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    (record_file,) = (store / "images").glob("*.json")
    record = json.loads(record_file.read_text())
    key = record_file.stem
    digest = record["reference"].rsplit("@", 1)[1]
    assert record["key"] == key and record["registry"] == target
    assert record["reference"] == f"{target}/conveyor-env@{digest}"
    assert digest.startswith("sha256:") and len(digest) == 71
    assert datetime.fromisoformat(record["pushed_at"]).tzinfo is not None
    assert f"{record['reference']} (" in pushed.stdout and ", pushed in " in pushed.stdout
    local = engine.images.get(f"conveyor-env:{key}")
    assert local.labels[LABEL] == key and record["image_id"] == local.id
    found = engine.api.inspect_distribution(f"{target}/conveyor-env:{key}")
    assert found["Descriptor"]["digest"] == digest  # the registry holds what the record says
    assert not [t for t in local.tags if t.startswith(registry)]  # the engine keeps one name

    again = _cli(shared.root, "images", "push", CONVEYOR_REGISTRY=target,
                 CONVEYOR_ARTIFACTS=str(store))  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"{record['reference']} (exists, already in the registry)" in again.stdout
    assert json.loads(record_file.read_text()) == record  # unchanged, same pushed_at

    # "another machine": the engine no longer has the image; the run pulls it by digest
    _drop(engine, f"conveyor-env:{key}")
    _drop(engine, f"{target}/conveyor-env:{key}")
    from conveyor.ops.discovery import resolve_pipeline
    from conveyor.ops.run import build_engine

    local_engine = build_engine(shared.settings, runner="docker", hooks=[])
    pipeline = resolve_pipeline("sixes", shared.settings)
    started = time.perf_counter()
    plan = local_engine.plan(pipeline, {})
    pull_seconds = time.perf_counter() - started
    assert plan.steps["six_version"].environment.key == key
    assert local_engine.runner.builder.builds == 0
    assert local_engine.runner.builder.pulled == {key}
    result = local_engine.run(pipeline, {}, plan=plan)
    local_engine.runner.close()
    assert result.ok, result.error
    assert result.output == "1.14.0"
    pulled = engine.images.get(f"conveyor-env:{key}")
    assert record["reference"] in pulled.attrs["RepoDigests"]
    assert pulled.id == record["image_id"]  # the very image that was pushed

    # a second project sharing the store, through the command line: pulled again, never built
    _drop(engine, f"conveyor-env:{key}")
    second = Project(tmp_path / "second")
    second.root.mkdir()
    (second.root / "pyproject.toml").write_text('[tool.conveyor]\nflows = ["flows"]\n')
    second.write("steps/sixes.py", SIX)
    second.write("flows/sixes.py", FLOW)
    ran = _cli(second.root, "run", "sixes", "--runner", "docker", "--no-cache",
               CONVEYOR_ARTIFACTS=str(store))  # fmt: skip
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert f"pulled conveyor-env:{key}" in ran.stdout and "by digest" in ran.stdout
    assert "built image" not in ran.stdout + ran.stderr
    assert record["reference"] in engine.images.get(f"conveyor-env:{key}").attrs["RepoDigests"]

    # `images prune` can remove a pulled image, though it has a name in the registry's repository
    from conveyor.runners.images import list_images, remove_image

    (entry,) = [image for image in list_images(engine) if image["key"] == key]
    assert remove_image(engine, entry) is None
    assert [image for image in list_images(engine) if image["key"] == key] == []
    upload = pushed.stdout.split(", pushed in ", 1)[1].split("s)", 1)[0]
    print(f"\nimages push {push_seconds:.1f}s (upload {upload}s); plan+pull {pull_seconds:.1f}s")


def _spec_with_lock(settings: Any, pins: str) -> Any:
    """A docker environment whose lock is written here (no resolution): `pins`, one a line."""
    from conveyor.runners.images import DockerEnvironmentSpec

    spec = DockerEnvironmentSpec((pins.split()[0],), "3.11", image=settings.base_image)
    settings.lock_dir.mkdir(parents=True, exist_ok=True)
    (settings.lock_dir / f"{spec.lock_id}.txt").write_text(pins)
    return spec


def _record(store: Path, key: str, reference: str, registry: str) -> None:
    (store / "images").mkdir(exist_ok=True)
    (store / "images" / f"{key}.json").write_text(
        json.dumps({"key": key, "reference": reference, "registry": registry,
                    "pushed_at": "2025-01-01T00:00:00+00:00"})
    )  # fmt: skip


def test_a_record_naming_another_environments_image_is_refused(shared, store, registry, engine):
    target = f"{registry}/conveyor"
    pushed = _cli(shared.root, "images", "push", "--registry", target,
                  CONVEYOR_ARTIFACTS=str(store))  # fmt: skip
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    reference = next(w for w in pushed.stdout.split() if "conveyor-env@sha256:" in w)
    (other_key,) = [
        r["key"]
        for r in map(json.loads, map(Path.read_text, (store / "images").glob("*.json")))
        if r["reference"] == reference
    ]

    runner = _runner(shared.settings)
    spec = _spec_with_lock(shared.settings, "six==1.13.0\n")
    key = runner.builder.key(runner.builder.base(spec.image), runner.locker.existing(spec))
    assert not runner.builder.exists(f"conveyor-env:{key}")
    _record(store, key, reference, target)  # a record pointing at the six 1.14 image
    with pytest.raises(EnvironmentBuildError) as info:
        runner.prepare({spec: ["impostor"]})
    message = str(info.value)
    assert f"refusing the image recorded for environment {key} (step impostor)" in message
    assert f"{reference} from registry {target}" in message
    assert f"labelled conveyor.env-key={other_key}" in message
    assert f"{store}/images/{key}.json" in message and "conveyor images push" in message
    assert runner.builder.builds == 0
    assert not runner.builder.exists(f"conveyor-env:{key}")


def test_a_failed_pull_builds_instead_and_names_the_registry_when_both_fail(
    shared, store, engine, caplog
):
    dead = f"127.0.0.1:{_free_port()}/conveyor"  # nothing listens there
    runner = _runner(shared.settings)

    # the build works: it is used, and the log says why the pull was skipped
    spec = _spec_with_lock(shared.settings, "six==1.12.0\n")
    key = runner.builder.key(runner.builder.base(spec.image), runner.locker.existing(spec))
    _drop(engine, f"conveyor-env:{key}")
    _record(store, key, f"{dead}/conveyor-env@sha256:{'0' * 64}", dead)
    try:
        # straight onto the logger: a CLI test in this session may have stopped propagation
        logger = logging.getLogger("conveyor.docker")
        logger.addHandler(caplog.handler)
        try:
            env = runner.prepare({spec: ["fallback"]})[spec]
        finally:
            logger.removeHandler(caplog.handler)
        assert env.built and runner.builder.builds == 1 and not runner.builder.pulled
        assert f"could not pull {dead}/conveyor-env@sha256:" in caplog.text
        assert f"from registry {dead}" in caplog.text and "building it here instead" in caplog.text
    finally:
        _drop(engine, f"conveyor-env:{key}")

    # the build cannot work either: the error names both failures and the registry
    impossible = _spec_with_lock(shared.settings, "six==99.0.1\n")
    lock = runner.locker.existing(impossible)
    key = runner.builder.key(runner.builder.base(impossible.image), lock)
    _record(store, key, f"{dead}/conveyor-env@sha256:{'1' * 64}", dead)
    with pytest.raises(EnvironmentBuildError) as info:
        runner.prepare({impossible: ["doomed"]})
    message = str(info.value)
    assert "could not build the image for step doomed" in message and "six==99.0.1" in message
    assert "the pushed image could not be pulled instead" in message
    assert f"{dead}/conveyor-env@sha256:{'1' * 64} from registry {dead}:" in message
    assert f"docker pull {dead}/conveyor-env@sha256:" in message


def test_push_without_a_registry_says_how_to_set_one(shared, store):
    result = _cli(shared.root, "images", "push", CONVEYOR_ARTIFACTS=str(store))
    assert result.returncode == 1
    error = " ".join(result.stderr.split())
    assert "no registry to push step images to" in error
    assert "--registry HOST[:PORT]/prefix" in error
    assert "CONVEYOR_REGISTRY=HOST[:PORT]/prefix" in error
    assert '[tool.conveyor] registry = "HOST[:PORT]/prefix"' in error
    assert "built" not in result.stdout  # it failed before building anything
