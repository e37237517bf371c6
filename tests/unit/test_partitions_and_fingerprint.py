"""Partition calendars and code fingerprints."""

from __future__ import annotations

from datetime import date

import pytest

from conveyor.dsl.partitions import resolve_calendar
from conveyor.engine.fingerprint import Fingerprinter


def test_calendars():
    weekdays = resolve_calendar("weekdays")
    assert weekdays.dates(date(2024, 1, 5), date(2024, 1, 9)) == [
        date(2024, 1, 5), date(2024, 1, 8), date(2024, 1, 9),
    ]  # fmt: skip
    assert weekdays.shift(date(2024, 1, 8), -1) == date(2024, 1, 5)
    assert weekdays.shift(date(2024, 1, 5), 1) == date(2024, 1, 8)
    assert resolve_calendar("daily").shift(date(2024, 3, 1), -1) == date(2024, 2, 29)
    custom = resolve_calendar(lambda s, e: [date(2024, 1, 2), date(2024, 1, 10)])
    assert custom.dates(date(2024, 1, 1), date(2024, 1, 31)) == [
        date(2024, 1, 2),
        date(2024, 1, 10),
    ]
    with pytest.raises(ValueError, match="calendar 'hourly' is not known"):
        resolve_calendar("hourly")


HELPERS = """
SCALE = 3

def clean(x):
    return x * SCALE

class Model:
    def predict(self, x):
        return clean(x)
"""

STEPS = """
from conveyor import component
from steps import helpers
from steps.helpers import Model

@component
def uses_helper(x: int) -> int:
    '''Docstrings and comments do not count.'''
    return helpers.clean(x)  # a comment

@component
def uses_class(x: int) -> int:
    return Model().predict(x)

@component
def independent(x: int) -> int:
    return x + 1
"""


def test_fingerprint_follows_project_local_code_transitively(project):
    import importlib
    import sys

    project.write("steps/helpers.py", HELPERS)
    project.write("steps/ops.py", STEPS)
    sys.path.insert(0, str(project.root))
    ops = importlib.import_module("steps.ops")

    def prints():
        fp = Fingerprinter(project.root)
        return {
            n: fp.fingerprint(getattr(ops, n)) for n in ("uses_helper", "uses_class", "independent")
        }

    before = prints()
    # formatting, comments and docstrings do not change fingerprints
    project.write("steps/ops.py", STEPS.replace("# a comment", "# another").replace("count.", "c."))
    importlib.reload(ops)
    assert prints() == before
    # a constant used by a helper used by both: both change, the independent one does not
    project.write("steps/helpers.py", HELPERS.replace("SCALE = 3", "SCALE = 4"))
    importlib.reload(sys.modules["steps.helpers"])
    importlib.reload(ops)
    after = prints()
    assert after["uses_helper"] != before["uses_helper"]
    assert after["uses_class"] != before["uses_class"]
    assert after["independent"] == before["independent"]
