"""Warm containers for the docker runner: one long-lived container per environment and limits,
each step a `docker exec` into it.

A `docker exec` into a running container costs a fraction of a new container (create, start,
wait, remove), so a docker runner keeps one container per (image, memory, cpu, gpu, network)
and runs each step in it, one step at a time: a step that finds its container busy gets another
one. The containers live until the runner closes: the end of a run (`conveyor.run`, the CLI),
of a backfill (whose runs share them), or an interrupt.

What reaches a step is what a fresh container would give it, at the same paths. A container's
mounts are fixed when it is created, so each container binds folders of its own *stage*
(`<runs>/.warm/<container>/`) at `/conveyor/code` and `/conveyor/inputs` (read-only) and
`/conveyor/work` (read-write), and before each step the host fills them: hard links to the
step's code bundle and input files (a copy across file systems), its task spec and an empty
`out/`. After the step whatever it wrote in `/conveyor/work` is moved into its attempt folder
and the stage is emptied, so the next step sees none of it.

A step runs as the step user under a root wrapper inside the container (`WRAPPER`), which, once
the step's process exits, kills every process of the step user (`kill -9 -1` as that user, until
none is left: a `setsid` grandchild included), deletes the step user's files in `/tmp`,
`/var/tmp`, `/dev/shm` and `/run/lock`, and puts back every other place of the image the step
user may write (noted and copied by the container's main process, `MAIN`, when it started) if
the step changed it. It then reports `clean` on a line carrying a secret of this exec (in the
root wrapper's environment, which the step user cannot read); a step whose wrapper does not
report clean has its container removed, never reused. What a later step in the same container
can still observe of an earlier one: the container's hostname, and what any two processes on
one machine share (the kernel's caches). An image without the wrapper's tools is marked unfit
and its steps run in a container each.

A timeout kills the step user's processes through a second exec (docker has no way to kill
an exec); if that fails the container is killed and removed. The memory limit is the
container's, shared by nothing else (one step at a time); an exit by SIGKILL of a step with a
memory limit, not at its timeout, is an out-of-memory kill.

The container's main process ends as `cat` reading a stdin only this orchestrator holds
(attached, closed on the first detach): when the orchestrator dies, even by `kill -9`, stdin
ends, the container exits and the engine removes it (auto-remove). It also carries the owner
label, so the orphan sweep of the next docker runner removes it if the engine missed that, and
the sweep removes the stage folders of orchestrators that are gone.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor.dsl.component import ComponentSpec
from conveyor.engine.settings import Settings
from conveyor.engine.tasks import Task
from conveyor.runners.containers import (
    CODE,
    INPUTS,
    OWNER_LABEL,
    RUNTIME,
    STEP_USER,
    WORK,
    Mounts,
    container_name,
)
from conveyor.runners.containers import _owner_alive as owner_alive
from conveyor.runners.warm import warm_problem  # the warm setting, shared with the venv runner

log = logging.getLogger("conveyor.docker")

STAGE_FOLDER = ".warm"  # under the runs folder: the same file system as the attempt folders
OWNER_FILE = "owner"  # in a stage folder: the owner label of the orchestrator that made it
NONCE_VARIABLE = "CONVEYOR_WARM_NONCE"
TEMP_FOLDERS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")

# Kill every process of the step user but this shell, until none is left. kill(-1) skips the
# caller and succeeds while any process exists (root's too), so /proc is what says "done";
# a process dying or a zombie waiting for its parent takes a moment.
SWEEP = r"""n=0
while [ "$n" -lt 200 ]; do
  kill -9 -1 2>/dev/null
  alive=
  for p in /proc/[0-9]*; do
    if [ -O "$p" ] && [ "${p#/proc/}" != "$$" ]; then alive=1; break; fi
  done
  [ -z "$alive" ] && exit 0
  n=$((n + 1))
  [ "$n" -gt 20 ] && sleep 0.01
