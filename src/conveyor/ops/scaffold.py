"""`conveyor init`: a new project from the template in `project_template/`.

Template files end in `.tmpl` (so no tool mistakes them for conveyor's own code); `{{name}}` and
`{{version}}` are replaced, `gitignore` becomes `.gitignore`. Nothing is overwritten: an
existing file is an error naming it, before any file is written.
"""

from __future__ import annotations

import keyword
import re
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from conveyor.errors import ConveyorError
from conveyor.version import __version__

TEMPLATE = "project_template"
SUFFIX = ".tmpl"
RENAMED = {"gitignore": ".gitignore"}


def _template_files(folder: Traversable, prefix: str = "") -> list[tuple[str, str]]:
    found = []
    for item in sorted(folder.iterdir(), key=lambda t: t.name):
        if item.is_dir():
            found += _template_files(item, f"{prefix}{item.name}/")
        elif item.name.endswith(SUFFIX):
            name = item.name.removesuffix(SUFFIX)
            found.append((prefix + RENAMED.get(name, name), item.read_text()))
    return found


def project_name(root: Path) -> str:
    """The project's name from its folder, as a Python-friendly slug."""
    name = re.sub(r"[^0-9a-zA-Z]+", "_", root.name).strip("_").lower()
    if not name or name[0].isdigit() or keyword.iskeyword(name):
        name = f"project_{name}".rstrip("_")
    return name


def scaffold(root: Path) -> list[Path]:
    """Write a working project into `root` (created if needed); the files written, in order."""
    root = root.resolve()
    rendered = [
        (root / relative, text.replace("{{name}}", project_name(root)).replace(
            "{{version}}", __version__))
        for relative, text in _template_files(files("conveyor.ops").joinpath(TEMPLATE))
    ]  # fmt: skip
    existing = [path for path, _ in rendered if path.exists()]
    if existing:
        names = ", ".join(str(p.relative_to(root)) for p in existing)
        raise ConveyorError(
            f"{root}: already holds {names}; conveyor init writes a new project and never "
            f"overwrites files: pick an empty folder (conveyor init PATH) or move them"
        )
    for path, text in rendered:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return [path for path, _ in rendered]
