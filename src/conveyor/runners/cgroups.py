"""Memory and cpu limits for a step process through the kernel's controllers, where writable.

A step gets a cgroup of its own under the orchestrator's (cgroup v2 where its memory controller
is delegated to us, else the v1 memory and cpu hierarchies): `memory` caps its RAM and swap
together, as docker's `mem_limit` = `memswap_limit` does, so running past it is an OOM kill the
group's counters name; `cpu` caps its cpu time per period. The step's outer process joins the
groups before it executes anything (`enter`), so nothing of the step runs outside them. Where
no controller is writable (an unprivileged user, a container without delegation) the venv
runner falls back to RLIMIT_DATA for memory and says cpu is not enforced.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

PERIOD_US = 100_000  # the cpu quota's period: 100 ms, the kernel's default


@dataclass(frozen=True, slots=True)
class StepGroups:
    """The cgroups made for one step process (one on v2; one per controller on v1)."""

    paths: tuple[Path, ...]
    memory: Path | None  # the group whose counters say whether the step was OOM-killed
    version: int

    def enter(self, command: list[str]) -> list[str]:
        """`command`, run by a shell that first moves itself into every group, then execs."""
        joins = " && ".join(f'echo $$ > "{path / "cgroup.procs"}"' for path in self.paths)
        return ["/bin/sh", "-c", f'{joins} && exec "$@"', "conveyor-step", *command]

    def oom_killed(self) -> bool:
        """Whether the kernel killed a process of the group for memory."""
        if self.memory is None:
            return False
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        try:
            lines = (self.memory / name).read_text().splitlines()
        except OSError:
            return False
        counts = dict(line.split(maxsplit=1) for line in lines if " " in line)
        return int(counts.get("oom_kill", "0")) > 0

    def remove(self) -> None:
        """Remove the groups (empty once the step's PID namespace has ended; retried briefly)."""
        for path in self.paths:
            for _ in range(50):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # its last processes are still being reaped
                    time.sleep(0.02)


def _own_groups() -> dict[str, str]:
    """controller ("" for v2) -> this process's cgroup path, from /proc/self/cgroup."""
    groups = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            groups[controller] = path
    return groups


def _mounts() -> dict[str, Path]:
    """controller ("" for the v2 hierarchy) -> where its hierarchy is mounted."""
    found: dict[str, Path] = {}
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        if fields[2] == "cgroup2":
            found.setdefault("", Path(fields[1]))
        elif fields[2] == "cgroup":
            for option in fields[3].split(","):
                if option in ("memory", "cpu"):
                    found.setdefault(option, Path(fields[1]))
    return found


# written where the kernel has them (swap accounting can be off); a missing one is no refusal
OPTIONAL = ("memory.swap.max", "memory.memsw.limit_in_bytes")


def _make(parent: Path, name: str, settings: dict[str, str]) -> Path:
    path = parent / name
    path.mkdir()
    try:
        for file, value in settings.items():
            if file in OPTIONAL and not (path / file).exists():
                continue
            (path / file).write_text(value)
    except OSError:
        path.rmdir()
        raise
    return path


def step_groups(memory: int | None, cpu: float | None) -> StepGroups | None:
    """Fresh cgroups limiting a step to `memory` bytes (RAM and swap) and `cpu` cpus, or None
    where the controllers cannot be written (the caller falls back, and says so)."""
    if not memory and not cpu:
        return None
    try:
        own, mounts = _own_groups(), _mounts()
    except (OSError, ValueError):
        return None
    name = f"conveyor-step-{os.getpid()}-{secrets.token_hex(4)}"
    quota = str(int(cpu * PERIOD_US)) if cpu else ""
    if "" in mounts and "" in own:  # cgroup v2: one group, if its controllers are delegated
        parent = mounts[""] / own[""].lstrip("/")
        try:
            enabled = (parent / "cgroup.subtree_control").read_text().split()
        except OSError:
            enabled = []
        if (not memory or "memory" in enabled) and (not cpu or "cpu" in enabled):
            settings: dict[str, str] = {}
            if memory:
                settings |= {"memory.max": str(memory), "memory.swap.max": "0"}
            if cpu:
                settings["cpu.max"] = f"{quota} {PERIOD_US}"
            try:
                path = _make(parent, name, settings)
                return StepGroups((path,), path if memory else None, 2)
            except OSError:
                pass
    made: list[Path] = []  # cgroup v1: a group per controller
    memory_group = None
    try:
        if memory:
            parent = mounts["memory"] / own["memory"].lstrip("/")
            settings = {
                "memory.limit_in_bytes": str(memory),
                "memory.memsw.limit_in_bytes": str(memory),  # after the RAM limit: never below it
            }
            memory_group = _make(parent, name, settings)
            made.append(memory_group)
        if cpu:
            parent = mounts["cpu"] / own["cpu"].lstrip("/")
            settings = {"cpu.cfs_period_us": str(PERIOD_US), "cpu.cfs_quota_us": quota}
            made.append(_make(parent, name, settings))
    except (OSError, KeyError):
        StepGroups(tuple(made), None, 1).remove()
        return None
    return StepGroups(tuple(made), memory_group, 1)