done
exit 1
"""

# The container's main process, as root: note every place of the image the step user may
# write (but the temporary folders, emptied instead) and keep a copy of it, then wait for the
# end of stdin. An image without the tools the wrapper needs is marked unfit (steps run cold).
STATE = "/.conveyor-warm"  # root's alone (0700): the step user cannot read or change it
MAIN = r"""umask 077
mkdir -p __STATE__
for tool in setpriv find tar xargs sleep; do
  command -v "$tool" >/dev/null 2>&1 || { touch __STATE__/unfit; exec cat; }
done
setpriv --reuid="$1" --regid="$2" --clear-groups -- find / -xdev \( -path /proc -o -path /sys \
  -o -path /dev -o -path /conveyor -o -path __STATE__ __PRUNE__ \) -prune -o -writable -print \
  > __STATE__/writable 2>/dev/null
while IFS= read -r p; do [ -d "$p" ] && [ ! -L "$p" ] && echo "$p"; done \
  < __STATE__/writable > __STATE__/folders
tar -cpf __STATE__/image.tar -T __STATE__/writable 2>/dev/null
touch __STATE__/ready
exec cat
"""

# Runs as root in the container for each step: the step as the step user, then the sweep as
# that user, the step user's temporary files removed and any place of the image it changed
# restored; `clean` (with the secret of this exec) only if all of that worked.
WRAPPER = r"""nonce=$CONVEYOR_WARM_NONCE
unset CONVEYOR_WARM_NONCE
uid=$1 gid=$2 sweep=$3
shift 3
n=0
while [ ! -e __STATE__/ready ]; do
  if [ -e __STATE__/unfit ] || [ "$n" -gt 6000 ]; then echo "$nonce unfit" >&2; exit 125; fi
  n=$((n + 1))
  sleep 0.01
done
groups=--clear-groups
id -un "$uid" >/dev/null 2>&1 && groups=--init-groups
setpriv --reuid="$uid" --regid="$gid" "$groups" -- "$@"
rc=$?
if setpriv --reuid="$uid" --regid="$gid" --clear-groups -- sh -c "$sweep"; then
  find __TEMP__ -mindepth 1 -user "$uid" -delete 2>/dev/null
  restored=yes
  # a change or a removal sets a status-change time no user can set back
  if [ -n "$(xargs -r -d '\n' sh -c 'find "$@" -cnewer __STATE__/ready -print -quit' - \
        < __STATE__/writable 2>/dev/null)" ]; then
    xargs -r -d '\n' sh -c 'find "$@" -mindepth 1 -delete' - < __STATE__/folders 2>/dev/null
    tar -xpf __STATE__/image.tar -C / 2>/dev/null && touch __STATE__/ready || restored=
  fi
  if [ -n "$restored" ] &&
     [ -z "$(find __TEMP__ -mindepth 1 -user "$uid" -print -quit 2>/dev/null)" ]; then
    echo "$nonce clean" >&2
  fi
