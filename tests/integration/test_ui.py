"""The web UI: conveyor's managed Prefect server, checked in a real headless Chromium."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from conveyor.backends.prefect_server import managed_server, start_server, stop_server
from tests.integration.browser_support import chromium
from tests.integration.prefect_support import free_port

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

DOCS = Path(__file__).resolve().parents[2] / "docs"

STEPS = """
from conveyor import Metrics, component

@component
def extract(n: int) -> list:
    return list(range(n))

@component
def transform(values: list) -> list:
    return [v * v for v in values]

@component
def summarize(values: list) -> Metrics:
    return Metrics(total=sum(values), count=len(values))
"""

FLOWS = """
from conveyor import pipeline
from steps.ui import extract, summarize, transform

@pipeline
def ui_demo(n: int = 10):
    values = extract(n)
    return summarize(transform(values)), summarize.with_options(name="raw_summary")(values)
"""


def _flow_runs(api: str, flow: str) -> list[dict]:
    """Flow runs of a flow, read over plain HTTP (a Prefect client in this process is bound to
    the session's test server)."""
    request = urllib.request.Request(
        f"{api}/flow_runs/filter",
        data=json.dumps({"flows": {"name": {"any_": [flow]}}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_ui_shows_the_flow_run_and_its_task_runs(project, tmp_path):
    project.write("steps/ui.py", STEPS)
    project.write("flows/ui.py", FLOWS)
    server = start_server(project.settings, port=free_port())
    try:
        assert managed_server(project.settings)["url"] == server["url"]
        # `conveyor ui` is up, so a plain `conveyor run` (engine auto) reports to it
        env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
        proc = subprocess.run(
            [sys.executable, "-m", "conveyor.cli", "run", "ui_demo", "--runner", "inprocess"],
            cwd=project.root, env=env, capture_output=True, text=True, timeout=300,
            check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        (flow_run,) = _flow_runs(server["url"], "ui_demo")
        assert flow_run["state"]["type"] == "COMPLETED"
        page = f"{server['ui']}/runs/flow-run/{flow_run['id']}"
        profile = f"--user-data-dir={tmp_path / 'chromium-profile'}"
        dom = chromium(profile, "--dump-dom", page).stdout
        for text in ("ui_demo", "extract", "transform", "summarize", "raw_summary", "Completed"):
            assert text in dom, f"{text!r} not on the flow run page"
        DOCS.mkdir(exist_ok=True)
        shot = DOCS / "ui-flow-run.png"
        chromium(profile, f"--screenshot={shot}", page)
        assert shot.stat().st_size > 20_000
    finally:
        stop_server(project.settings)
    assert managed_server(project.settings) is None
