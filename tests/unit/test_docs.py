"""Every code block in docs/ runs, and the CLI reference is the app's own `--help`.

A page is one session in a fresh folder, its blocks run top to bottom:
- a `python` or `toml` block whose first line is a path comment (`# flows/prices.py`) is
  written there; any other `python` block runs as a script in the session's folder;
- a `bash` block of `conveyor` commands (and `cd`) runs them through the Typer app in this
  process; any other runs in bash (`set -euo pipefail`), with this checkout's `conveyor`,
  `python` and `pytest` first on PATH; a `cd` carries over to the next block;
- `toml` blocks must parse; `text` and `mermaid` blocks are output and diagrams, not code;
- a block marked `{ .LANG .illustrative }` (needs a cluster, a registry, an object store,
  Docker, a PostgreSQL server, a server that runs until stopped) is shown and not run. There
  are few, and this file counts them.
`--8<-- "FILE:SECTION"` lines are README sections, expanded as MkDocs' snippets does.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
FENCE = re.compile(
    r"^(?P<indent> *)``` *"
    r"(?:\{ *\.(?P<brace>[\w-]+)(?P<classes>(?: +\.[\w-]+)*) *\}|(?P<lang>[\w-]*))"
    r"[^\n]*\n(?P<body>.*?)^(?P=indent)```\s*$",
    re.MULTILINE | re.DOTALL,
)
SNIPPET = re.compile(r'^ *--8<-- "(?P<file>[^":]+)(?::(?P<section>[\w-]+))?" *$', re.MULTILINE)
NOT_CODE = {"text", "mermaid"}
RUN = {"python", "bash", "toml"}
# the blocks shown, not run (see above); a new one needs a reason the reader would accept
MAX_ILLUSTRATIVE = 17  # 15 + the work-pool and compose-scaling blocks (a remote API; compose)


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    language: str
    illustrative: bool
    body: str


def expand_snippets(text: str) -> str:
    """Replace `--8<-- "FILE:SECTION"` lines with that section of FILE (pymdownx.snippets)."""

    def section(match: re.Match[str]) -> str:
        source = (ROOT / match["file"]).read_text()
        name = match["section"]
        if name is None:
            return source
        found = re.search(
            rf"^[^\n]*--8<-- \[start:{name}\][^\n]*\n(.*?)^[^\n]*--8<-- \[end:{name}\]",
            source,
            re.M | re.S,
        )
        assert found, f"{match['file']} has no section {name!r} (<!-- --8<-- [start:{name}] -->)"
        return found.group(1).rstrip("\n")

    return SNIPPET.sub(section, text)


def blocks(page: Path) -> list[Block]:
    text = page.read_text()
    found = []
    for match in FENCE.finditer(text):
        classes = (match["classes"] or "").split()
        language = match["brace"] or match["lang"] or ""
        body = re.sub(rf"^{match['indent']}", "", match["body"], flags=re.M)
        found.append(
            Block(page.name, text.count("\n", 0, match.start()) + 1, language,
                  ".illustrative" in classes, expand_snippets(body))
        )  # fmt: skip
    return found


PAGES = sorted(p for p in DOCS.glob("*.md"))


def test_every_block_has_a_known_language_and_few_are_only_shown():
    every = [b for page in PAGES for b in blocks(page)]
    assert len(every) > 20, "the fence pattern found too few blocks"
    unknown = [f"{b.page}:{b.line} ```{b.language}" for b in every
               if b.language not in RUN | NOT_CODE]  # fmt: skip
    assert not unknown, f"blocks in a language this test cannot run: {unknown}"
    shown = [f"{b.page}:{b.line}" for b in every if b.illustrative]
    assert len(shown) <= MAX_ILLUSTRATIVE, f"too many blocks marked illustrative: {shown}"


def _environment(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CONVEYOR_", "PREFECT_", "PYTEST_"))}  # fmt: skip
    # this checkout's conveyor, python and pytest; environments stay in the shared cache
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["HOME"] = os.environ.get("HOME", str(home))
    env["COLUMNS"] = "120"
    return env


# Commands run in this process through the Typer app (as tests/unit/test_readme.py does), which
# saves a Python start-up and conveyor's imports per line; the others (prefect's, pytest) run in
# a shell. Steps still run in their own environments either way.
IN_PROCESS = {"init", "run", "runs", "dag", "plan", "backfill", "models", "envs", "db",
              "artifacts"}  # fmt: skip


def cli_commands(body: str) -> list[list[str]] | None:
    """The block as `conveyor ...` and `cd DIR` commands, or None if it holds anything else."""
    commands: list[list[str]] = []
    for line in body.splitlines():
        words = shlex.split(line, comments=True)
        while words:
            part = words[: words.index("&&")] if "&&" in words else words
            words = words[len(part) + 1 :]
            simple_cd = part[0] == "cd" and len(part) == 2
            if not simple_cd and not (part[0] == "conveyor" and part[1:2] and
                                      part[1] in IN_PROCESS):  # fmt: skip
                return None
            commands.append(part)
    return commands


def _fresh_imports(folder: Path) -> None:
    """Forget the session's project modules, as a new `conveyor` process would not have them."""
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None) or ""
        if file.startswith(str(folder)) or name.split(".")[0] in ("flows", "components"):
            del sys.modules[name]
    sys.path[:] = [p for p in sys.path if not p.startswith(str(folder))]