fi
exit $rc
"""


def _fill(script: str) -> str:
    prune = " ".join(f"-o -path {folder}" for folder in TEMP_FOLDERS)
    return (
        script.replace("__STATE__", STATE)
        .replace("__TEMP__", " ".join(TEMP_FOLDERS))
        .replace("__PRUNE__", prune)
    )


MAIN, WRAPPER = _fill(MAIN), _fill(WRAPPER)


def wants_warm(component: ComponentSpec, settings: Settings) -> bool:
    """Whether a step of `component` runs in a warm container (else in a fresh one)."""
    return warm_problem(settings) is None and component.warm


def warm_key(task: Task) -> tuple[Any, ...]:
    """What a container is shared by: its image and everything else fixed at its creation."""
    c = task.component
    return (task.environment.location, c.memory, c.cpu, c.gpu, c.network)


def _run_id(task: Task) -> str:
    return task.workdir.resolve().parent.parent.name  # <runs>/<run id>/<step>/attempt-N


@dataclass(eq=False)
class WarmContainer:
    """One long-lived container and its stage folder on the host."""

    id: str
    name: str
    key: tuple[Any, ...]
    stage: Path
    stdin: Any  # the attached stdin: the container lives while this process holds it
    code: Path | None = None  # the code bundle linked into the stage now
    broken: bool = False

    @property
    def work(self) -> Path:
        return self.stage / "work"


def stage_mounts(stage: Path, runtime: Path) -> Mounts:
    """A warm container's fixed binds: conveyor's runtime and the three stage folders."""
    return Mounts(
        (
            (runtime.resolve(), RUNTIME, "ro"),
            (stage / "code", CODE, "ro"),
            (stage / "inputs", INPUTS, "ro"),
            (stage / "work", WORK, "rw"),
        )
    )


class WarmPool:
    """The warm containers of one docker runner: idle ones by key, and every live one."""

    def __init__(self, runs: Path, owner: str) -> None:
        self.root = runs / STAGE_FOLDER
        self.owner = owner
        self._lock = threading.Lock()
        self._idle: dict[tuple[Any, ...], list[WarmContainer]] = {}
        self._all: dict[str, WarmContainer] = {}
        self._count = 0
        self.closings = 0  # how many times the runner closed: a container started across one
        self.unfit: set[str] = set()  # images without the tools of the wrapper: steps run cold

    def fits(self, task: Task) -> bool:
        """Whether `task`'s image can run steps warm (as far as known)."""
        return task.environment.location not in self.unfit

    def take(self, task: Task) -> WarmContainer | None:
        """An idle container for `task`'s key, now busy; None when there is none."""
        with self._lock:
            idle = self._idle.get(warm_key(task))
            return idle.pop() if idle else None

    def give_back(self, box: WarmContainer) -> bool:
        """Make `box` idle again; False when it is broken (the caller removes it)."""
        if box.broken:
            return False
        with self._lock:
            if box.id in self._all:
                self._idle.setdefault(box.key, []).append(box)
                return True
        return False

    def new_stage(self, task: Task) -> tuple[Path, str]:
        """A fresh stage folder for a new container, and that container's name."""
        with self._lock:
            self._count += 1
            count = self._count
        name = container_name(_run_id(task), f"warm-{count}", task.step)
        stage = self.root / name
        for part in ("code", "inputs", "work"):
            (stage / part).mkdir(parents=True, exist_ok=False)
        (stage / OWNER_FILE).write_text(self.owner)
        for part in ("code", "inputs"):
            (stage / part).chmod(0o755)
        open_folder(stage / "work")
        return stage, name

    def add(self, box: WarmContainer, closings: int) -> bool:
        """Track `box`; False when the runner closed since `closings` was read (the caller
        removes it: nobody else would before this process ends)."""
        with self._lock:
            self._all[box.id] = box
            return closings == self.closings

    def close(self) -> list[WarmContainer]:
        """Every live container, to remove; containers being started now will not be kept."""
        with self._lock:
            self.closings += 1
            return list(self._all.values())

    def drop(self, box: WarmContainer) -> None:
        """Forget `box` and delete its stage folder (the container is the caller's to remove)."""
        with self._lock:
            self._all.pop(box.id, None)
            idle = self._idle.get(box.key, [])
            if box in idle:
                idle.remove(box)
        try:
            box.stdin.close()
        except Exception as exc:
            log.debug("closing the stdin of %s: %s", box.name, exc)
        shutil.rmtree(box.stage, ignore_errors=True)

    def sweep_stages(self) -> int:
        """Delete stage folders whose orchestrator on this machine is gone; return how many."""
        removed = 0
        if not self.root.is_dir():
            return 0
        for stage in self.root.iterdir():
            try:
                owner = (stage / OWNER_FILE).read_text().strip()
            except OSError:
                continue  # being made right now, or not ours
            if owner and not owner_alive(owner):
                shutil.rmtree(stage, ignore_errors=True)
                removed += 1
        return removed


