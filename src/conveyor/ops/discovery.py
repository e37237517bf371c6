"""Finding pipelines: `@pipeline` objects in the project's flow folders, or `path.py:attr`.

Flow files are imported as modules named after their path from the project root
(`flows/features.py` -> `flows.features`), so a step process can import the same module by name.
A file that fails to import is reported by name without hiding the pipelines of the others.

Resolving one name is lazy: the flow files' source is read (not imported) for `@pipeline`
definitions and their names (`name=` when given as a literal), and only the files that define
the name are imported, so `conveyor dag features` does not pay for every other flow's imports.
A name the source does not show (a pipeline built by a call rather than a decorator, a computed
`name=`) falls back to importing every flow file, as listing pipelines always does; so does a
name found but not defined once, which keeps the ambiguity and unknown-name errors whole.
"""

from __future__ import annotations

import ast
import importlib
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from conveyor.dsl.pipeline import Pipeline
from conveyor.engine.settings import Settings
from conveyor.errors import DiscoveryError


@dataclass(slots=True)
class Discovered:
    """Pipelines found in the flow folders, and the files that failed to import."""

    pipelines: dict[str, list[tuple[Pipeline, str]]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def add(self, pipeline: Pipeline, origin: str) -> None:
        found = self.pipelines.setdefault(pipeline.name, [])
        if all(p is not pipeline for p, _ in found):
            found.append((pipeline, origin))

    def describe_errors(self) -> str:
        if not self.errors:
            return ""
        lines = [
            f"\n  {file}: {error.strip().splitlines()[-1]}" for file, error in self.errors.items()
        ]
        return "\nflow files that failed to import:" + "".join(lines)


def ensure_importable(root: Path) -> None:
    """Put the project root first on sys.path, as it is in every step process."""
    text = str(root)
    if text not in sys.path:
        sys.path.insert(0, text)


def module_name_for(path: Path, root: Path) -> str:
    """`flows/features.py` under the root -> `flows.features`."""
    try:
        relative = path.resolve().relative_to(root)
    except ValueError as exc:
        raise DiscoveryError(
            f"{path} is outside the project root {root}; steps import their components by "
            f"module name from the project root, so keep pipeline files inside it"
        ) from exc
    parts = list(relative.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def import_file(path: Path, root: Path) -> ModuleType:
    ensure_importable(root)
    return importlib.import_module(module_name_for(path, root))


def flow_files(settings: Settings) -> list[Path]:
    """The Python files of the configured flow folders, in a stable order."""
    root = settings.project_root
    files: list[Path] = []
    for folder in settings.flows:
        base = root / folder
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*.py")):
            if path.name.startswith("_") and path.name != "__init__.py":
                continue
            if any(part.startswith(".") for part in path.relative_to(root).parts):
                continue
            files.append(path)
    return files


def discover(settings: Settings, files: list[Path] | None = None) -> Discovered:
    """Import every flow file (or only `files`) and collect its pipelines."""
    root = settings.project_root
    found = Discovered()
    for path in flow_files(settings) if files is None else files:
        origin = str(path.relative_to(root))
        try:
            module = import_file(path, root)
        except Exception:
            found.errors[origin] = traceback.format_exc()
            continue
        for value in vars(module).values():
            if isinstance(value, Pipeline) and value.module == module.__name__:
                found.add(value, origin)
    return found


def declared_names(source: str) -> set[str]:
    """Names of the `@pipeline` functions a flow file's source defines (without importing it).

    `@pipeline`, `@pipeline(...)` and `@conveyor.pipeline(...)` count; `name="..."` given as a
    literal overrides the function's name. Unreadable source declares nothing.
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return set()
    names: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for decorator in node.decorator_list:
            call = decorator if isinstance(decorator, ast.Call) else None
            target = call.func if call is not None else decorator
            named = (isinstance(target, ast.Name) and target.id == "pipeline") or (
                isinstance(target, ast.Attribute) and target.attr == "pipeline"
            )
            if not named:
                continue
            name = node.name
            for keyword in call.keywords if call is not None else ():
                value = keyword.value
                if keyword.arg == "name" and isinstance(value, ast.Constant) and value.value:
                    name = str(value.value)
            names.add(name)
    return names


def defining_files(name: str, settings: Settings) -> list[Path]:
    """The flow files whose source declares a pipeline called `name` (read, not imported)."""
    matches = []
    for path in flow_files(settings):
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if "pipeline" in source and name in source and name in declared_names(source):
            matches.append(path)
    return matches


def resolve_pipeline(target: str | Pipeline, settings: Settings) -> Pipeline:
    """A pipeline by name, by `path.py:attr`, or itself."""
    if isinstance(target, Pipeline):
        return target
    if ":" in target or target.endswith(".py"):
        return _from_path(target, settings)
    candidates = defining_files(target, settings)
    if candidates:
        lazily = discover(settings, candidates).pipelines.get(target, [])
        if len(lazily) == 1:
            return lazily[0][0]
    found = discover(settings)
    matches = found.pipelines.get(target, [])
    if len(matches) == 1:
        return matches[0][0]
    if len(matches) > 1:
        where = ", ".join(origin for _, origin in matches)
        raise DiscoveryError(
            f"pipeline name {target!r} is ambiguous: defined in {where}; rename one or use "
            f"PATH.py:ATTRIBUTE"
        )
    names = sorted(found.pipelines)
    folders = ", ".join(settings.flows)
    raise DiscoveryError(
        f"no pipeline named {target!r} in {folders}/ under {settings.project_root}; "
        f"known pipelines: {', '.join(names) or '(none)'}" + found.describe_errors()
    )


def _from_path(target: str, settings: Settings) -> Pipeline:
    file, _, attr = target.partition(":")
    path = Path(file)
    if not path.is_absolute():
        path = (Path.cwd() / path).resolve()
    if not path.is_file():
        raise DiscoveryError(f"{file}: no such file")
    try:
        module = import_file(path, settings.project_root)
    except DiscoveryError:
        raise
    except Exception as exc:
        raise DiscoveryError(f"{file} failed to import: {type(exc).__name__}: {exc}") from exc
    candidates = {n: v for n, v in vars(module).items() if isinstance(v, Pipeline)}
    if attr:
        value = getattr(module, attr, None)
        if isinstance(value, Pipeline):
            return value
        raise DiscoveryError(
            f"{file} has no pipeline {attr!r}; it defines {', '.join(candidates) or '(none)'}"
        )
    if len(candidates) == 1:
        return next(iter(candidates.values()))
    raise DiscoveryError(
        f"{file} defines {len(candidates)} pipelines ({', '.join(candidates) or 'none'}); "
        f"name one with {file}:ATTRIBUTE"
    )
