"""The public API: an explicit, sorted `__all__`, every name importable, imported lazily,
documented, and enough for this repository's own flows and components."""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import conveyor

ROOT = Path(__file__).resolve().parents[2]


def test_all_is_sorted_and_complete():
    assert conveyor.__all__ == sorted(conveyor.__all__)
    for name in conveyor.__all__:
        assert getattr(conveyor, name) is not None


def test_all_the_lazy_table_and_the_docs_name_the_same_things():
    exported = set(conveyor._EXPORTS)
    assert set(conveyor.__all__) == exported | {"__version__"}
    documented = set(re.findall(r"^\| `(\w+)` \|", (ROOT / "docs/api.md").read_text(), re.M))
    assert documented == exported, (
        f"docs/api.md misses {sorted(exported - documented)}, "
        f"names what is not exported: {sorted(documented - exported)}"
    )
    for name, module in conveyor._EXPORTS.items():  # each entry names its defining module
        assert getattr(conveyor, name).__module__ == module, name


def test_import_conveyor_is_lazy():
    code = "import sys, conveyor; print(sorted(m for m in sys.modules if m.startswith('conveyor')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['conveyor', 'conveyor.version']"


def test_decorators_are_not_shadowed_by_submodules():
    import conveyor.dsl.component
    import conveyor.dsl.pipeline

    assert callable(conveyor.component) and conveyor.component.__module__.endswith("dsl.component")
    assert conveyor.pipeline.__name__ == "pipeline"
    assert conveyor.run.__name__ == "run"


def _conveyor_imports(path: Path) -> list[tuple[int, str, list[str]]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "conveyor":
            found.append((node.lineno, node.module or "", [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "conveyor":
                    found.append((node.lineno, alias.name, []))
    return found


@pytest.mark.parametrize("folder", ["flows", "components"])
def test_flows_and_components_use_only_the_public_api(folder):
    """Our own pipelines need nothing a user cannot import: no `conveyor.<subpackage>`."""
    problems = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for line, module, names in _conveyor_imports(path):
            where = f"{path.relative_to(ROOT)}:{line}"
            if module != "conveyor":
                problems.append(f"{where} imports {module}")
            problems += [f"{where} imports {n}" for n in names if n not in conveyor.__all__]
    assert problems == []


def test_builtin_host_steps_show_their_real_signatures():
    assert str(inspect.signature(conveyor.load_table)) == (
        "(table: 'str | Table', start: 'date | None' = None, end: 'date | None' = None, "
        "days: 'int | None' = None, columns: 'list[str] | None' = None) -> 'Any'"
    )
    assert list(inspect.signature(conveyor.write_table).parameters) == [
        "df", "table", "partition", "partition_col", "min_rows", "key",
    ]  # fmt: skip
    assert list(inspect.signature(conveyor.load_model).parameters) == [
        "name", "stage", "version", "as_of", "required",
    ]  # fmt: skip
    assert conveyor.register_model.__name__ == "register_model"
    assert "version number" in (conveyor.register_model.__doc__ or "")


def test_a_builtin_host_step_binds_its_arguments_as_python_would():
    with pytest.raises(TypeError, match="unexpected keyword argument 'partiton'"):
        conveyor.write_table.bind_arguments(("df", "t"), {"partiton": 1})
    bound = conveyor.write_table.bind_arguments(("df", "t"), {"partition": (1, 2)})
    assert bound == {"df": "df", "table": "t", "partition_start": 1, "partition_end": 2}


def test_hooks_take_keyword_arguments_and_tolerate_new_ones():
    calls = []

    class Counting(conveyor.RunHooks):
        def step_started(self, *, step: str, **extra: object) -> None:
            calls.append((step, sorted(extra)))

    from conveyor.engine.hooks import HookChain

    HookChain([Counting()]).step_started(
        run=None, step="s", attempt=1, reason="why", added_later=True
    )
    assert calls == [("s", ["added_later", "attempt", "reason", "run"])]
    params = inspect.signature(conveyor.RunHooks.step_finished).parameters
    assert all(p.kind in (p.KEYWORD_ONLY, p.VAR_KEYWORD) for n, p in params.items() if n != "self")
