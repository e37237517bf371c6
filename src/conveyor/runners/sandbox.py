"""The venv runner's sandbox: each step process inside bubblewrap (`bwrap`, Linux namespaces).

A sandboxed step gets its own user, PID, IPC, UTS, cgroup and network namespaces: it runs as
uid 65534 without capabilities, `/proc` shows only its own process tree (it can neither read
the orchestrator's environment nor signal it), and it has no network besides a private loopback
unless its component sets `network=True`. Its filesystem is built from nothing: the system's
`/usr` (and the `/bin`, `/lib` links into it), a short list of `/etc` files, its environment and
the interpreter behind it, conveyor's runtime and its code bundle, all read-only; its input files
read-only; its attempt folder read-write at `/conveyor/work` and a private `/tmp`. The project,
the database file, other runs, the artifact store, the docker socket and `/etc/shadow` are not
mounted, so they do not exist for it. (Inside, uid 65534 maps to the orchestrator's uid, so what
a step can reach is set by these mounts, not by file modes.)

The sandbox dies with the orchestrator (`--die-with-parent`), and killing its outer process ends
its PID namespace: every process in it, `setsid` children included, dies at once. Where bwrap
cannot run (not Linux, not installed, no user namespaces) `sandbox_problem` says why, and the
venv runner says which protections are off.

A step forked from its environment's warm server (`runners/warm.py`) gets the same view from
the server's side: the server runs in a sandbox made by `server_command`, and each forked step
builds its own namespaces and mounts inside it (`conveyor._runtime.zygote`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from conveyor.engine.tasks import Task
from conveyor.runners.containers import CODE, INPUTS, RUNTIME, WORK, Mounts

STAGE = "/conveyor/stage"  # where a warm server sees the host folders steps take files from
SANDBOX_UID = "65534"  # nobody: no capabilities, owns nothing the step could find
# The /etc entries a Python step may need (users, time zones, shared libraries); everything else
# there (shadow, ssh keys, credentials) is simply absent. Each costs a mount per step, so the
# ones only the network uses (DNS, TLS roots) are mounted only for `network=True` steps.
ETC = (
    "passwd", "group", "nsswitch.conf", "hosts", "localtime", "timezone", "ld.so.cache",
    "ld.so.conf", "ld.so.conf.d", "alternatives", "os-release", "mime.types", "fonts",
)  # fmt: skip
ETC_NETWORK = (
    "resolv.conf", "host.conf", "gai.conf", "services", "protocols", "ssl", "ca-certificates",
    "ca-certificates.conf", "pki",
)  # fmt: skip
SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# What a step loses when it runs without the sandbox, said at plan time and when a run starts.
UNPROTECTED = (
    "the orchestrator's processes and environment are visible to steps",
    "network is on for every step",
    "steps can write anything the orchestrator's user can (project, store, database)",
    "a timeout may miss children that left the step's session",
)


def sandbox_problem() -> str | None:
    """Why steps cannot be sandboxed on this machine, or None when bwrap works here."""
    if os.environ.get("CONVEYOR_SANDBOX", "").lower() == "off":
        return "turned off by CONVEYOR_SANDBOX=off"
    if not sys.platform.startswith("linux"):
        return f"bubblewrap needs Linux (this is {sys.platform})"
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "bubblewrap is not installed (apt-get install bubblewrap)"
    probe = [
        bwrap, "--unshare-all", "--die-with-parent", "--uid", SANDBOX_UID, "--gid", SANDBOX_UID,
        *_system_binds(), "--proc", "/proc", "--dev", "/dev", "true",
    ]  # fmt: skip
    try:
        proc = subprocess.run(probe, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap did not run ({exc})"
    if proc.returncode != 0:
        reason = proc.stderr.strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        return f"bwrap cannot create its namespaces here ({reason[0]}); user namespaces off?"
    return None


def _system_binds() -> list[str]:
    args = []
    for folder in SYSTEM:
        path = Path(folder)
        if path.is_symlink():  # merged /usr: /bin -> usr/bin
            args += ["--symlink", str(path.readlink()), folder]
        elif path.is_dir():
            args += ["--ro-bind", folder, folder]
    return args


def interpreter_home(environment: Path) -> Path | None:
    """The installation behind a venv (`home` in its pyvenv.cfg, one level up), if outside /usr."""
    try:
        lines = (environment / "pyvenv.cfg").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        key, _, value = line.partition("=")
        if key.strip() == "home" and value.strip():
            home = Path(value.strip()).resolve().parent
            return None if home.is_relative_to("/usr") else home
    return None


def step_mounts(task: Task, runtime: Path) -> Mounts:
    """The step's runtime, code bundle and inputs read-only and its attempt folder read-write, at
    the same fixed paths the docker runner uses (so one executor command serves both)."""
    assert task.code is not None, "the sandboxed venv runner ships code as bundles"
    entries = [
        (runtime.resolve(), RUNTIME, "ro"),
        (task.code.resolve(), CODE, "ro"),
        (task.workdir.resolve(), WORK, "rw"),
    ]
    for name, item in task.spec["inputs"].items():
        if "items" in item:  # a collected list: one file per item
            for i, one in enumerate(item["items"]):
                entries.append((Path(one["path"]).resolve(), f"{INPUTS}/{name}/{i}", "ro"))
        else:
            entries.append((Path(item["path"]).resolve(), f"{INPUTS}/{name}", "ro"))
    return Mounts(tuple(entries), shown_as=((CODE, Path(task.project_root)),))


def executor_command(python: str, task: Task, mounts: Mounts) -> list[str]:
    """`python -m conveyor._runtime.executor` with its paths pointed at the mounts."""
    command = [python, "-s", "-m", "conveyor._runtime.executor", mounts.inside(task.spec_path)]
    for flag, section in (("--input", "inputs"), ("--output", "outputs")):
        for name, item in task.spec[section].items():
            if "items" in item:
                for i, one in enumerate(item["items"]):
                    command += [flag, f"{name}[{i}]={mounts.inside(one['path'])}"]
            else:
                command += [flag, f"{name}={mounts.inside(item['path'])}"]
    return [*command, "--result", mounts.inside(task.result_path)]


def _filesystem(network: bool, environment: Path) -> list[str]:
    """The system, /etc, /proc, /dev, private /tmp and the environment (with the interpreter
    behind it), as every sandbox of an environment sees them."""
    args = _system_binds()
    for name in (*ETC, *ETC_NETWORK) if network else ETC:
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/dev/shm"]
    args += ["--ro-bind-try", "/sys/devices/system/cpu", "/sys/devices/system/cpu"]
    environment = environment.resolve()
    args += ["--ro-bind", str(environment), str(environment)]
    home = interpreter_home(environment)
    if home is not None:
        args += ["--ro-bind", str(home), str(home)]
    return args


def bwrap_command(
    bwrap: str, task: Task, environment: Path, mounts: Mounts, command: list[str]
) -> list[str]:
    """The bwrap invocation that runs `command` for `task` in a sandbox of its own."""
    args = [
        bwrap, "--unshare-all", "--die-with-parent", "--new-session",
        "--uid", SANDBOX_UID, "--gid", SANDBOX_UID, "--hostname", "conveyor-step",
    ]  # fmt: skip
    if task.component.network:
        args.append("--share-net")
    args += _filesystem(task.component.network, environment)
    for host, inside, mode in mounts.entries:
        args += ["--bind" if mode == "rw" else "--ro-bind", str(host), inside]
    return [*args, "--chdir", WORK, "--", *command]


def server_command(
    bwrap: str,
    environment: Path,
    runtime: Path,
    stages: Sequence[tuple[Path, str]],
    command: list[str],
) -> list[str]:
    """The bwrap invocation of an environment's warm fork server (`_runtime/zygote.py`).

    It sees what a step of the environment sees, minus a step's own files, plus the host
    folders steps take their files from (`stages`: (folder, "ro" | "rw"), at
    /conveyor/stage/<i>). It is root of its user namespace with CAP_SYS_ADMIN there only (and
    CAP_SETFCAP, without which the kernel refuses a child user namespace that maps this root),
    so it can give each forked step namespaces of its own; steps drop back to uid 65534 and no
    capabilities. No network: a step that needs one starts a fresh interpreter.
    """
    args = [
        bwrap, "--unshare-all", "--die-with-parent", "--new-session",
        "--uid", "0", "--gid", "0", "--cap-drop", "ALL",
        "--cap-add", "CAP_SYS_ADMIN", "--cap-add", "CAP_SETFCAP", "--hostname", "conveyor-step",
    ]  # fmt: skip
    args += _filesystem(False, environment)
    args += ["--ro-bind", str(runtime.resolve()), RUNTIME]
    for folder in (CODE, WORK, INPUTS):
        args += ["--dir", folder]
    for index, (host, mode) in enumerate(stages):
        args += ["--bind" if mode == "rw" else "--ro-bind", str(host), f"{STAGE}/{index}"]
    return [*args, "--chdir", WORK, "--", *command]


def memory_limited(command: list[str], limit: int | None) -> tuple[list[str], bool]:
    """`command` under a data-segment limit (RLIMIT_DATA, through util-linux's prlimit), and
    whether the limit could be applied: the fallback where no memory cgroup can be made.

    RLIMIT_DATA counts the memory a process can write to (heap, anonymous mappings, thread
    stacks), not the address space it merely reserves: RLIMIT_AS, which counts that too, makes
    a pandas step that needs 100 MB fail to start a thread under a 512Mi limit (pyarrow's and
    glibc's allocators reserve hundreds of MB per process and thread).
    """
    if not limit:
        return command, True
    prlimit = shutil.which("prlimit")
    if prlimit is None:
        return command, False
    return [prlimit, f"--data={limit}:{limit}", "--", *command], True
