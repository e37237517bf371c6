"""The docker runner's engine-free parts: mounts, output pumping, exit statuses, orphan owners."""

from __future__ import annotations

import os
import socket
from collections import deque
from pathlib import Path, PurePosixPath

import pytest

from conveyor.errors import (
    ConveyorError,
    ExecutorProtocolError,
    StepFailed,
    StepKilled,
    StepTimeout,
)
from conveyor.runners.containers import (
    Mounts,
    _owner_alive,
    container_name,
    owner_label,
    pump_output,
    readable_by_step,
)
from conveyor.runners.engine_paths import EnginePaths, own_container_id


def test_mounts_translate_paths_both_ways(tmp_path):
    code, work = tmp_path / "bundles" / "abc", tmp_path / "proj" / ".conveyor" / "runs" / "r" / "a"
    work.mkdir(parents=True)
    code.mkdir(parents=True)
    data = tmp_path / "store" / "ab" / "abcdef"
    mounts = Mounts((
        (code, "/conveyor/code", "ro"),
        (work, "/conveyor/work", "rw"),
        (data, "/conveyor/inputs/frame", "ro"),
        (data, "/conveyor/inputs/again", "ro"),
    ))  # fmt: skip
    assert mounts.inside(work / "out" / "x") == "/conveyor/work/out/x"
    assert mounts.inside(code / "steps" / "a.py") == "/conveyor/code/steps/a.py"
    assert mounts.inside(data) == "/conveyor/inputs/frame"  # a file mounted on its own
    # one host file may appear under two names: docker's list form keeps both
    assert f"{data}:/conveyor/inputs/again:ro" in mounts.binds()
    assert f"{work}:/conveyor/work:rw" in mounts.binds()
    trace = 'File "/conveyor/code/steps/a.py", line 3'
    assert mounts.outside(trace) == f'File "{code}/steps/a.py", line 3'
    with pytest.raises(ExecutorProtocolError, match="outside every folder mounted"):
        mounts.inside(tmp_path / "elsewhere")


class _Stream:
    def __init__(self, frames):
        self.frames = frames
        self.closed = False

    def __iter__(self):
        return iter(self.frames)

    def close(self):
        self.closed = True


def test_output_is_split_into_lines_across_chunks_and_stderr_tail_kept():
    stream = _Stream([(b"hel", None), (b"lo\nwor", b"err"), (None, b"or 1\n"), (b"ld", None)])
    lines, tail = [], deque(maxlen=5)
    pump_output(stream, lines.append, tail)
    assert sorted(lines) == ["error 1", "hello", "world"]
    assert list(tail) == ["error 1"]
    assert stream.closed


def test_container_names_are_valid_and_unique():
    first = container_name("20260101T000000-abc", "train model", "attempt-1")
    assert first.startswith("conveyor-20260101T000000-abc-train-model-attempt-1-")
    assert first != container_name("20260101T000000-abc", "train model", "attempt-1")


def test_owner_labels_tell_live_from_dead_orchestrators():
    assert _owner_alive(owner_label())
    host = socket.gethostname()
    assert not _owner_alive(f"{host}/{2**22 + 17}/1")  # above Linux's pid_max
    assert _owner_alive(f"another-machine/{2**22 + 17}/1")  # not ours to judge
    if Path("/proc/self/stat").exists():  # a reused pid: same number, another start time
        assert not _owner_alive(f"{host}/{os.getpid()}/1")


def test_readable_by_step_follows_owner_group_and_other_bits(tmp_path):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    private.chmod(0o700)
    assert not readable_by_step(private) or private.stat().st_uid == 1000
    private.chmod(0o755)
    assert readable_by_step(private)


