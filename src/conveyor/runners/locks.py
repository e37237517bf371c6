"""Locks and builds: resolving requirement sets with uv, and checking what a build produced.

Locks are resolved once with `uv pip compile` and kept under `.conveyor/locks/` so they can be
committed; `conveyor envs lock` refreshes them. A built environment must import the libraries
the executor needs to move its values, or the plan fails before any step runs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from conveyor._runtime.files import write_text_atomic
from conveyor._runtime.hashing import sha256_text
from conveyor.engine.environments import EnvironmentSpec, requirement_name
from conveyor.engine.progress import waiting
from conveyor.errors import EnvironmentBuildError

SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)")

# The modules the executor imports to move values, by the distribution that provides them
# (`_codecs` imports them lazily): every built environment must import those it contains.
CODEC_MODULES: dict[str, tuple[str, ...]] = {
    "numpy": ("numpy",),
    "pandas": ("pandas",),
    "pyarrow": ("pyarrow", "pyarrow.parquet"),
    "joblib": ("joblib",),
}


@dataclass(frozen=True, slots=True)
class RuntimeBound:
    """A bound a package needs at run time that its metadata does not declare.

    The resolver cannot see these, so a lock can be consistent on paper and fail on import
    (`pyarrow requires NumPy 2.0 or newer`). When `trigger` matches a pin in a lock, the lock
    is resolved again with `bound` as a constraint.
    """

    trigger: str  # a distribution and a specifier its pinned version is checked against
    bound: str  # the constraint added when the trigger matches
    why: str

    @property
    def trigger_name(self) -> str:
        return requirement_name(self.trigger)

    def explain(self, pins: dict[str, str]) -> str:
        found = pins.get(self.trigger_name, "?")
        return f"{self.bound}: the lock resolved {self.trigger_name} {found}, and {self.why}"

    def applies(self, pins: dict[str, str]) -> bool:
        from packaging.requirements import Requirement

        trigger, bound = Requirement(self.trigger), Requirement(self.bound)
        name = requirement_name(trigger.name)
        return (
            name in pins
            and requirement_name(bound.name) in pins
            and trigger.specifier.contains(pins[name], prereleases=True)
            and not bound.specifier.contains(pins[requirement_name(bound.name)], prereleases=True)
        )


RUNTIME_BOUNDS = (
    # apache/arrow#50769: pyarrow 26 requires NumPy 2 (and so pandas >= 2.2.2) but does not say so
    RuntimeBound("numpy<2", "pyarrow<26", "pyarrow 26 and later need NumPy 2 at run time"),
)


def lock_pins(text: str) -> dict[str, str]:
    """`{normalized name: version}` of the `name==version` lines of a lock."""
    pins = {}
    for line in text.splitlines():
        match = _PIN.match(line.strip())
        if match:
            pins[requirement_name(match.group(1))] = match.group(2)
    return pins


def codec_imports(pins: Iterable[str]) -> tuple[str, ...]:
    """The codec modules an environment with these pins must be able to import."""
    names = lock_pins("\n".join(pins))
    return tuple(m for dist, modules in CODEC_MODULES.items() if dist in names for m in modules)


# Run by an environment's own interpreter (`python -I -c IMPORT_CHECK module ...`) once it is
# built: prints what failed to import as JSON and exits 3, so a broken pin set fails the plan.
IMPORT_CHECK = """\
import importlib, json, sys
failed = {}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except BaseException as exc:
        failed[name] = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
if failed:
    print("conveyor import check failed: " + json.dumps(failed), file=sys.stderr)
    sys.exit(3)
"""
IMPORT_CHECK_MARKER = "conveyor import check failed: "


def import_check_error(
    output: str, pins: Iterable[str], who: str, lock_path: str | Path | None = None
) -> EnvironmentBuildError:
    """The error for an environment that installed but cannot import a codec's library."""
    import json

    line = next(
        (part for part in output.splitlines() if IMPORT_CHECK_MARKER in part),
        IMPORT_CHECK_MARKER + "{}",
    )
    try:
        failed = json.loads(line.split(IMPORT_CHECK_MARKER, 1)[1])
    except json.JSONDecodeError:
        failed = {}
    versions = lock_pins("\n".join(pins))
    installed = ", ".join(f"{d} {versions[d]}" for d in CODEC_MODULES if d in versions)
    problems = "; ".join(f"import {m}: {e}" for m, e in failed.items()) or output.strip()[-500:]
    refresh = (
        f" If the lock {lock_path} was resolved by an older conveyor, refresh it with "
        f"`conveyor envs lock`."
        if lock_path
        else ""
    )
    return EnvironmentBuildError(
        f"the environment for {who or 'a step'} installed but cannot import what the executor "
        f"needs to move its values: {problems} (installed: {installed or 'none of them'}). "
        f"Pin versions that work together in @component(packages=[...]).{refresh}"
    )


def pinned_text(text: str) -> str:
    """A lock file's pins alone, without comments: what an environment key hashes."""
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return "\n".join(line for line in lines if line) + "\n"


@dataclass(frozen=True, slots=True)
class Lock:
    """The pinned, fully resolved requirements of an EnvironmentSpec."""

    spec: EnvironmentSpec
    path: Path
    text: str

    @property
    def sha256(self) -> str:
        return sha256_text(self.pinned_text)

    @property
    def pinned_text(self) -> str:
        """The pins alone, without comments (what the key hashes)."""
        return pinned_text(self.text)

    @property
    def pins(self) -> tuple[str, ...]:
        return tuple(self.pinned_text.split())


