"""Code fingerprints: a hash of a function plus the project-local code it references.

The fingerprint covers the function's source (normalized through the AST, so comments,
formatting, decorators and docstrings do not count) and, transitively, every project-local
function, class method and simple constant it refers to: by a global name, a module attribute,
or an import inside its body (`from components.helpers import Caster` in the function, as the
README recommends for heavy imports, is followed through the helper module's source without
importing it). Code outside the project root (the standard library, site-packages) is
identified by its package version through the environment key instead. Editing one component
never changes the fingerprint of another in the same file.

The parts are named (`components/helpers.py: Caster.transform`), so a changed fingerprint says
what changed. Parsing is serialized: CPython 3.11's parser is not safe to run from several
threads at once (`SystemError: AST constructor recursion depth mismatch`).
"""

from __future__ import annotations

import ast
import inspect
import sys
import textwrap
import threading
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from conveyor._runtime.hashing import sha256_json, sha256_text
from conveyor._runtime.tables import Table

_CONSTANT_TYPES = (int, float, str, bool, bytes, type(None))
PARSE_LOCK = threading.Lock()  # one parser at a time in this process (see the docstring)
_Definition = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


def parse(source: str | bytes, filename: str = "<unknown>") -> ast.Module:
    """`ast.parse`, one thread at a time."""
    with PARSE_LOCK:
        return ast.parse(source, filename)


class Fingerprinter:
    """Computes and memoizes code fingerprints for one project root (thread-safe)."""

    def __init__(self, project_root: str | Path) -> None:
        self.root = Path(project_root).resolve()
        self._lock = threading.RLock()
        self._local_modules: dict[str, bool] = {}
        self._sources: dict[int, str] = {}
        self._parts: dict[int, dict[str, str]] = {}
        self._module_asts: dict[Path, tuple[float, ast.Module]] = {}

    def fingerprint(self, fn: Callable[..., Any]) -> str:
        """The fingerprint of `fn` and everything project-local it references."""
        return sha256_json(self.parts(fn))

    def parts(self, fn: Callable[..., Any]) -> dict[str, str]:
        """`{"<file>: <qualname>": hash of its normalized source}` for `fn`'s whole closure."""
        fn = getattr(fn, "fn", fn)
        with self._lock:
            key = id(fn)
            if key not in self._parts:
                closure: dict[str, str] = {}
                self._collect(fn, closure)
                self._parts[key] = {name: sha256_text(text) for name, text in closure.items()}
            return self._parts[key]

    # -----------------------------------------------------------------------------------------

    def is_local_module(self, module_name: str | None) -> bool:
        """Whether a module's file lies under the project root (and not in an installed tree)."""
        if not module_name:
            return False
        if module_name not in self._local_modules:
            module = sys.modules.get(module_name)
            file: str | None = getattr(module, "__file__", None)
            self._local_modules[module_name] = file is not None and self._is_local_file(Path(file))
        return self._local_modules[module_name]

    def _is_local_file(self, path: Path) -> bool:
        path = path.resolve()
        return path.is_relative_to(self.root) and not (
            {"site-packages", "dist-packages", ".venv"} & set(path.parts)
        )

    def _shown(self, module: str, qualname: str) -> str:
        file = getattr(sys.modules.get(module), "__file__", None)
        where = module
        if file and Path(file).resolve().is_relative_to(self.root):
            where = Path(file).resolve().relative_to(self.root).as_posix()
        return f"{where}: {qualname}"

    def _collect(self, obj: Any, closure: dict[str, str]) -> None:
        obj = getattr(obj, "fn", obj) if not isinstance(obj, type) else obj
        module = getattr(obj, "__module__", "?")
        name = self._shown(module, getattr(obj, "__qualname__", "?"))
        if name in closure:
            return
        if isinstance(obj, type):
            closure[name] = self._normalized_source(obj, methods=False)
            functions = _class_functions(obj)
            for function in functions:  # one part per method: a change names the method
                closure[self._shown(module, function.__qualname__)] = self._normalized_source(
                    function
                )
        else:
            closure[name] = self._normalized_source(obj)
            functions = [obj] if isinstance(obj, types.FunctionType) else []
        for function in functions:
            for ref_name, value in _references(function):
                self._visit(ref_name, value, closure)
            for module_name, names in self._body_imports(function):
                for imported in names:
                    self._follow_source(module_name, imported, closure)

    def _visit(self, ref_name: str, value: Any, closure: dict[str, str]) -> None:
        inner = getattr(value, "fn", value)
        if isinstance(inner, types.FunctionType | type):
            if self.is_local_module(getattr(inner, "__module__", None)):
                self._collect(inner, closure)
        elif isinstance(value, (*_CONSTANT_TYPES, Table)) or (
            isinstance(value, tuple | frozenset)
            and all(isinstance(v, _CONSTANT_TYPES) for v in value)
        ):  # (a declared table's repr spells out its columns, types and key)
            closure[f"const:{ref_name}"] = repr(value)

    def _normalized_source(self, obj: Any, methods: bool = True) -> str:
        key = (id(obj), methods)
        cache_key = hash(key)
        if cache_key not in self._sources:
            try:
                tree = parse(textwrap.dedent(inspect.getsource(obj)))
                self._sources[cache_key] = _normalize(tree, methods)
            except (OSError, TypeError, SyntaxError):
                code = getattr(obj, "__code__", None)
                self._sources[cache_key] = code.co_code.hex() if code else repr(obj)
        return self._sources[cache_key]

    # ------------------------------------------------------------------ imports inside bodies

    def _body_imports(self, fn: types.FunctionType) -> list[tuple[str, list[str]]]:
        """(project-local module, names used from it) for every import inside `fn`'s body."""
        try:
            tree = parse(textwrap.dedent(inspect.getsource(fn)))
        except (OSError, TypeError, SyntaxError):
            return []
        package = fn.__module__ if _is_package(fn.__module__) else fn.__module__.rpartition(".")[0]
        found: list[tuple[str, list[str]]] = []
        aliases: dict[str, str] = {}  # local alias -> module, for `alias.name` uses
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                base = _absolute(node.module or "", node.level, package)
                if self._module_file(base) is not None:
                    found.append((base, [a.name for a in node.names]))
                for alias in node.names:  # `from pkg import module`
                    if self._module_file(f"{base}.{alias.name}") is not None:
                        aliases[alias.asname or alias.name] = f"{base}.{alias.name}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if self._module_file(alias.name) is not None:
                        aliases[alias.asname or alias.name.split(".")[0]] = alias.name
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                module = aliases.get(node.value.id)
                if module is not None:
                    found.append((module, [node.attr]))
        return found

    def _module_file(self, name: str) -> Path | None:
        if not name:
            return None
        parts = name.split(".")
        for candidate in (self.root.joinpath(*parts, "__init__.py"),
                          self.root.joinpath(*parts[:-1], parts[-1] + ".py")):  # fmt: skip
            if candidate.is_file() and self._is_local_file(candidate):
                return candidate
        return None

    def _module_ast(self, path: Path) -> ast.Module:
        mtime = path.stat().st_mtime
        cached = self._module_asts.get(path)
        if cached is None or cached[0] != mtime:
            cached = (mtime, parse(path.read_bytes(), str(path)))
            self._module_asts[path] = cached
        return cached[1]

    def _follow_source(self, module: str, name: str, closure: dict[str, str]) -> None:
        """Add `module.name` (found in the module's source, not imported) and what it uses."""
        path = self._module_file(module)
        if path is None:
            return
        shown_file = path.relative_to(self.root).as_posix()
        if f"{shown_file}: {name}" in closure:
            return
        tree = self._module_ast(path)
        definitions = {n.name: n for n in tree.body if isinstance(n, _Definition)}
        node = definitions.get(name)
        if node is None:
            if self._module_file(f"{module}.{name}") is not None:  # a submodule: all of it
                sub = self._module_file(f"{module}.{name}")
                assert sub is not None
                closure[f"{sub.relative_to(self.root).as_posix()}: *"] = ast.unparse(
                    self._module_ast(sub)
                )
            return
        if isinstance(node, ast.ClassDef):
            closure[f"{shown_file}: {name}"] = _normalize(_copy_module(node), methods=False)
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    closure[f"{shown_file}: {name}.{item.name}"] = _normalize(_copy_module(item))
        else:
            closure[f"{shown_file}: {name}"] = _normalize(_copy_module(node))
        # what it uses from its own module, or imports there from the project
        used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for other in used & set(definitions):
            if other != name:
                self._follow_source(module, other, closure)
        for statement in tree.body:
            if isinstance(statement, ast.ImportFrom):
                base = _absolute(statement.module or "", statement.level, package)
                for alias in statement.names:
                    if (alias.asname or alias.name) in used:
                        self._follow_source(base, alias.name, closure)