def test_exit_statuses_become_the_promised_messages(tmp_path):
    from conveyor.dsl.component import ComponentSpec
    from conveyor.engine.environments import PreparedEnvironment
    from conveyor.engine.tasks import Task
    from conveyor.runners.docker import _outcome

    component = ComponentSpec(
        name="s", module="m", qualname="s", file=None, inputs=(), outputs=(), returns="none",
        timeout=5, memory=512 * 2**20, memory_text="512Mi",
    )  # fmt: skip
    env = PreparedEnvironment(key="k", spec=None, location="img", interpreter="3.11.2")  # type: ignore[arg-type]
    spec = {"result": str(tmp_path / "result.json")}
    task = Task("s", component, spec, tmp_path, env, tmp_path, print)
    with pytest.raises(StepTimeout, match="timed out after 5 s"):
        _outcome(task, 137, True, True, "")
    with pytest.raises(StepKilled, match=r"killed: out of memory \(limit 512Mi\)"):
        _outcome(task, 137, True, False, "")
    with pytest.raises(StepFailed, match="vanished before reporting an exit status"):
        _outcome(task, None, False, False, "")
    with pytest.raises(StepKilled, match="killed by SIGTERM"):
        _outcome(task, 143, False, False, "")
    with pytest.raises(StepFailed, match="exit code 3 and no result file; last output:\nboom"):
        _outcome(task, 3, False, False, "boom")
    (tmp_path / "result.json").write_text('{"status": "succeeded", "outputs": {}}')
    assert _outcome(task, 0, False, False, "")["status"] == "succeeded"


def test_registries_are_checked_and_a_missing_one_says_how_to_set_it(tmp_path):
    from conveyor.engine.settings import Settings
    from conveyor.errors import ConveyorError
    from conveyor.runners.images import resolve_registry

    plain = Settings(project_root=tmp_path, home=tmp_path, env_dir=tmp_path)
    configured = plain.with_changes(registry="registry.example.com/ml")
    assert resolve_registry("127.0.0.1:5000/conveyor/", plain) == "127.0.0.1:5000/conveyor"
    assert resolve_registry(None, configured) == "registry.example.com/ml"
    assert resolve_registry("localhost:5000", configured) == "localhost:5000"  # the flag wins
    with pytest.raises(ConveyorError) as info:
        resolve_registry(None, plain)
    assert "--registry HOST[:PORT]/prefix" in str(info.value)
    assert "CONVEYOR_REGISTRY" in str(info.value) and "registry = " in str(info.value)
    for wrong in ("https://registry.example.com/ml", "host:port/x", "Registry.example.com/ML"):
        with pytest.raises(ConveyorError, match="HOST\\[:PORT\\]/prefix without a scheme"):
            resolve_registry(wrong, plain)


def test_image_records_round_trip_and_odd_ones_are_ignored(tmp_path):
    from conveyor.engine.settings import Settings
    from conveyor.engine.store import ArtifactStore
    from conveyor.runners.images import ImageBuilder, ImageRecord, _repository, record_key

    digest = "sha256:" + "ab" * 32
    record = ImageRecord("k" * 24, f"10.0.0.1:5000/ml/conveyor-env@{digest}", "10.0.0.1:5000/ml",
                         "2025-01-01T00:00:00+00:00", "sha256:" + "cd" * 32)  # fmt: skip
    assert ImageRecord.from_json(record.to_json()) == record
    assert record.digest == digest
    assert record_key(record.key) == f"images/{record.key}.json"
    for text in ("[]", '{"key": "k"}', record.to_json().replace("@sha256:", ":latest")):
        with pytest.raises(ValueError):
            ImageRecord.from_json(text)

    store = ArtifactStore(tmp_path / "store")
    settings = Settings(project_root=tmp_path, home=tmp_path, env_dir=tmp_path / "envs")
    builder = ImageBuilder(settings, None, store)  # type: ignore[arg-type]  (no engine needed)
    assert builder.record(record.key) is None
    store.write_document(record_key(record.key), record.to_json())
    assert builder.record(record.key) == record
    store.write_document(record_key("other"), record.to_json())  # a record under another key
    store.write_document(record_key("broken"), "{not json")
    assert builder.record("other") is None and builder.record("broken") is None
    assert ImageBuilder(settings, None).record(record.key) is None  # type: ignore[arg-type]

    assert _repository("127.0.0.1:5000/a/conveyor-env:key") == "127.0.0.1:5000/a/conveyor-env"
    assert _repository(f"127.0.0.1:5000/a/conveyor-env@{digest}") == "127.0.0.1:5000/a/conveyor-env"
    assert _repository("127.0.0.1:5000/a/conveyor-env") == "127.0.0.1:5000/a/conveyor-env"
    assert _repository("conveyor-env:key") == "conveyor-env"


