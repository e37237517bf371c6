"""What a step can reach, probed from inside one as an attacker would, under venv and docker.

One pipeline of independent probe steps per runner: `probe` tries everything with the network
off, `probe_net` the same with `network=True`, `escape` leaves a `setsid` grandchild behind a
timeout and `hog` allocates far past its memory limit. The outcomes are judged on the host where
they can be (a file written where it must not be is looked for in the real project), and the
README's table of what each runner enforces must say exactly what the probes found.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import sys
from pathlib import Path

import psutil
import pytest

import conveyor
from tests.conftest import need

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, os, socket, subprocess, time
from conveyor import component


def _attempt(fn):
    try:
        return fn()
    except Exception as exc:  # any refusal: the probe reports it as denied
        return f"error: {type(exc).__name__}: {exc}"


def _checks(target: dict) -> dict:
    pid, secret = target["pid"], target["secret"]

    def environ():
        with open(f"/proc/{pid}/environ", "rb") as f:
            return "allowed" if secret.encode() in f.read() else "denied: secret not there"

    def processes():
        with open(f"/proc/{pid}/cmdline") as f:
            return "allowed" if f.read() == target["cmdline"] else "denied: another process"

    def signal():
        os.kill(pid, 0)  # signal 0: asks whether it could be signalled, sends nothing
        return "allowed"

    def connect(host, port):
        socket.create_connection((host, port), timeout=5).close()
        return "allowed"

    def write(path):
        with open(path, "w") as f:
            f.write("written by a step")
        return "attempted"  # judged on the host: the file must not appear there

    def read(path):
        with open(path, "rb") as f:
            return "allowed" if target["db_secret"].encode() in f.read() else "denied: other"

    def docker_socket():
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(target["docker_socket"])
        return "allowed"

    def shadow():
        with open("/etc/shadow") as f:
            f.read()
        return "allowed"

    def undeclared():
        import sqlalchemy  # installed where the orchestrator runs, never declared here

        return "allowed"

    def runtime():
        import conveyor

        return write(os.path.join(os.path.dirname(conveyor.__file__), "written-by-step.txt"))

    return {
        "read the orchestrator's environment": _attempt(environ),
        "see the orchestrator's process": _attempt(processes),
        "signal the orchestrator": _attempt(signal),
        "connect to 127.0.0.1:5432": _attempt(lambda: connect("127.0.0.1", 5432)),
        "reach the package index": _attempt(lambda: connect(target["index"], 443)),
        "write the project": _attempt(lambda: write(target["project_file"])),
        "write the artifact store outside its output": _attempt(
            lambda: write(target["store_file"])
        ),
        "write conveyor's code": _attempt(runtime),
        "read the database file": _attempt(lambda: read(target["database"])),
        "open the docker socket": _attempt(docker_socket),
        "read /etc/shadow": _attempt(shadow),
        "import an undeclared package": _attempt(undeclared),
    }


@component
def probe(target: dict) -> dict:
    return _checks(target)


@component(network=True)
def probe_net(target: dict) -> dict:
    return _checks(target)


@component(timeout=2)
def escape(marker: str) -> int:
    # a grandchild in a session of its own: it leaves the step's process group
    subprocess.Popen(["setsid", "sleep", marker])
    time.sleep(60)
    return 0


@component(memory="512Mi")
def fits(rows: int) -> "pd.DataFrame":
    import pandas as pd  # pyarrow saves it with threads: their reserved memory must not count

    return pd.DataFrame({"x": range(rows)})


@component(memory="200Mi")
def hog() -> int:
    data = b"x" * (1 << 30)  # 1 GiB, every page touched
    return len(data)
"""

FLOW = """
from conveyor import pipeline
from steps.probe import escape, fits, hog, probe, probe_net

@pipeline
def within_limits(rows: int):
    return fits(rows)

@pipeline
def isolation(target: dict, marker: str):
    probe(target)
    probe_net(target)
    escape(marker)
    hog()
"""


def _docker_ready() -> str:
    try:
        import docker

        from conveyor.engine.settings import Settings

        client = docker.from_env()
        client.ping()
        client.images.get(Settings.load().base_image)
    except Exception as exc:
        return f"no Docker engine or base image ({exc}); see containers/README.md"
    return ""