def find_uv() -> str:
    """Path of the uv binary (the `uv` wheel conveyor depends on, else PATH)."""
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if found:
            return found
    raise EnvironmentBuildError("uv is not installed; run `pip install uv` (conveyor needs it)")


def uv_environment() -> dict[str, str]:
    """The variables uv runs with: TLS against the system CA bundle, which proxies need."""
    env = dict(os.environ)
    if "SSL_CERT_FILE" not in env and SYSTEM_CA_BUNDLE.is_file():
        env["SSL_CERT_FILE"] = str(SYSTEM_CA_BUNDLE)
    return env


def run_uv(
    command: list[str], on_line: Callable[[str], None], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run uv, handing each line it prints to stderr (what it resolves, downloads, installs)
    to `on_line` as it comes; stdout and stderr are also returned whole."""
    proc = subprocess.Popen(
        command, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=uv_environment(),
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    stdout, out = proc.stdout, []
    reader = threading.Thread(target=lambda: out.append(stdout.read()), daemon=True)
    reader.start()
    if stdin is not None:
        assert proc.stdin is not None
        proc.stdin.write(stdin)
        proc.stdin.close()
    err = []
    for line in proc.stderr:
        err.append(line)
        on_line(line.rstrip())
    returncode = proc.wait()
    reader.join()
    return subprocess.CompletedProcess(command, returncode, "".join(out), "".join(err))


def installer_error(
    action: str, requirements: Iterable[str], output: str, who: str = ""
) -> EnvironmentBuildError:
    """An error naming the requirements the installer complained about, with its output tail."""
    requirements = list(requirements)
    lowered = output.lower()
    blamed = [r for r in requirements if requirement_name(r) in lowered] or requirements
    tail = "\n".join(output.strip().splitlines()[-25:])
    where = f" for {who}" if who else ""
    return EnvironmentBuildError(
        f"could not {action}{where}: the installer rejected {', '.join(blamed) or '(nothing)'}.\n"
        f"Fix the requirement (a typo, a version that does not exist, conflicting pins) in "
        f"@component(packages=[...]).\n--- installer output ---\n{tail}"
    )


class Locker:
    """Resolves requirement sets into lock files with `uv pip compile`, once each."""

    def __init__(self, lock_dir: str | Path) -> None:
        self.lock_dir = Path(lock_dir)

    def path_for(self, spec: EnvironmentSpec) -> Path:
        return self.lock_dir / f"{spec.lock_id}.txt"

    def existing(self, spec: EnvironmentSpec) -> Lock | None:
        path = self.path_for(spec)
        try:
            return Lock(spec, path, path.read_text())
        except FileNotFoundError:
            return None

    def lock(self, spec: EnvironmentSpec, *, refresh: bool = False, who: str = "") -> Lock:
        """Return the lock for `spec`, resolving it first if there is none (or `refresh`)."""
        # Lock files are written atomically, so an existing one is read without the file lock
        # (and without importing filelock): the common case, every run of a project.
        if not refresh and (found := self.existing(spec)) is not None:
            return found
        from filelock import FileLock

        self.lock_dir.mkdir(parents=True, exist_ok=True)
        path = self.path_for(spec)
        with FileLock(str(path) + ".lock", timeout=600):
            if not refresh and (found := self.existing(spec)) is not None:
                return found
            pinned = self._compile(spec, who)
            first = lock_pins(pinned)
            bounds = [b for b in RUNTIME_BOUNDS if b.applies(first)]
            if bounds:
                try:
                    pinned = self._compile(spec, who, tuple(b.bound for b in bounds))
                except EnvironmentBuildError as exc:
                    why = "; ".join(b.explain(first) for b in bounds)
                    raise EnvironmentBuildError(
                        f"{exc}\n--- why conveyor added a bound ---\n{why}. These pins cannot "
                        f"work together at run time, though their metadata allows it."
                    ) from exc
            header = (
                f"# conveyor lock; python {spec.python}\n"
                f"# requirements: {spec.describe()}\n"
                + "".join(f"# constrained: {b.explain(first)}\n" for b in bounds)
                + "# resolved by `uv pip compile`; refresh with `conveyor envs lock`\n"
            )
            write_text_atomic(path, header + pinned)
            return Lock(spec, path, header + pinned)

    def _compile(self, spec: EnvironmentSpec, who: str, constraints: tuple[str, ...] = ()) -> str:
        if not spec.requirements:
            return ""
        import tempfile

        with tempfile.NamedTemporaryFile("w", suffix=".txt", prefix="conveyor-constraints-") as c:
            c.write("\n".join(constraints) + "\n")
            c.flush()
            cmd = [
                find_uv(), "pip", "compile", "-", "--no-header",
                "--python-version", spec.python, *(["--constraint", c.name] if constraints else []),
            ]  # fmt: skip
            with waiting(f"locking {spec.describe()} for {who or 'a step'}") as detail:
                proc = run_uv(cmd, detail, stdin="\n".join(spec.requirements) + "\n")
        if proc.returncode != 0:
            blamed = (*spec.requirements, *constraints)
            raise installer_error("resolve requirements", blamed, proc.stderr, who)
        return proc.stdout