# ----------------------------------------------------------------------------- builds and prune


class _Images:
    def __init__(self, stages=()):
        self.stages = list(stages)
        self.removed = []

    def list(self, filters=None):
        label = (filters or {}).get("label", "")
        return [s for s in self.stages if label.split("=")[0] in s.labels]

    def remove(self, image_id, force=False):
        self.removed.append(image_id)


class _Api:
    def __init__(self, chunks):
        self.chunks = chunks

    def build(self, **options):
        yield from self.chunks


class _Client:
    def __init__(self, chunks=(), stages=()):
        self.api = _Api(list(chunks))
        self.images = _Images(stages)


def _build_with(tmp_path, chunks):
    from conveyor.engine.environments import EnvironmentSpec
    from conveyor.engine.settings import Settings
    from conveyor.runners.images import BaseImage, ImageBuilder
    from conveyor.runners.locks import Lock

    settings = Settings(project_root=tmp_path, home=tmp_path, env_dir=tmp_path / "envs")
    builder = ImageBuilder(settings, _Client(chunks))  # type: ignore[arg-type]
    builder._uv_fits = False  # no host uv to copy: nothing here asks the engine
    spec = EnvironmentSpec(("pandas==2.2.3", "scikit-learn==1.5.2"), "3.11")
    lock = Lock(spec, tmp_path / "lock.txt", "pandas==2.2.3\nscikit-learn==1.5.2\n")
    base = BaseImage("python:3.11-slim", "sha256:" + "ab" * 32, "3.11.2")
    builder._build("k" * 24, "conveyor-env:" + "k" * 24, spec, base, lock, "step 'train'")


def test_an_engine_failure_is_not_blamed_on_the_requirements(tmp_path):
    from conveyor.errors import EnvironmentBuildError

    missing = "No such image: sha256:" + "cd" * 32
    chunks = [{"stream": "Step 1/12 : ARG BASE_IMAGE\n"}, {"stream": " ---> Running in 1\n"},
              {"error": missing}]  # fmt: skip
    with pytest.raises(EnvironmentBuildError) as caught:
        _build_with(tmp_path, chunks)
    message = str(caught.value)
    assert message.startswith(
        f"could not build the image for step 'train': the docker engine failed: {missing}. "
        f"The requirements were not at fault (the install step did not fail). An image the "
        f"build used was removed while it ran"
    )
    assert "installer rejected" not in message and "Fix the requirement" not in message


def test_a_failed_install_step_still_names_the_requirement(tmp_path):
    from conveyor.errors import EnvironmentBuildError

    chunks = [
        {"stream": "  × No solution found when resolving dependencies:\n"},
        {"stream": "  ╰─▶ Because scikit-learn==1.5.2 has no wheels for this platform...\n"},
        {"error": "The command '/bin/sh -c set -eu; uv pip sync ...' returned a non-zero code: 1"},
    ]
    with pytest.raises(EnvironmentBuildError) as caught:
        _build_with(tmp_path, chunks)
    message = str(caught.value)
    assert "the installer rejected scikit-learn==1.5.2" in message
    assert "the install step returned a non-zero code: 1" in message
    assert "docker engine failed" not in message


class _Stage:
    def __init__(self, image_id, key, minutes_old):
        from datetime import UTC, datetime, timedelta

        created = datetime.now(UTC) - timedelta(minutes=minutes_old)
        self.id = image_id
        self.labels = {"conveyor.build-stage": key}
        self.attrs = {"Created": created.strftime("%Y-%m-%dT%H:%M:%S.%f123Z")}


