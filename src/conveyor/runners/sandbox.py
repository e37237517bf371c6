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
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conveyor.engine.tasks import Task
from conveyor.runners.containers import CODE, INPUTS, RUNTIME, WORK, Mounts

SANDBOX_UID = "65534"  # nobody: no capabilities, owns nothing the step could find
# The /etc entries a Python step may need (names, DNS, TLS roots, time zones, shared libraries);
# everything else there (shadow, ssh keys, credentials) is simply absent.
ETC = (
    "passwd", "group", "nsswitch.conf", "hosts", "host.conf", "resolv.conf", "gai.conf",
    "services", "protocols", "localtime", "timezone", "ssl", "ca-certificates",
    "ca-certificates.conf", "pki", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives",
    "mime.types", "os-release", "debian_version", "fonts", "matplotlibrc",
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
    args += _system_binds()
    for name in ETC:
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/dev/shm"]
    args += ["--ro-bind-try", "/sys/devices/system/cpu", "/sys/devices/system/cpu"]
    environment = environment.resolve()
    args += ["--ro-bind", str(environment), str(environment)]
    home = interpreter_home(environment)
    if home is not None:
        args += ["--ro-bind", str(home), str(home)]
    for host, inside, mode in mounts.entries:
        args += ["--bind" if mode == "rw" else "--ro-bind", str(host), inside]
    return [*args, "--chdir", WORK, "--", *command]


def memory_limited(command: list[str], limit: int | None) -> tuple[list[str], bool]:
    """`command` under an address-space limit (RLIMIT_AS, through util-linux's prlimit), and
    whether the limit could be applied."""
    if not limit:
        return command, True
    prlimit = shutil.which("prlimit")
    if prlimit is None:
        return command, False
    return [prlimit, f"--as={limit}:{limit}", "--", *command], True
