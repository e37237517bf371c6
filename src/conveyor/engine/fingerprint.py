"""Code fingerprints: a hash of a function plus the project-local code it references.

The fingerprint covers the function's source (normalized through the AST, so comments,
formatting, decorators and docstrings do not count) and, transitively, every project-local
function, class and simple constant it refers to by a global name or a module attribute. Code
outside the project root (the standard library, site-packages) is identified by its package
version through the environment key instead. Editing one component never changes the
fingerprint of another in the same file.
"""

from __future__ import annotations

import ast
import inspect
import sys
import textwrap
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from conveyor._runtime.hashing import sha256_json

_CONSTANT_TYPES = (int, float, str, bool, bytes, type(None))


class Fingerprinter:
    """Computes and memoizes code fingerprints for one project root."""

    def __init__(self, project_root: str | Path) -> None:
        self.root = Path(project_root).resolve()
        self._local_modules: dict[str, bool] = {}
        self._sources: dict[int, str] = {}
        self._fingerprints: dict[int, str] = {}

    def fingerprint(self, fn: Callable[..., Any]) -> str:
        """The fingerprint of `fn` and everything project-local it references."""
        fn = getattr(fn, "fn", fn)
        key = id(fn)
        if key not in self._fingerprints:
            closure: dict[str, str] = {}
            self._collect(fn, closure)
            self._fingerprints[key] = sha256_json(closure)
        return self._fingerprints[key]

    # -----------------------------------------------------------------------------------------

    def is_local_module(self, module_name: str | None) -> bool:
        """Whether a module's file lies under the project root (and not in an installed tree)."""
        if not module_name:
            return False
        if module_name not in self._local_modules:
            module = sys.modules.get(module_name)
            file = getattr(module, "__file__", None)
            local = False
            if file:
                path = Path(file).resolve()
                local = path.is_relative_to(self.root) and not (
                    {"site-packages", "dist-packages", ".venv"} & set(path.parts)
                )
            self._local_modules[module_name] = local
        return self._local_modules[module_name]

    def _collect(self, obj: Any, closure: dict[str, str]) -> None:
        obj = getattr(obj, "fn", obj) if not isinstance(obj, type) else obj
        name = f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', '?')}"
        if name in closure:
            return
        closure[name] = self._normalized_source(obj)
        functions = [obj] if isinstance(obj, types.FunctionType) else _class_functions(obj)
        for function in functions:
            for ref_name, value in _references(function):
                self._visit(ref_name, value, closure)

    def _visit(self, ref_name: str, value: Any, closure: dict[str, str]) -> None:
        inner = getattr(value, "fn", value)
        if isinstance(inner, types.FunctionType | type):
            if self.is_local_module(getattr(inner, "__module__", None)):
                self._collect(inner, closure)
        elif isinstance(value, _CONSTANT_TYPES) or (
            isinstance(value, tuple | frozenset)
            and all(isinstance(v, _CONSTANT_TYPES) for v in value)
        ):
            closure[f"const:{ref_name}"] = repr(value)

    def _normalized_source(self, obj: Any) -> str:
        key = id(obj)
        if key not in self._sources:
            try:
                source = textwrap.dedent(inspect.getsource(obj))
                tree = ast.parse(source)
                for node in ast.walk(tree):
                    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                        if node is tree.body[0]:
                            node.decorator_list = []
                        _strip_docstring(node)
                self._sources[key] = ast.unparse(tree)
            except (OSError, TypeError, SyntaxError):
                code = getattr(obj, "__code__", None)
                self._sources[key] = code.co_code.hex() if code else repr(obj)
        return self._sources[key]


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
