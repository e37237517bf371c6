"""`conveyor init`: the scaffold's files, names, and that it never overwrites."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conveyor.errors import ConveyorError
from conveyor.ops.scaffold import project_name, scaffold
from conveyor.version import __version__

EXPECTED = {
    ".gitignore", "README.md", "docker-compose.yml", "pyproject.toml",
    "components/__init__.py", "components/sensors.py", "deployments/sensors.toml",
    "flows/__init__.py", "flows/sensors.py", "tests/__init__.py", "tests/test_sensors.py",
}  # fmt: skip


def test_a_new_folder_gets_every_file_of_the_template(tmp_path: Path) -> None:
    root = tmp_path / "Weather Station-2"
    written = scaffold(root)
    assert {str(p.relative_to(root)) for p in written} == EXPECTED
    compose = (root / "docker-compose.yml").read_text()
    assert f"conveyor/worker:{__version__}" in compose and "{{" not in compose
    assert "# weather_station_2 with the production parts" in compose
    assert "[tool.conveyor]" in (root / "pyproject.toml").read_text()


def test_the_scaffold_python_passes_ruff(tmp_path: Path) -> None:
    scaffold(tmp_path / "p")
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--isolated", "--select",
         "E,F,W,I,B,UP", "--line-length", "100", "."],
        cwd=tmp_path / "p", capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_an_existing_file_stops_init_before_anything_is_written(tmp_path: Path) -> None:
    root = tmp_path / "p"
    (root / "flows").mkdir(parents=True)
    (root / "flows" / "sensors.py").write_text("# mine\n")
    (root / "pyproject.toml").write_text("[project]\nname = 'mine'\n")
    with pytest.raises(ConveyorError) as info:
        scaffold(root)
    assert "already holds flows/sensors.py, pyproject.toml" in str(info.value)
    assert "never overwrites" in str(info.value)
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == [
        "flows", "flows/sensors.py", "pyproject.toml",
    ]  # fmt: skip
    assert (root / "flows" / "sensors.py").read_text() == "# mine\n"


@pytest.mark.parametrize(
    ("folder", "name"),
    [("my-project", "my_project"), ("2026 models", "project_2026_models"),
     ("class", "project_class"), ("---", "project")],
)  # fmt: skip
def test_the_project_name_is_a_python_friendly_slug(folder: str, name: str) -> None:
    assert project_name(Path("/x") / folder) == name