def test_prune_leaves_install_stages_a_build_may_still_use(tmp_path):
    from filelock import FileLock

    from conveyor.runners.images import prune_images

    stages = [
        _Stage("sha256:fresh", "a" * 24, minutes_old=5),  # another project's build, running
        _Stage("sha256:locked", "b" * 24, minutes_old=120),  # this project's long build
        _Stage("sha256:stale", "c" * 24, minutes_old=120),  # a build killed long ago
    ]
    client = _Client(stages=stages)
    client.images.list = lambda filters=None: stages if "build-stage" in str(filters) else []
    with FileLock(str(tmp_path / f".docker-{'b' * 24}.lock")):
        found = dict(prune_images(client, keep=set(), lock_dir=tmp_path))
    assert client.images.removed == ["sha256:stale"]
    kept = {what.split()[2]: why for what, why in found.items() if why}
    assert kept["a" * 24].startswith("5 minutes old, so a build on this engine (of any project)")
    assert kept["b" * 24] == "a build of this project holds its lock: it is in progress"
    assert found[f"build stage {'c' * 24} (an interrupted build's leftover)"] is None


class _Image:
    def __init__(self, image_id, key, tags, minutes_old):
        from datetime import UTC, datetime, timedelta

        created = datetime.now(UTC) - timedelta(minutes=minutes_old)
        self.id = image_id
        self.tags = tags
        self.labels = {"conveyor.env-key": key, "conveyor.requirements": "[]"}
        self.attrs = {"Created": created.isoformat(), "Size": 1, "RepoDigests": []}


def test_images_list_shows_each_key_once_preferring_its_tag():
    from conveyor.runners.images import list_images

    key = "a" * 24
    images = [
        _Image("sha256:rebuilt", key, [f"conveyor-env:{key}"], minutes_old=120),
        _Image("sha256:newer-pull", key, [], minutes_old=5),  # pulled by digest, untagged
        _Image("sha256:other", "b" * 24, [f"conveyor-env:{'b' * 24}"], minutes_old=60),
    ]
    client = _Client(stages=images)
    listed = list_images(client)
    assert [(i["id"], i["copies"]) for i in listed] == [
        ("sha256:other", 0), ("sha256:rebuilt", 1),
    ]  # fmt: skip


MOUNTINFO = """\
1200 1100 0:52 / / rw,relatime master:1 - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/X
1210 1200 8:1 /srv/app /project rw,relatime - ext4 /dev/sda1 rw
1220 1200 8:1 /var/lib/docker/containers/{id}/resolv.conf /etc/resolv.conf rw - ext4 /dev/sda1 rw
1221 1200 8:1 /var/lib/docker/containers/{id}/hostname /etc/hostname rw - ext4 /dev/sda1 rw
"""


def test_the_container_a_process_runs_in_is_read_from_its_mounts():
    ident = "0123456789abcdef" * 4
    assert own_container_id(MOUNTINFO.format(id=ident)) == ident
    assert own_container_id("1 0 8:1 / / rw - ext4 /dev/sda1 rw\n") is None  # on a host


def test_paths_of_a_runner_in_a_container_are_mapped_through_its_mounts(tmp_path):
    paths = EnginePaths(
        "f" * 64,
        (
            (PurePosixPath("/project/.conveyor/artifacts"), PurePosixPath("/mnt/store")),
            (PurePosixPath("/project"), PurePosixPath("/srv/app")),
            (PurePosixPath("/home/conveyor/.cache"), PurePosixPath("/var/lib/docker/volumes/v")),
        ),
    )
    run = Path("/project/.conveyor/runs/r1/step/attempt-1")
    assert paths.source(run) == Path("/srv/app/.conveyor/runs/r1/step/attempt-1")
    # the deepest mount wins: the store on its own volume is not under the project's source
    assert paths.source(Path("/project/.conveyor/artifacts/ab/c")) == Path("/mnt/store/ab/c")
    cache = Path("/home/conveyor/.cache/conveyor/runtime")
    assert paths.source(cache) == Path("/var/lib/docker/volumes/v/conveyor/runtime")
    # the container's own layer cannot be bound; /projects is not under /project
    for own in ("/opt/elsewhere/x", "/projects/x"):
        with pytest.raises(ConveyorError, match=f"{own} is in the filesystem of container ffff"):
            paths.source(Path(own))
    # on the engine's own machine nothing is translated, and binds carry the engine's paths
    assert EnginePaths().source(run) == run
    mounts = Mounts(((run, "/conveyor/work", "rw"),))
    assert mounts.binds(paths.source) == [
        f"/srv/app/{run.relative_to('/project')}:/conveyor/work:rw"
    ]