def run_cli(commands: list[list[str]], cwd: Path, folder: Path, where: str) -> Path:
    """Run `conveyor` commands in this process from `cwd`; returns the directory `cd` left."""
    from typer.testing import CliRunner

    from conveyor.cli import _register, app

    _register()
    for command in commands:
        if command[0] == "cd":
            cwd = (cwd / command[1]).resolve()
            continue
        os.chdir(cwd)
        _fresh_imports(folder)
        result = CliRunner().invoke(app, command[1:], terminal_width=120)
        assert result.exit_code == 0, f"{where}: {shlex.join(command)} failed:\n{result.output}"
    return cwd


def run_page(page: Path, folder: Path) -> None:
    """Run the page's blocks in order, as one session starting in `folder`."""
    cwd = folder
    env = _environment(folder)
    for block in blocks(page):
        where = f"{block.page}:{block.line}"
        if block.illustrative or block.language in NOT_CODE:
            continue
        target = re.fullmatch(r"# ([\w./-]+\.(?:py|toml))", block.body.split("\n", 1)[0].strip())
        if block.language == "toml":
            tomllib.loads(block.body)
        if target:  # a file of the project: written where the comment says
            path = cwd / target.group(1)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(block.body)
            continue
        if block.language == "toml":
            continue
        if block.language == "bash" and (commands := cli_commands(block.body)) is not None:
            cwd = run_cli(commands, cwd, folder, where)
            continue
        if block.language == "python":
            script = folder / f"block_{block.line}.py"
            script.write_text(block.body)
            command = [sys.executable, str(script)]
        else:
            marker = folder / ".cwd"
            script = f"set -euo pipefail\n{block.body}\npwd > {marker}\n"
            command = ["bash", "-c", script]
        proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=600, check=False)  # fmt: skip
        assert proc.returncode == 0, f"{where} failed:\n{block.body}\n{proc.stdout}\n{proc.stderr}"
        if block.language == "bash":
            cwd = Path((folder / ".cwd").read_text().strip())


def _runnable(page: Path) -> bool:
    return any(not b.illustrative and b.language in RUN for b in blocks(page))


# the pages run `conveyor` as a user does: real venvs (built once in the shared cache)
@pytest.mark.venv
@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in PAGES if _runnable(p)], ids=lambda p: p.name)
def test_the_code_blocks_of_a_page_run(page, tmp_path, monkeypatch):
    for key in [k for k in os.environ if k.startswith(("CONVEYOR_", "PREFECT_"))]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # restored afterwards, like sys.path and sys.modules below
    saved_path, saved_modules = list(sys.path), set(sys.modules)
    try:
        run_page(page, tmp_path)
    finally:
        _fresh_imports(tmp_path)
        sys.path[:] = saved_path
        for name in set(sys.modules) - saved_modules:
            if name.split(".")[0] in ("flows", "components"):
                del sys.modules[name]


def _reference():
    sys.path.insert(0, str(DOCS / "hooks"))
    try:
        import cli_reference
    finally:
        sys.path.remove(str(DOCS / "hooks"))
    return cli_reference


def test_the_cli_reference_is_every_commands_help():
    from typer.testing import CliRunner

    from conveyor.cli import app

    reference = _reference()
    page = reference.render()
    names = [name for name, _, _ in reference.commands()]
    assert {"conveyor run", "conveyor backfill", "conveyor runs show", "conveyor db tables"} <= set(
        names
    )
    for name, command, ctx in reference.commands():
        assert f"`{name}`" in page
        width = reference.WIDTH
        shown = CliRunner().invoke(app, [*name.split()[1:], "--help"], terminal_width=width,
                                   env={"COLUMNS": str(width)})  # fmt: skip
        assert shown.exit_code == 0, shown.output
        assert shown.output.rstrip() == reference.help_text(command, ctx), name