def _probe(project, runner: str, monkeypatch) -> dict[str, dict[str, str] | str]:
    """Run the probe pipeline under `runner`; every check's verdict, judged on the host."""
    secret = secrets.token_hex(8)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)  # what a step must never see
    project.write("steps/probe.py", PROBE)
    project.write("flows/isolation.py", FLOW)
    home = project.root / ".conveyor"
    (home / "artifacts").mkdir(parents=True, exist_ok=True)
    database = home / "conveyor.db"
    database.write_text(f"a database holding {secret}")
    target = {
        "pid": os.getpid(),
        "cmdline": Path("/proc/self/cmdline").read_text(),
        "secret": secret,
        "db_secret": secret,
        "index": "pypi.org",
        "project_file": str(project.root / "written-by-step.txt"),
        "store_file": str(home / "artifacts" / "written-by-step.txt"),
        "database": str(database),
        "docker_socket": "/var/run/docker.sock",
    }
    marker = f"3600.{secrets.randbelow(10**6)}"  # names the grandchild uniquely
    result = conveyor.run(
        "isolation", {"target": target, "marker": marker}, runner=runner, hooks=[], cache=False
    )
    verdicts: dict[str, dict[str, str] | str] = {}
    for name in ("probe", "probe_net"):
        step = result.steps[name]
        assert step.status == "succeeded", step.error
        found = dict(step.output)
        for label, path in (
            ("write the project", target["project_file"]),
            ("write the artifact store outside its output", target["store_file"]),
        ):
            found[label] = "allowed" if Path(path).exists() else "denied"
            Path(path).unlink(missing_ok=True)
        verdicts[name] = found
    escape = result.steps["escape"]
    survivors = _marked(marker)
    for p in survivors:
        p.kill()
    timed_out = escape.status == "failed" and "timed out after 2 s" in (escape.error or "")
    verdicts["outlive a timeout in its own session"] = (
        "denied" if timed_out and not survivors else f"allowed ({escape.error}; {survivors})"
    )
    hog = result.steps["hog"]
    verdicts["allocate past its memory limit"] = (
        "denied"
        if hog.status == "failed" and "killed: out of memory (limit 200Mi)" in (hog.error or "")
        else f"allowed ({hog.status}: {hog.error})"
    )
    return verdicts


def _allowed(verdict: str) -> str:
    return "allowed" if verdict.startswith("allowed") else "denied"


def readme_table() -> dict[str, dict[str, str]]:
    """The README's table under "What a step can reach": row label -> runner -> verdict."""
    text = (ROOT / "README.md").read_text()
    section = text.split("What a step can reach", 1)[1].split("\n| ", 1)[1]
    lines = ("| " + section).splitlines()  # the first table after the title: its "|" lines
    rows = lines[: next((i for i, line in enumerate(lines) if not line.startswith("|")), None)]
    header = [cell.strip(" `") for cell in rows[0].strip("|").split("|")]
    table = {}
    for row in rows[2:]:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        table[cells[0]] = dict(zip(header[1:], cells[1:], strict=True))
    return table


def _compare(runner: str, verdicts: dict[str, dict[str, str] | str]) -> None:
    """Every probe denied (the network-on probe reaching only the network) and as the README
    says, check by check."""
    table = readme_table()
    seen: dict[str, str] = {}
    off = verdicts["probe"]
    on = verdicts["probe_net"]
    assert isinstance(off, dict) and isinstance(on, dict)
    for label, verdict in off.items():
        seen[label] = _allowed(verdict)
        assert seen[label] == "denied", f"{runner}: a step could {label}: {verdict}"
    for label in ("outlive a timeout in its own session", "allocate past its memory limit"):
        verdict = verdicts[label]
        assert isinstance(verdict, str)
        seen[label] = _allowed(verdict)
        assert seen[label] == "denied", f"{runner}: a step could {label}: {verdict}"
    assert _allowed(on["reach the package index"]) == "allowed", on["reach the package index"]
    seen["reach the package index with network=True"] = "allowed"
    for label, verdict in on.items():
        if label in ("reach the package index", "connect to 127.0.0.1:5432"):
            continue  # the network, which network=True asks for
        assert _allowed(verdict) == "denied", f"{runner}, network=True: could {label}: {verdict}"
    seen["connect to 127.0.0.1:5432 with network=True"] = _allowed(on["connect to 127.0.0.1:5432"])
    documented = {label: row[runner] for label, row in table.items()}
    assert documented == seen, f"the README's table differs from what {runner} steps can do"


