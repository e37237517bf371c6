"""The public API: an explicit, sorted `__all__`, every name importable, imported lazily."""

from __future__ import annotations

import subprocess
import sys

import conveyor


def test_all_is_sorted_and_complete():
    assert conveyor.__all__ == sorted(conveyor.__all__)
    for name in conveyor.__all__:
        assert getattr(conveyor, name) is not None


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