def _absolute(module: str, level: int, package: str) -> str:
    if not level:
        return module
    parts = package.split(".") if package else []
    anchor = parts[: len(parts) - level + 1]
    return ".".join([*anchor, *([module] if module else [])])


def _is_package(module: str) -> bool:
    file = getattr(sys.modules.get(module), "__file__", "") or ""
    return file.endswith("__init__.py")


def _copy_module(node: ast.stmt) -> ast.Module:
    import copy

    return ast.Module(body=[copy.deepcopy(node)], type_ignores=[])


def _normalize(tree: ast.Module, methods: bool = True) -> str:
    """Source without decorators of the outer definition, docstrings and (for a class whose
    methods are hashed apart) method bodies."""
    first = tree.body[0] if tree.body else None
    for node in ast.walk(tree):
        if isinstance(node, _Definition):
            if node is first:
                node.decorator_list = []
            _strip_docstring(node)
    if not methods and isinstance(first, ast.ClassDef):
        first.body = [
            n for n in first.body if not isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
        ] or [ast.Pass()]
    return ast.unparse(tree)


def _strip_docstring(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
    body = node.body
    first = body[0] if body else None
    is_docstring = (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    )
    if is_docstring:
        node.body = body[1:] or [ast.Pass()]


def _class_functions(cls: type) -> list[types.FunctionType]:
    found = []
    for value in vars(cls).values():
        if isinstance(value, staticmethod | classmethod):
            value = value.__func__
        if isinstance(value, property):
            value = value.fget
        if isinstance(value, types.FunctionType):
            found.append(value)
    return found


def _code_objects(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


def _references(fn: types.FunctionType) -> Iterator[tuple[str, Any]]:
    """(name, value) of globals and module attributes the function's code mentions."""
    names: dict[str, None] = {}
    for code in _code_objects(fn.__code__):
        names.update(dict.fromkeys(code.co_names))
    namespace = fn.__globals__
    modules = [v for n in names if isinstance(v := namespace.get(n), types.ModuleType)]
    for name in names:
        if name in namespace:
            value = namespace[name]
            if not isinstance(value, types.ModuleType):
                yield name, value
        for module in modules:  # `helpers.clean(...)` mentions both `helpers` and `clean`
            if name in vars(module):
                yield f"{module.__name__}.{name}", vars(module)[name]
    if fn.__closure__:
        for var, cell in zip(fn.__code__.co_freevars, fn.__closure__, strict=False):
            try:
                yield var, cell.cell_contents
            except ValueError:
                continue