@pytest.mark.venv
def test_a_sandboxed_venv_step_reaches_nothing_it_was_not_given(project, monkeypatch):
    from conveyor.runners.sandbox import sandbox_problem

    problem = sandbox_problem()
    need(problem is None, f"the venv sandbox cannot run here: {problem}")
    need(shutil.which("prlimit") is not None, "prlimit (util-linux) is missing")
    _compare("venv", _probe(project, "venv", monkeypatch))
    fitting = conveyor.run("within_limits", {"rows": 100_000}, runner="venv", hooks=[])
    assert fitting.ok, fitting.error  # a limit is not a reason to fail a step that fits it
    assert len(fitting.output) == 100_000


@pytest.mark.docker
def test_a_docker_step_reaches_nothing_it_was_not_given(project, monkeypatch):
    problem = _docker_ready()
    need(not problem, problem)
    _compare("docker", _probe(project, "docker", monkeypatch))


QUIET = """
import subprocess, time
from conveyor import component, pipeline

@component
def quiet(marker: str) -> int:
    subprocess.Popen(["setsid", "sleep", marker])
    time.sleep(60)  # prints nothing: nothing would tell it the orchestrator is gone
    return 0

@pipeline
def orphan(marker: str):
    quiet(marker)
"""


def _marked(marker: str) -> list[psutil.Process]:
    return [
        p for p in psutil.process_iter(["cmdline", "status"])
        if p.info["cmdline"] and marker in p.info["cmdline"] and p.info["status"] != "zombie"
    ]  # fmt: skip


def _wait_for(condition, seconds: float) -> bool:
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


@pytest.mark.venv
def test_a_sandboxed_step_dies_with_a_killed_orchestrator(project):
    import signal
    import subprocess

    from conveyor.runners.sandbox import sandbox_problem

    problem = sandbox_problem()
    need(problem is None, f"the venv sandbox cannot run here: {problem}")
    project.write("flows/orphan.py", QUIET)
    marker = f"3600.{secrets.randbelow(10**6)}"
    params = {"marker": marker}
    script = f"import conveyor; conveyor.run('orphan', {params!r}, runner='venv', hooks=[])"
    orchestrator = subprocess.Popen([sys.executable, "-c", script], cwd=project.root)
    try:
        assert _wait_for(lambda: bool(_marked(marker)), 120), "the step never started"
    finally:
        orchestrator.send_signal(signal.SIGKILL)
        orchestrator.wait()
    gone = _wait_for(lambda: not _marked(marker), 10)
    for survivor in _marked(marker):
        survivor.kill()
    assert gone, "the step's process tree outlived its orchestrator"


def test_the_readme_table_names_every_probe():
    table = readme_table()
    assert set(table) >= {
        "read the orchestrator's environment",
        "allocate past its memory limit",
        "reach the package index with network=True",
    }
    assert all(set(row) == {"inprocess", "venv", "docker"} for row in table.values())
    assert not re.search(r"\| *(yes|no) *\|", "\n".join(str(r) for r in table.values()))


def test_cpu_and_memory_limits_are_cgroups_of_the_step_where_writable():
    import subprocess

    from conveyor.runners.cgroups import step_groups

    groups = step_groups(200 * 2**20, 0.5)
    if groups is None:  # the runner falls back (RLIMIT_DATA) and its plan says cpu is not enforced
        pytest.skip("no writable memory and cpu cgroups here")
    try:
        shown = subprocess.run(
            groups.enter(["cat", "/proc/self/cgroup"]), capture_output=True, text=True, check=True
        ).stdout
        assert all(path.name in shown for path in groups.paths), shown
        assert groups.memory is not None
        limit = "memory.max" if groups.version == 2 else "memory.limit_in_bytes"
        assert (groups.memory / limit).read_text().strip() == str(200 * 2**20)
        eaten = subprocess.run(groups.enter([sys.executable, "-c", "b'x' * (1 << 30)"]))
        assert eaten.returncode != 0 and groups.oom_killed()
    finally:
        groups.remove()
    assert not any(path.exists() for path in groups.paths)
