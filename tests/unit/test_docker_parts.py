"""The docker runner's engine-free parts: mounts, output pumping, exit statuses, orphan owners."""

from __future__ import annotations

import os
import socket
from collections import deque
from pathlib import Path

import pytest

from conveyor.errors import ExecutorProtocolError, StepFailed, StepKilled, StepTimeout
from conveyor.runners.containers import (
    Mounts,
    _owner_alive,
    container_name,
    owner_label,
    pump_output,
    readable_by_step,
)


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
