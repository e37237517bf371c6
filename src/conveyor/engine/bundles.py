"""Code bundles: exactly the project code a step imports, packed and named by content.

A step on another machine (a container that does not mount the project, a Prefect worker, a
Kubernetes pod) gets its code from the artifact store: the component's module and every
project-local module it imports, at module level or inside a function, transitively, with the
`__init__.py` of their packages. Only `.py` files an import reaches: never data folders,
`.conveyor/`, `.git` or the database. The archive is deterministic (sorted, no timestamps or
owners), so the same code is the same bundle on every machine.

    <store>/bundles/<sha256>.tar     the archive
    ~/.cache/conveyor/bundles/<sha256>/   unpacked once per machine
"""

from __future__ import annotations

import ast
import hashlib
import io
import os
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from conveyor._runtime.bundles import unpack
from conveyor.engine.fingerprint import parse
from conveyor.engine.store import ArtifactStore


def bundle_key(sha256: str) -> str:
    """Where a bundle lives in the artifact store."""
    return f"bundles/{sha256}.tar"


@dataclass(frozen=True, slots=True)
class Bundle:
    """A built bundle: its hash, the files it holds (relative to the project), its bytes."""

    sha256: str
    files: tuple[str, ...]
    data: bytes


def pack(entries: Iterable[tuple[str, Path]]) -> Bundle:
    """A deterministic tar of (name in the archive, file) pairs: sorted, no times or owners."""
    ordered = sorted(entries)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, path in ordered:
            data = path.read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    data = buffer.getvalue()
    return Bundle(hashlib.sha256(data).hexdigest(), tuple(n for n, _ in ordered), data)


class Bundler:
    """Builds the bundles of one project's components; memoized by module and file state."""

    def __init__(self, project_root: str | Path) -> None:
        self.root = Path(project_root).resolve()
        self._imports: dict[Path, tuple[float, tuple[str, ...]]] = {}

    def files_for(self, module: str) -> list[Path]:
        """The project files a step whose component lives in `module` needs to import it."""
        found: dict[Path, None] = {}
        pending = [module]
        seen: set[str] = set()
        while pending:
            name = pending.pop()
            if name in seen:
                continue
            seen.add(name)
            path = self._module_file(name)
            if path is None:
                continue
            found[path] = None
            found.update(dict.fromkeys(self._package_inits(path)))
            pending.extend(self._imports_of(path, name))
        return sorted(found)

    def build(self, module: str) -> Bundle:
        """The bundle of the component module `module`."""
        files = self.files_for(module)
        relative = tuple(p.relative_to(self.root).as_posix() for p in files)
        return pack(zip(relative, files, strict=True))

    def publish(self, store: ArtifactStore, bundle: Bundle, cache: Path) -> Path:
        """Put the bundle in the store (once per store) and unpack it on this machine (once);
        returns the unpacked folder."""
        folder = cache / bundle.sha256
        staged = cache / f".{bundle.sha256}.{os.getpid()}.tar"
        staged.parent.mkdir(parents=True, exist_ok=True)
        staged.write_bytes(bundle.data)
        try:
            store.put_file(bundle_key(bundle.sha256), staged)
            return Path(unpack(staged, folder))
        finally:
            staged.unlink(missing_ok=True)

    # ------------------------------------------------------------------------------ imports

    def _module_file(self, name: str) -> Path | None:
        parts = name.split(".")
        for candidate in (self.root.joinpath(*parts, "__init__.py"),
                          self.root.joinpath(*parts[:-1], parts[-1] + ".py")):  # fmt: skip
            if candidate.is_file():
                return candidate
        return None

    def _package_inits(self, path: Path) -> list[Path]:
        inits = []
        for folder in path.relative_to(self.root).parents:
            init = self.root / folder / "__init__.py"
            if folder != Path() and init.is_file():
                inits.append(init)
        return inits

    def _imports_of(self, path: Path, module: str) -> tuple[str, ...]:
        """Every module name `path` imports anywhere in its body (candidates; resolved later)."""
        mtime = path.stat().st_mtime
        cached = self._imports.get(path)
        if cached and cached[0] == mtime:
            return cached[1]
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        names: list[str] = []
        for node in ast.walk(parse(path.read_bytes(), str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    parts = alias.name.split(".")
                    names += [".".join(parts[: i + 1]) for i in range(len(parts))]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*filter(None, anchor), *filter(None, [base])])
                if base:
                    names.append(base)
                # `from pkg import mod` may name a submodule
                names += [f"{base}.{a.name}" if base else a.name for a in node.names]
        result = tuple(dict.fromkeys(names))
        self._imports[path] = (mtime, result)
        return result