def create_options(task: Task, name: str, owner: str) -> dict[str, Any]:
    """The create-container arguments of a warm container (without the host config)."""
    return {
        "image": task.environment.location,
        # ends when the orchestrator's stdin closes: it died or let go
        "command": ["sh", "-c", MAIN, "conveyor-warm", *STEP_USER.split(":")],
        "user": "0:0",  # the root wrapper of each step; steps run as the step user
        "stdin_open": True,  # with attach, the SDK sets StdinOnce: the first detach ends it
        "working_dir": "/",
        "name": name,
        "labels": {
            "conveyor.run": _run_id(task),
            "conveyor.step": task.step,  # the step it was started for
            "conveyor.warm": "1",
            "conveyor.project": str(task.project_root),
            OWNER_LABEL: owner,
        },
    }


def exec_command(command: list[str]) -> list[str]:
    """The exec's command: the root wrapper running `command` as the step user."""
    uid, gid = STEP_USER.split(":")
    return ["sh", "-c", WRAPPER, "conveyor-step", uid, gid, SWEEP, *command]


def unfit(tail: Sequence[str], nonce: str) -> bool:
    """Whether the wrapper found its container unable to run steps warm (tools missing)."""
    return bool(tail) and tail[-1] == f"{nonce} unfit"


def sweep_command() -> list[str]:
    """Run as the step user: kill every process of the step user (a timeout)."""
    return ["sh", "-c", SWEEP]


def open_folder(path: Path) -> None:
    """Let the step user write `path` (chown where we may, else open it to everyone)."""
    uid, gid = (int(part) for part in STEP_USER.split(":"))
    if os.geteuid() == 0:
        os.chown(path, uid, gid)
    elif os.geteuid() != uid:
        path.chmod(0o777)


def stage_in(box: WarmContainer, task: Task, mounts: Mounts) -> None:
    """Put what the step's own container would mount into `box`'s stage folders."""
    code = task.code.resolve() if task.code is not None else None
    if box.code != code:
        _empty(box.stage / "code")
        box.code = None
        if code is not None:
            _link_tree(code, box.stage / "code")
            box.code = code
    _empty(box.stage / "inputs")
    for host, inside, _ in mounts.entries:
        if inside.startswith(INPUTS + "/"):
            target = box.stage / "inputs" / inside[len(INPUTS) + 1 :]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.parent.chmod(0o755)
            _link_tree(host, target)
    _link(task.spec_path, box.work / task.spec_path.name)
    out = box.work / "out"
    out.mkdir()
    open_folder(out)


def stage_out(box: WarmContainer, task: Task) -> None:
    """Move what the step wrote into its attempt folder and empty the stage; a stage that
    cannot be emptied marks the container broken (its next step would see the leftovers)."""
    before = {entry.name for entry in task.workdir.iterdir()}
    before -= {task.spec_path.name, task.result_path.name, "out"}
    for entry in list(box.work.iterdir()):
        target = task.workdir / entry.name
        if entry.name in before:  # the host's own files (the step log) are not the step's
            log.warning("step %s wrote %s in its work folder; not kept", task.step, entry.name)
            continue
        try:
            if target.is_dir() and not target.is_symlink() and entry.is_dir():
                if any(target.iterdir()):
                    shutil.rmtree(target)
            elif (target.exists() or target.is_symlink()) and not (
                entry.is_file() and entry.samefile(target)
            ):
                target.unlink()
            entry.rename(target)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                log.warning("could not move %s out of the stage: %s", entry, exc)
                continue
            shutil.move(str(entry), str(target))  # the runs folder spans file systems
    for part in ("work", "inputs"):
        _empty(box.stage / part)
    if any(box.work.iterdir()):
        box.broken = True


def _empty(folder: Path) -> None:
    for entry in list(folder.iterdir()):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _link(source: Path, target: Path) -> None:
    """A hard link of a file (a copy where a link cannot be made: another file system, or a
    file this process may not link)."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _link_tree(source: Path, target: Path) -> None:
    if not source.is_dir():
        _link(source, target)
        return
    target.mkdir(exist_ok=True)
    target.chmod(0o755)
    for folder, dirs, files in os.walk(source):
        here = target / Path(folder).relative_to(source)
        for name in dirs:
            (here / name).mkdir()
            (here / name).chmod(0o755)
        for name in files:
            _link(Path(folder) / name, here / name)
